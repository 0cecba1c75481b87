//! Redis Sentinel: which node is the primary, kept up to date as the sentinels fail it
//! over, and the connections that follow it.
//!
//! The hub asks the sentinels for the primary (`SENTINEL get-master-addr-by-name`), and
//! asks again when a sentinel announces `+switch-master`, every [`RECHECK_PERIOD`] (the
//! announcement is fire-and-forget and can be missed), and whenever a call fails in a way
//! that says the node is gone or is no longer the primary (`READONLY`), but never twice
//! within [`MIN_ASK_INTERVAL`]. A sentinel's answer counts only once the node it names
//! says (`ROLE`) that it is the primary: a sentinel that lost track (restarted, or cut off
//! with the old primary) is passed over for the next, and when none names a confirmed
//! primary the hub stays where it is. The sentinel that answered last is asked first.
//! Each connection notices that the primary changed on its next call and reconnects to
//! the new one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::connection::split_credentials;

/// The URL scheme that names a primary by the sentinels that watch it.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The primary's address as the sentinels last named it (`None` until one has), and how
/// many times it changed.
pub(crate) type Primary = (u64, Option<ConnectionInfo>);

/// How often the hub asks the sentinels for the primary even when nothing announced a
/// change.
const RECHECK_PERIOD: Duration = Duration::from_secs(1);
/// Longest one question to one sentinel may take: connecting to it, its answer, and
/// asking the node it names for its role.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Shortest time between two asks of the sentinels. Every failed call asks for a recheck
/// and every ask opens new connections (to the sentinels and the node they name); a
/// recheck that comes sooner waits for the rest of it.
const MIN_ASK_INTERVAL: Duration = Duration::from_millis(100);
/// The role a data node reports (`ROLE`'s first element) when it is the primary.
const PRIMARY_ROLE: &str = "master";

/// The sentinels that watch one primary, and the primary they last named.
pub(super) struct Sentinels {
    /// The sentinels, in the order the URL lists them.
    nodes: Vec<ConnectionInfo>,
    /// Which of `nodes` named a confirmed primary last, and is asked first next time: the
    /// one that was right stays the one listened to, so that a sentinel that lost track
    /// does not get to answer first on every ask.
    first: AtomicUsize,
    /// Set once a data node refused `ROLE` (the Redis user may not run it), so that the
    /// warning that the sentinels' word is then taken unchecked is given once.
    role_refused: AtomicBool,
    /// The name the sentinels know the primary by.
    master: String,
    /// How to connect to a data node once its address is known (credentials, protocol).
    data_node: ConnectionInfo,
    /// The primary's address and how many times it changed; `None` until a sentinel
    /// has named it.
    primary: watch::Sender<Primary>,
    /// Wakes the follower to ask the sentinels at once.
    recheck: Notify,
}

impl Sentinels {
    /// The sentinels of a `redis+sentinel://` URL (after the scheme):
    /// `[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER_NAME`. Credentials apply to the
    /// primary (and replicas), not to the sentinels.
    pub(super) fn parse(rest: &str) -> Result<Self, RedisError> {
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
        let nodes: Vec<ConnectionInfo> = list
            .split(',')
            .filter(|node| !node.trim().is_empty())
            .map(|node| format!("redis://{}", node.trim()).into_connection_info())
            .collect::<Result<_, _>>()?;
        if nodes.is_empty() {
            return Err(invalid("no sentinels listed"));
        }
        let data_node = format!(
            "redis://{auth}{}",
            list.split(',').next().unwrap_or_default()
        )
        .into_connection_info()?;
        Ok(Self {
            nodes,
            first: AtomicUsize::new(0),
            role_refused: AtomicBool::new(false),
            master: master.to_owned(),
            data_node,
            primary: watch::Sender::new((0, None)),
            recheck: Notify::new(),
        })
    }

    /// How to connect to a data node (the first sentinel's address stands in for the
    /// primary's until one is named).
    pub(super) fn data_node(&self) -> &ConnectionInfo {
        &self.data_node
    }

    /// The primary as last named, and its generation (which grows with every change).
    pub(super) fn primary(&self) -> Primary {
        self.primary.borrow().clone()
    }

    /// Changes of the primary, as they are learnt.
    pub(crate) fn changes(&self) -> watch::Receiver<Primary> {
        self.primary.subscribe()
    }

    /// Asks the follower to check with the sentinels now.
    pub(super) fn recheck(&self) {
        self.recheck.notify_one();
    }

