//! The Redis URL a hub is given: its schemes, and the node lists they carry.

use redis::{ConnectionInfo, IntoConnectionInfo, RedisError};

/// The URL scheme that names a primary by the sentinels that watch it.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The URL scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Splits the credentials off a node list (a URL after its scheme): `user:password@` (or
/// `""` when there are none), ready to go in front of one node's `HOST:PORT`, and the
/// rest. Split at the last `@`, so that a password may hold one.
pub(super) fn split_credentials(list: &str) -> (String, &str) {
    match list.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), list),
    }
}

/// The seed nodes of a `redis+cluster://` URL (after the scheme): `HOST:PORT[,HOST:PORT...]`,
/// with an optional `user:password@` on the first, which applies to every node.
pub(crate) fn cluster_seeds(list: &str) -> Result<Vec<ConnectionInfo>, RedisError> {
    let (auth, list) = split_credentials(list);
    let list = list.trim_end_matches('/');
    let seeds: Vec<ConnectionInfo> = list
        .split(',')
        .map(|seed| format!("redis://{auth}{}", seed.trim()).into_connection_info())
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() || list.trim().is_empty() {
        return Err((redis::ErrorKind::InvalidClientConfig, "no seed nodes").into());
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_split_off_at_the_last_at_sign() {
        assert_eq!(
            split_credentials("user:p@ss@h1:1,h2:2"),
            ("user:p@ss@".to_owned(), "h1:1,h2:2")
        );
        assert_eq!(split_credentials("h1:1,h2:2"), (String::new(), "h1:1,h2:2"));
        let seeds = cluster_seeds(":secret@h1:1, h2:2/").unwrap();
        assert_eq!(seeds.len(), 2);
        assert!(
            seeds
                .iter()
                .all(|seed| seed.redis_settings().password() == Some("secret"))
        );
        assert!(cluster_seeds("user:pass@").is_err());
    }
}
