//! The Redis URL a hub is given, read once: one Redis, the primary a set of sentinels
//! watch, or a Redis Cluster by its seed nodes.

use redis::cluster::ClusterClient;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError};

/// The URL scheme that names a primary by the sentinels that watch it.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The URL scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The Redis a URL names.
#[derive(Debug, Clone)]
pub(crate) enum RedisTarget {
    /// One Redis (`redis://`, `unix://`).
    Single(ConnectionInfo),
    /// The primary that these sentinels watch (`redis+sentinel://`).
    Sentinel {
        /// The sentinels, in the order the URL lists them, reached without credentials.
        sentinels: Vec<ConnectionInfo>,
        /// The name the sentinels know the primary by.
        master: String,
        /// How to connect to a data node once its address is known (credentials,
        /// protocol); the first sentinel's address stands in until one is named.
        data_node: ConnectionInfo,
    },
    /// A Redis Cluster, reached through its seed nodes (`redis+cluster://`).
    Cluster { seeds: Vec<ConnectionInfo> },
}

impl RedisTarget {
    /// Reads `url`. The error says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, RedisError> {
        if let Some(seeds) = url.strip_prefix(CLUSTER_SCHEME) {
            let seeds = cluster_seeds(seeds)?;
            // The cluster client's own checks of its seeds (one database, one protocol).
            ClusterClient::new(seeds.clone())?;
            Ok(Self::Cluster { seeds })
        } else if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
            parse_sentinels(rest)
        } else {
            Ok(Self::Single(url.into_connection_info()?))
        }
    }

    /// Whether `url` names a Redis Cluster, by its scheme alone (the rest is not read).
    pub(crate) fn names_a_cluster(url: &str) -> bool {
        url.starts_with(CLUSTER_SCHEME)
    }
}

/// Splits the credentials off a node list (a URL after its scheme): `user:password@` (or
/// `""` when there are none), ready to go in front of one node's `HOST:PORT`, and the
/// rest. Split at the last `@`, so that a password may hold one.
fn split_credentials(list: &str) -> (String, &str) {
    match list.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), list),
    }
}

/// The seed nodes of a `redis+cluster://` URL (after the scheme): `HOST:PORT[,HOST:PORT...]`,
/// with an optional `user:password@` on the first, which applies to every node.
fn cluster_seeds(list: &str) -> Result<Vec<ConnectionInfo>, RedisError> {
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

/// The sentinels of a `redis+sentinel://` URL (after the scheme):
/// `[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER_NAME`. Credentials apply to the primary
/// (and replicas), not to the sentinels.
fn parse_sentinels(rest: &str) -> Result<RedisTarget, RedisError> {
    let invalid = |what: &str| -> RedisError {
        (
            redis::ErrorKind::InvalidClientConfig,
            "invalid sentinel URL",
            what.to_owned(),
        )
            .into()
    };
    let (auth, rest) = split_credentials(rest);
    let (list, master) = rest
        .split_once('/')
        .ok_or_else(|| invalid("no master name: expected HOST:PORT[,HOST:PORT...]/NAME"))?;
    let master = master.trim_end_matches('/');
    if master.is_empty() || master.contains(['/', '?', '#']) {
        return Err(invalid(
            "the master name must follow the sentinel list: /NAME",
        ));
    }
    let sentinels: Vec<ConnectionInfo> = list
        .split(',')
        .filter(|node| !node.trim().is_empty())
        .map(|node| format!("redis://{}", node.trim()).into_connection_info())
        .collect::<Result<_, _>>()?;
    if sentinels.is_empty() {
        return Err(invalid("no sentinels listed"));
    }
    let data_node = format!(
        "redis://{auth}{}",
        list.split(',').next().unwrap_or_default()
    )
    .into_connection_info()?;
    Ok(RedisTarget::Sentinel {
        sentinels,
        master: master.to_owned(),
        data_node,
    })
}

#[cfg(test)]
mod tests {
    use redis::ConnectionAddr;

    use super::*;

    fn tcp(host: &str, port: u16) -> ConnectionAddr {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }

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

    #[test]
    fn each_scheme_names_its_kind_of_redis() {
        let Ok(RedisTarget::Single(node)) = RedisTarget::parse("redis://10.0.0.1:6380/2") else {
            panic!("redis:// names one Redis");
        };
        assert_eq!(node.addr(), &tcp("10.0.0.1", 6380));
        assert_eq!(node.redis_settings().db(), 2);
        assert!(matches!(
            RedisTarget::parse("unix:///tmp/redis.sock"),
            Ok(RedisTarget::Single(_))
        ));
        let Ok(RedisTarget::Cluster { seeds }) =
            RedisTarget::parse("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
        else {
            panic!("redis+cluster:// names a cluster");
        };
        let seeds: Vec<_> = seeds.iter().map(|s| s.addr().clone()).collect();
        assert_eq!(seeds, [tcp("10.0.0.1", 7000), tcp("10.0.0.2", 7001)]);
        assert!(matches!(
            RedisTarget::parse("redis+sentinel://10.0.0.1:26379/quorum"),
            Ok(RedisTarget::Sentinel { .. })
        ));
        assert!(RedisTarget::names_a_cluster("redis+cluster://h:1"));
        assert!(!RedisTarget::names_a_cluster("redis+sentinel://h:1/quorum"));
        assert!(!RedisTarget::names_a_cluster("redis://h:1"));
    }

    #[test]
    fn a_url_that_names_no_redis_is_refused_with_the_reason() {
        let reason = |url: &str| RedisTarget::parse(url).unwrap_err().to_string();
        assert!(reason("http://h:1").contains("Redis URL did not parse"));
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        // Seeds the cluster client would refuse are refused with the URL.
        assert!(reason("redis+cluster://h1:1,h2:2/2").contains("different database"));
        assert!(reason("redis+cluster://h1:1?protocol=resp3,h2:2").contains("different protocol"));
        assert!(reason("redis+sentinel://h:1").contains("no master name"));
    }

    #[test]
    fn a_url_names_its_sentinels_the_master_and_the_data_nodes_credentials() {
        let Ok(RedisTarget::Sentinel {
            sentinels,
            master,
            data_node,
        }) =
            RedisTarget::parse("redis+sentinel://user:p@ss@10.0.0.1:26379, 10.0.0.2:26380/quorum/")
        else {
            panic!("a valid sentinel URL");
        };
        let addrs: Vec<_> = sentinels.iter().map(|n| n.addr().clone()).collect();
        assert_eq!(addrs, [tcp("10.0.0.1", 26379), tcp("10.0.0.2", 26380)]);
        assert_eq!(master, "quorum");
        // The credentials are the data nodes', not the sentinels'.
        let data = data_node.redis_settings();
        assert_eq!(data.username(), Some("user"));
        assert_eq!(data.password(), Some("p@ss"));
        assert!(
            sentinels
                .iter()
                .all(|n| n.redis_settings().password().is_none())
        );
    }

    #[test]
    fn a_sentinel_url_without_a_master_name_or_sentinels_is_refused() {
        for url in [
            "10.0.0.1:26379",
            "10.0.0.1:26379/",
            "10.0.0.1:26379/quorum/extra",
            "10.0.0.1:26379/quorum?db=1",
            "/quorum",
            " , /quorum",
            "user:pass@/quorum",
        ] {
            let err = parse_sentinels(url).err();
            assert!(err.is_some(), "{url:?} was accepted");
        }
        let err = parse_sentinels("10.0.0.1:26379").err().unwrap();
        assert!(err.to_string().contains("no master name"), "{err}");
    }
}
