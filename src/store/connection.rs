//! The connections the store's calls go through: one Redis, or a Redis Cluster link that
//! is replaced when it stops answering; and the seed list of a `redis+cluster://` URL.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use std::sync::Arc;

/// What every call goes through: a connection to one Redis, or a link to a cluster.
#[derive(Clone)]
pub(super) enum Backend {
    Single(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

/// A cluster connection (which follows redirects and failovers itself), replaced by a
/// fresh one if it stops answering altogether: after a failover under load the client's
/// slot refresh can stall, and a new connection (from the seed nodes) recovers at once.
pub(super) struct ClusterLink {
    pub(super) client: ClusterClient,
    pub(super) config: ClusterConfig,
    /// The connection, and how many times it was replaced.
    pub(super) current: std::sync::Mutex<(u64, ClusterConnection)>,
}

impl ClusterLink {
    pub(super) fn current(&self) -> (u64, ClusterConnection) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// Replaces connection `generation` (if no other call replaced it already).
    pub(super) fn renew(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 == generation {
            tracing::warn!("the Redis Cluster connection stopped answering; opening a new one");
            *current = (
                generation + 1,
                self.client
                    .get_pending_async_connection_with_config(self.config.clone()),
            );
        }
    }
}

/// The connection one call goes through.
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The seed nodes of a `redis+cluster://` URL (after the scheme): `HOST:PORT[,HOST:PORT...]`,
/// with an optional `user:password@` on the first, which applies to every node.
pub(crate) fn cluster_seeds(list: &str) -> Result<Vec<ConnectionInfo>, RedisError> {
    let (auth, list) = match list.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), list),
    };
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