    /// Asks the sentinels which node is the primary, starting with the one that answered
    /// last: the first whose node confirms that it is the primary answers (and is asked
    /// first next time). Otherwise, why each one did not.
    async fn ask(&self) -> Result<ConnectionInfo, String> {
        let first = self.first.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for turn in 0..self.nodes.len() {
            let index = (first + turn) % self.nodes.len();
            let sentinel = &self.nodes[index];
            match self.ask_one(sentinel).await {
                Ok(primary) => {
                    self.first.store(index, Ordering::Relaxed);
                    return Ok(primary);
                }
                Err(failure) => failures.push(format!("{}: {failure}", sentinel.addr())),
            }
        }
        Err(failures.join("; "))
    }

    /// The primary `sentinel` names, once that node said it is the primary; both
    /// questions within one [`SENTINEL_TIMEOUT`].
    async fn ask_one(&self, sentinel: &ConnectionInfo) -> Result<ConnectionInfo, String> {
        let deadline = Instant::now() + SENTINEL_TIMEOUT;
        let question = async {
            let client = redis::Client::open(sentinel.clone())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        let (host, port) = match timeout_at(deadline, question).await {
            Ok(Ok(Some(named))) => named,
            Ok(Ok(None)) => return Err(format!("does not know {:?}", self.master)),
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer in {SENTINEL_TIMEOUT:?}")),
        };
        let named = self
            .data_node
            .clone()
            .set_addr(ConnectionAddr::Tcp(host, port));
        match timeout_at(deadline, role_of(&named)).await {
            Ok(Ok(role)) if role == PRIMARY_ROLE => Ok(named),
            Ok(Ok(role)) => Err(format!("names {}, whose role is {role:?}", named.addr())),
            // A Redis user that may not run `ROLE` (it is `@admin`) must not leave the
            // hub without a primary: the sentinel's word is taken as it stands.
            Ok(Err(err)) if err.code() == Some("NOPERM") => {
                if !self.role_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %err,
                        "the Redis user may not run ROLE: the primary a sentinel names is \
                         followed without checking that it is one"
                    );
                }
                Ok(named)
            }
            Ok(Err(err)) => Err(format!("names {}, which fails ROLE: {err}", named.addr())),
            Err(_) => Err(format!(
                "names {}, whose role is not known in {SENTINEL_TIMEOUT:?}",
                named.addr()
            )),
        }
    }

    /// Records the primary the sentinels named, if it is a change. The same address again
    /// is none: a new generation makes every connection reconnect, so it must not come
    /// from an answer that merely repeats the current primary.
    fn learn(&self, primary: ConnectionInfo) {
        self.primary.send_if_modified(|(generation, current)| {
            if current.as_ref().map(ConnectionInfo::addr) == Some(primary.addr()) {
                return false;
            }
            tracing::info!(primary = %primary.addr(), "the sentinels name a new primary");
            *generation += 1;
            *current = Some(primary);
            true
        });
    }

    /// A `+switch-master` subscription on the first sentinel that takes it.
    async fn announcements(&self) -> Option<redis::aio::PubSub> {
        for node in &self.nodes {
            let subscribe = async {
                let mut pubsub = redis::Client::open(node.clone())?
                    .get_async_pubsub()
                    .await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            };
            if let Ok(Ok(pubsub)) = tokio::time::timeout(SENTINEL_TIMEOUT, subscribe).await {
                return Some(pubsub);
            }
        }
        None
    }
}

/// The replication role `node` reports for itself (`ROLE`'s first element: `master`,
/// `slave` or `sentinel`), asked on a connection of its own that ends with the question.
async fn role_of(node: &ConnectionInfo) -> Result<String, RedisError> {
    let client = redis::Client::open(node.clone())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
    match reply.first() {
        Some(role) => Ok(redis::from_redis_value_ref(role)?),
        None => Err((redis::ErrorKind::UnexpectedReturnType, "empty ROLE reply").into()),
    }
}

