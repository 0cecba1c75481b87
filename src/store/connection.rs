//! The connections the store's calls go through: one Redis, a primary named by sentinels,
//! or a Redis Cluster link that is replaced when it stops answering; and the pool that
//! votes waiting for replicas use.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use super::sentinel::{SentinelConn, Sentinels, follow};
use super::target::RedisTarget;
use crate::error::Error;
use crate::sync::lock;

/// Longest the hub waits for one Redis reply before the call fails.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than its caller's own timeout the store lets one call take, so that
/// the caller's timeout decides.
pub(super) const CALL_MARGIN: Duration = Duration::from_secs(1);
/// Longest one attempt to (re)connect to Redis may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts.
const REDIS_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Connection attempts a call makes before it fails. Kept low so that calls fail fast
/// while Redis is down; the next call tries again.
const REDIS_CONNECT_ATTEMPTS: usize = 1;
/// On a cluster: how often one call is retried (after a redirect, a lost node or a
/// failover), and the pauses between tries; the whole call stays within its timeout.
const CLUSTER_RETRIES: u32 = 12;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 50;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 1000;
/// On a cluster: longest one node may take to answer one try of a call. Short, so that a
/// node lost in a failover holds up neither the call (it is retried elsewhere) nor the
/// client's refresh of the slot map; the call as a whole still has the caller's timeout.
const CLUSTER_NODE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections that votes waiting for replicas (`--wait-replicas`) take turns on; the
/// hub's publisher of waiting events has one more of its own.
const ACKED_CONNECTIONS: usize = 8;

/// How votes wait for replicas.
pub(super) struct Acked {
    /// Replicas a write must reach before it is acknowledged (0: no wait).
    pub(super) replicas: u32,
    /// `WAIT`'s timeout.
    pub(super) timeout_ms: u64,
    pool: Vec<Backend>,
    next: AtomicUsize,
    /// The publisher's own: its once-a-second `WAIT` never holds up a vote's.
    publisher: Option<Backend>,
}

impl Acked {
    /// Votes waiting for `replicas` (none: 0) for at most half of `longest_call`, through
    /// `pool`. They go through connections of their own: `WAIT` holds up every later
    /// command of its connection, and must not hold up the hub's other calls.
    fn new(mut pool: Vec<Backend>, longest_call: Duration, replicas: u32) -> Self {
        let publisher = pool.pop();
        Self {
            replicas,
            timeout_ms: (longest_call / 2).as_millis().max(1) as u64,
            pool,
            next: AtomicUsize::new(0),
            publisher,
        }
    }

    /// The publisher's connection, or `None` when writes do not wait for replicas.
    pub(super) fn publisher_backend(&self) -> Option<&Backend> {
        self.publisher.as_ref()
    }

    /// The connection the next acknowledged write takes, or `None` when writes do not
    /// wait for replicas.
    pub(super) fn next_backend(&self) -> Option<&Backend> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        (!self.pool.is_empty()).then(|| &self.pool[turn % self.pool.len()])
    }
}

/// What every call goes through: a connection to one Redis, to the primary the sentinels
/// name, or a link to a cluster.
#[derive(Clone)]
pub(super) enum Backend {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelConn>),
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
        let current = lock(&self.current);
        (current.0, current.1.clone())
    }

    /// Replaces connection `generation` (if no other call replaced it already).
    pub(super) fn renew(&self, generation: u64) {
        let mut current = lock(&self.current);
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
    /// No sentinel has named a primary yet: every call fails.
    NoPrimary,
}

