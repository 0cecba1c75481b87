//! Redis Sentinel: which node is the primary, kept up to date as the sentinels fail it
//! over, and the connections that follow it.
//!
//! The hub asks the sentinels for the primary (`SENTINEL get-master-addr-by-name`), and
//! asks again when a sentinel announces `+switch-master`, every [`RECHECK_PERIOD`] (the
//! announcement is fire-and-forget and can be missed), and whenever a call fails in a way
//! that says the node is gone or is no longer the primary (`READONLY`). Each connection
//! notices that the primary changed on its next call and reconnects to the new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError};
use tokio::sync::{Notify, watch};

/// The URL scheme that names a primary by the sentinels that watch it.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The primary's address as the sentinels last named it (`None` until one has), and how
/// many times it changed.
pub(crate) type Primary = (u64, Option<ConnectionInfo>);

/// How often the hub asks the sentinels for the primary even when nothing announced a
/// change.
const RECHECK_PERIOD: Duration = Duration::from_secs(1);
/// Longest one question to one sentinel may take (connecting included).
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// The sentinels that watch one primary, and the primary they last named.
pub(super) struct Sentinels {
    /// The sentinels, in the order the URL lists them.
    nodes: Vec<ConnectionInfo>,
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
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (format!("{auth}@"), rest),
            None => (String::new(), rest),
        };
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

    /// Asks the sentinels, in order, which node is the primary; the first that names one
    /// answers.
    async fn ask(&self) -> Result<ConnectionInfo, String> {
        let mut failures = Vec::new();
        for node in &self.nodes {
            let question = async {
                let client = redis::Client::open(node.clone())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.master)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(SENTINEL_TIMEOUT, question).await {
                Ok(Ok(Some((host, port)))) => {
                    return Ok(self
                        .data_node
                        .clone()
                        .set_addr(ConnectionAddr::Tcp(host, port)));
                }
                Ok(Ok(None)) => {
                    failures.push(format!("{} does not know {:?}", node.addr(), self.master))
                }
                Ok(Err(err)) => failures.push(format!("{}: {err}", node.addr())),
                Err(_) => failures.push(format!(
                    "{}: no answer in {SENTINEL_TIMEOUT:?}",
                    node.addr()
                )),
            }
        }
        Err(failures.join("; "))
    }

    /// Records the primary the sentinels named, if it is a change.
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

/// Keeps `sentinels`' primary up to date until every connection that uses it is gone.
pub(super) async fn follow(sentinels: std::sync::Weak<Sentinels>) {
    let mut announcements: Option<redis::aio::PubSub> = None;
    let mut last_failure = String::new();
    loop {
        let Some(sentinels) = sentinels.upgrade() else {
            return;
        };
        match sentinels.ask().await {
            Ok(primary) => {
                sentinels.learn(primary);
                last_failure.clear();
            }
            Err(failure) => {
                if failure != last_failure {
                    tracing::warn!(%failure, "no sentinel named the primary");
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