/// Keeps `sentinels`' primary up to date until every connection that uses it is gone.
pub(super) async fn follow(sentinels: std::sync::Weak<Sentinels>) {
    let mut announcements: Option<redis::aio::PubSub> = None;
    let mut last_failure = String::new();
    let mut next_ask = Instant::now();
    loop {
        sleep_until(next_ask).await;
        let Some(sentinels) = sentinels.upgrade() else {
            return;
        };
        next_ask = Instant::now() + MIN_ASK_INTERVAL;
        match sentinels.ask().await {
            Ok(primary) => {
                sentinels.learn(primary);
                last_failure.clear();
            }
            Err(failure) => {
                if failure != last_failure {
                    let current = sentinels.primary().1.map(|p| p.addr().to_string());
                    tracing::warn!(
                        %failure,
                        ?current,
                        "no sentinel named a node that says it is the primary; staying with \
                         the current one"
                    );
                }
                last_failure = failure;
            }
        }
        if announcements.is_none() {
            announcements = sentinels.announcements().await;
        }
        let announced = async {
            match announcements.as_mut() {
                Some(pubsub) => pubsub.on_message().next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sentinels.recheck.notified() => {}
            _ = tokio::time::sleep(RECHECK_PERIOD) => {}
            still_open = announced => {
                if !still_open {
                    announcements = None;
                }
            }
        }
    }
}

/// A connection to whichever node the sentinels name as the primary.
pub(super) struct SentinelConn {
    pub(super) sentinels: Arc<Sentinels>,
    config: ConnectionManagerConfig,
    /// The connection, and the generation of the primary it goes to.
    current: Mutex<Option<(u64, ConnectionManager)>>,
}

impl SentinelConn {
    pub(super) fn new(sentinels: Arc<Sentinels>, config: ConnectionManagerConfig) -> Self {
        Self {
            sentinels,
            config,
            current: Mutex::new(None),
        }
    }

    /// The connection to the current primary (a new one after a change), or `None` while
    /// no sentinel has named one.
    pub(super) fn connection(&self) -> Option<ConnectionManager> {
        let (generation, primary) = self.sentinels.primary();
        let primary = primary?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, conn)) = current.as_ref()
            && *known == generation
        {
            return Some(conn.clone());
        }
        let conn = redis::Client::open(primary)
            .and_then(|client| client.get_connection_manager_lazy(self.config.clone()))
            .inspect_err(
                |err| tracing::error!(%err, "cannot connect to the primary the sentinels named"),
            )
            .ok()?;
        *current = Some((generation, conn.clone()));
        Some(conn)
    }

    /// Looks at a call's outcome: a node that is gone, or that refuses writes because it
    /// is a replica now, means the sentinels may name another primary.
    pub(super) fn watch<T>(&self, result: &Result<T, RedisError>) {
        if let Err(err) = result
            && (err.is_io_error()
                || err.is_connection_refusal()
                || err.is_connection_dropped()
                || err.is_timeout()
                || err.to_string().contains("READONLY"))
        {
            self.sentinels.recheck();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> ConnectionAddr {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }

    #[test]
    fn a_url_names_its_sentinels_the_master_and_the_data_nodes_credentials() {
        let sentinels = Sentinels::parse("user:p@ss@10.0.0.1:26379, 10.0.0.2:26380/quorum/")
            .expect("a valid sentinel URL");
        let addrs: Vec<_> = sentinels.nodes.iter().map(|n| n.addr().clone()).collect();
        assert_eq!(addrs, [tcp("10.0.0.1", 26379), tcp("10.0.0.2", 26380)]);
        assert_eq!(sentinels.master, "quorum");
        // The credentials are the data nodes', not the sentinels'.
        let data = sentinels.data_node().redis_settings();
        assert_eq!(data.username(), Some("user"));
        assert_eq!(data.password(), Some("p@ss"));
        assert!(
            sentinels
                .nodes
                .iter()
                .all(|n| n.redis_settings().password().is_none())
        );
        // Nothing is named before a sentinel is asked.
        let (generation, primary) = sentinels.primary();
        assert_eq!(generation, 0);
        assert!(primary.is_none());
    }

    #[test]
    fn a_url_without_a_master_name_or_sentinels_is_refused() {
        for url in [
            "10.0.0.1:26379",
            "10.0.0.1:26379/",
            "10.0.0.1:26379/quorum/extra",
            "10.0.0.1:26379/quorum?db=1",
            "/quorum",
            " , /quorum",
            "user:pass@/quorum",
        ] {
            let err = Sentinels::parse(url).err();
            assert!(err.is_some(), "{url:?} was accepted");
        }
        let err = Sentinels::parse("10.0.0.1:26379").err().unwrap();
        assert!(err.to_string().contains("no master name"), "{err}");
    }
}