fn no_primary() -> RedisError {
    (
        redis::ErrorKind::Io,
        "a majority of the sentinels has not named a primary yet",
    )
        .into()
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            Conn::NoPrimary => Box::pin(async { Err(no_primary()) }),
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
            Conn::NoPrimary => Box::pin(async { Err(no_primary()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
            Conn::NoPrimary => 0,
        }
    }
}

/// Everything a store connects through.
pub(super) struct Connections {
    /// What the store's calls go through.
    pub(super) backend: Backend,
    /// Votes that wait for replicas, and their connections.
    pub(super) acked: Acked,
    /// How to reach the node that carries decision events: the one Redis, or a seed of
    /// the cluster; with sentinels, the primary they name (see `sentinels`).
    pub(super) events_node: ConnectionInfo,
    pub(super) sentinels: Option<Arc<Sentinels>>,
}

/// Connections to the Redis that `target` names, with a pool of their own for votes that
/// wait for `wait_replicas`. Connects lazily: nothing fails here if Redis is down. With
/// sentinels, starts the task that follows the primary (so it needs a Tokio runtime).
pub(super) fn connect(
    target: RedisTarget,
    longest_call: Duration,
    wait_replicas: u32,
) -> Result<Connections, Error> {
    let response_timeout = REDIS_RESPONSE_TIMEOUT.max(longest_call + CALL_MARGIN);
    // The store's own, then with replicas to wait for the votes' pool and the publisher's.
    let count = 1 + if wait_replicas > 0 {
        ACKED_CONNECTIONS + 1
    } else {
        0
    };
    let single_config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_max_delay(REDIS_MAX_RECONNECT_DELAY)
        .set_number_of_retries(REDIS_CONNECT_ATTEMPTS);
    let mut sentinels = None;
    let (mut backends, events_node) = match target {
        RedisTarget::Cluster { seeds } => {
            let first = seeds[0].clone();
            let client = ClusterClient::builder(seeds)
                .retries(CLUSTER_RETRIES)
                .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
                .overall_response_timeout(Some(longest_call + CALL_MARGIN))
                .build()?;
            let config = ClusterConfig::new()
                .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
                .set_response_timeout(CLUSTER_NODE_RESPONSE_TIMEOUT);
            let links = (0..count)
                .map(|_| {
                    let conn = client.get_pending_async_connection_with_config(config.clone());
                    Backend::Cluster(Arc::new(ClusterLink {
                        client: client.clone(),
                        config: config.clone(),
                        current: std::sync::Mutex::new((0, conn)),
                    }))
                })
                .collect::<Vec<_>>();
            (links, first)
        }
        RedisTarget::Sentinel {
            sentinels: nodes,
            master,
            data_node,
        } => {
            let watched = Arc::new(Sentinels::new(nodes, master, data_node));
            tokio::spawn(follow(Arc::downgrade(&watched)));
            let conns = (0..count)
                .map(|_| {
                    Backend::Sentinel(Arc::new(SentinelConn::new(
                        watched.clone(),
                        single_config.clone(),
                    )))
                })
                .collect::<Vec<_>>();
            let events_node = watched.data_node().clone();
            sentinels = Some(watched);
            (conns, events_node)
        }
        RedisTarget::Single(node) => {
            let client = redis::Client::open(node)?;
            let conns = (0..count)
                .map(|_| {
                    client
                        .get_connection_manager_lazy(single_config.clone())
                        .map(Backend::Single)
                })
                .collect::<Result<Vec<_>, _>>()?;
            (conns, client.get_connection_info().clone())
        }
    };
    let backend = backends.remove(0);
    Ok(Connections {
        backend,
        acked: Acked::new(backends, longest_call, wait_replicas),
        events_node,
        sentinels,
    })
}

/// The connection for one call through `backend`, and on a cluster which one it is.
pub(super) fn connection_of(backend: &Backend) -> (Conn, u64) {
    match backend {
        Backend::Single(conn) => (Conn::Single(conn.clone()), 0),
        Backend::Sentinel(link) => match link.connection() {
            Some(conn) => (Conn::Single(conn), 0),
            None => (Conn::NoPrimary, 0),
        },
        Backend::Cluster(link) => {
            let (generation, conn) = link.current();
            (Conn::Cluster(conn), generation)
        }
    }
}

/// Looks at a call's outcome: a cluster connection on which a call timed out is
/// replaced; with sentinels, a failure that hints at a failover has them asked at once.
pub(super) fn watch<T>(backend: &Backend, generation: u64, result: &Result<T, RedisError>) {
    match (backend, result) {
        (Backend::Cluster(link), Err(err)) if err.is_timeout() => link.renew(generation),
        (Backend::Sentinel(link), result) => link.watch(result),
        _ => {}
    }
}
