//! Redis Sentinel: which node is the primary, kept up to date as the sentinels fail it
//! over, and the connections that follow it.
//!
//! The hub asks every sentinel at once for the primary (`SENTINEL
//! get-master-addr-by-name`), and asks again when a sentinel announces `+switch-master`,
//! every [`RECHECK_PERIOD`] (the announcement is fire-and-forget and can be missed), and
//! whenever a call fails in a way that says the node is gone or is no longer the primary
//! (`READONLY`), but never twice within [`MIN_ASK_INTERVAL`]. It follows the node that a
//! majority of the sentinels it lists name (a majority of the list, not of those that
//! answered), once that node says (`ROLE`) that it is the primary. A sentinel that lost
//! track (restarted, or cut off with an old primary that still says it is one) is outvoted;
//! when no node has a majority, or the one that has does not confirm, the hub stays where
//! it is. Each connection notices that the primary changed on its next call and reconnects
//! to the new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{join_all, select_all};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, RedisError};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until};

use crate::sync::lock;

/// The primary's address as the sentinels last named it (`None` until one has), and how
/// many times it changed.
pub(crate) type Primary = (u64, Option<ConnectionInfo>);

/// How often the hub asks the sentinels for the primary even when nothing announced a
/// change.
const RECHECK_PERIOD: Duration = Duration::from_secs(1);
/// Longest one sentinel may take to answer: connecting to it, and its answer (or its
/// `+switch-master` subscription). The sentinels are asked at once, so a round of
/// questions waits this long for the slowest.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest the node a majority of the sentinels name may take to say its role.
const ROLE_TIMEOUT: Duration = Duration::from_millis(500);
/// Shortest time between two asks of the sentinels. Every failed call asks for a recheck
/// and every ask opens new connections (to the sentinels and the node they name); a
/// recheck that comes sooner waits for the rest of it.
const MIN_ASK_INTERVAL: Duration = Duration::from_millis(100);
/// The role a data node reports (`ROLE`'s first element) when it is the primary.
const PRIMARY_ROLE: &str = "master";

/// The sentinels that watch one primary, and the primary they last named.
pub(super) struct Sentinels {
    /// The sentinels, in the order the URL lists them. A node is followed only once more
    /// than half of them name it.
    nodes: Vec<ConnectionInfo>,
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
    /// The sentinels `nodes` (in the order the URL lists them) that watch the primary
    /// they know as `master`, reached as `data_node` says (credentials, protocol). Nothing
    /// is named until the sentinels are asked.
    pub(super) fn new(
        nodes: Vec<ConnectionInfo>,
        master: String,
        data_node: ConnectionInfo,
    ) -> Self {
        Self {
            nodes,
            role_refused: AtomicBool::new(false),
            master,
            data_node,
            primary: watch::Sender::new((0, None)),
            recheck: Notify::new(),
        }
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

    /// How many of the listed sentinels must name a node for the hub to follow it: more
    /// than half of the list, whether or not the others answer.
    fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Asks every sentinel at once which node is the primary: the node a majority of them
    /// name, once it confirms that it is the primary. Otherwise why not, with what each
    /// sentinel said.
    async fn ask(&self) -> Result<ConnectionInfo, String> {
        let answers = join_all(self.nodes.iter().map(|sentinel| self.named_by(sentinel))).await;
        let said = || {
            let said: Vec<String> = self
                .nodes
                .iter()
                .zip(&answers)
                .map(|(sentinel, answer)| match answer {
                    Ok(named) => format!("{} names {}", sentinel.addr(), named.addr()),
                    Err(failure) => format!("{}: {failure}", sentinel.addr()),
                })
                .collect();
            said.join("; ")
        };
        let Some(named) = named_by_majority(&answers, self.majority()) else {
            return Err(format!(
                "no node is named by {} of the {} sentinels ({})",
                self.majority(),
                self.nodes.len(),
                said()
            ));
        };
        self.confirm(named.clone())
            .await
            .map_err(|failure| format!("{failure} ({})", said()))
    }

    /// The primary `sentinel` names, within [`SENTINEL_TIMEOUT`].
    async fn named_by(&self, sentinel: &ConnectionInfo) -> Result<ConnectionInfo, String> {
        let question = async {
            let client = redis::Client::open(sentinel.clone())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(SENTINEL_TIMEOUT, question).await {
            Ok(Ok(Some((host, port)))) => Ok(self
                .data_node
                .clone()
                .set_addr(ConnectionAddr::Tcp(host, port))),
            Ok(Ok(None)) => Err(format!("does not know {:?}", self.master)),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer in {SENTINEL_TIMEOUT:?}")),
        }
    }

    /// `named`, once it says (`ROLE`, within [`ROLE_TIMEOUT`]) that it is the primary.
    async fn confirm(&self, named: ConnectionInfo) -> Result<ConnectionInfo, String> {
        match tokio::time::timeout(ROLE_TIMEOUT, role_of(&named)).await {
            Ok(Ok(role)) if role == PRIMARY_ROLE => Ok(named),
            Ok(Ok(role)) => Err(format!(
                "the majority names {}, whose role is {role:?}",
                named.addr()
            )),
            // A Redis user that may not run `ROLE` (it is `@admin`) must not leave the
            // hub without a primary: the majority's word is taken as it stands.
            Ok(Err(err)) if err.code() == Some("NOPERM") => {
                if !self.role_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %err,
                        "the Redis user may not run ROLE: the primary the sentinels name is \
                         followed without checking that it is one"
                    );
                }
                Ok(named)
            }
            Ok(Err(err)) => Err(format!(
                "the majority names {}, which fails ROLE: {err}",
                named.addr()
            )),
            Err(_) => Err(format!(
                "the majority names {}, whose role is not known in {ROLE_TIMEOUT:?}",
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
}

/// The node that at least `majority` of the sentinels' answers name, if one is.
fn named_by_majority(
    answers: &[Result<ConnectionInfo, String>],
    majority: usize,
) -> Option<&ConnectionInfo> {
    let named: Vec<&ConnectionInfo> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    named.iter().copied().find(|candidate| {
        let votes = named
            .iter()
            .filter(|n| n.addr() == candidate.addr())
            .count();
        votes >= majority
    })
}

/// The sentinels' `+switch-master` announcements: a subscription on each sentinel that
/// took one (the others are asked again on the next round).
struct Announcements(Vec<Option<redis::aio::PubSub>>);

impl Announcements {
    fn new(sentinels: &Sentinels) -> Self {
        Self(sentinels.nodes.iter().map(|_| None).collect())
    }

    /// Subscribes on every sentinel that has no subscription, at once, each within
    /// [`SENTINEL_TIMEOUT`].
    async fn subscribe(&mut self, sentinels: &Sentinels) {
        let missing = self
            .0
            .iter_mut()
            .zip(&sentinels.nodes)
            .filter(|(subscription, _)| subscription.is_none())
            .map(|(subscription, node)| async move {
                let subscribe = async {
                    let mut pubsub = redis::Client::open(node.clone())?
                        .get_async_pubsub()
                        .await?;
                    pubsub.subscribe("+switch-master").await?;
                    Ok::<_, RedisError>(pubsub)
                };
                if let Ok(Ok(pubsub)) = tokio::time::timeout(SENTINEL_TIMEOUT, subscribe).await {
                    *subscription = Some(pubsub);
                }
            });
        join_all(missing).await;
    }

    /// Resolves when a sentinel announces something, or its subscription ends (it is
    /// dropped, to be taken again); never while there is no subscription.
    async fn next(&mut self) {
        let listening: Vec<_> = self
            .0
            .iter_mut()
            .enumerate()
            .filter_map(|(index, subscription)| {
                let pubsub = subscription.as_mut()?;
                Some(Box::pin(async move {
                    (index, pubsub.on_message().next().await.is_some())
                }))
            })
            .collect();
        if listening.is_empty() {
            return std::future::pending().await;
        }
        let ((index, still_open), _, _) = select_all(listening).await;
        if !still_open {
            self.0[index] = None;
        }
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
    let mut announcements = None;
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
                        "no node that a majority of the sentinels name says it is the \
                         primary; staying with the current one"
                    );
                }
                last_failure = failure;
            }
        }
        let announcements = announcements.get_or_insert_with(|| Announcements::new(&sentinels));
        announcements.subscribe(&sentinels).await;
        tokio::select! {
            _ = sentinels.recheck.notified() => {}
            _ = tokio::time::sleep(RECHECK_PERIOD) => {}
            _ = announcements.next() => {}
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
    /// no majority of the sentinels has named one.
    pub(super) fn connection(&self) -> Option<ConnectionManager> {
        let (generation, primary) = self.sentinels.primary();
        let primary = primary?;
        let mut current = lock(&self.current);
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
    use redis::IntoConnectionInfo;

    use super::*;
    use crate::store::target::RedisTarget;

    fn tcp(host: &str, port: u16) -> ConnectionAddr {
        ConnectionAddr::Tcp(host.to_owned(), port)
    }

    /// The sentinels a `redis+sentinel://` URL lists.
    fn sentinels_of(url: &str) -> Sentinels {
        match RedisTarget::parse(url) {
            Ok(RedisTarget::Sentinel {
                sentinels,
                master,
                data_node,
            }) => Sentinels::new(sentinels, master, data_node),
            other => panic!("{url:?} names no sentinels: {other:?}"),
        }
    }

    #[test]
    fn nothing_is_named_before_a_sentinel_is_asked() {
        let sentinels = sentinels_of("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/quorum");
        assert_eq!(sentinels.master, "quorum");
        let (generation, primary) = sentinels.primary();
        assert_eq!(generation, 0);
        assert!(primary.is_none());
    }

    #[test]
    fn the_node_followed_is_the_one_more_than_half_of_the_listed_sentinels_name() {
        let node = |port: u16| {
            Ok(format!("redis://127.0.0.1:{port}")
                .into_connection_info()
                .unwrap())
        };
        let silent = || Err("no answer".to_owned());
        let followed = |answers: &[Result<ConnectionInfo, String>]| {
            let majority = answers.len() / 2 + 1;
            named_by_majority(answers, majority).map(|n| n.addr().clone())
        };
        // Two of three outvote one, whichever answered first.
        assert_eq!(
            followed(&[node(1), node(2), node(2)]),
            Some(tcp("127.0.0.1", 2))
        );
        assert_eq!(
            followed(&[node(2), node(1), node(2)]),
            Some(tcp("127.0.0.1", 2))
        );
        // A majority of the list, not of those that answered.
        assert_eq!(followed(&[node(1), silent(), silent()]), None);
        assert_eq!(followed(&[node(1), node(2), silent()]), None);
        assert_eq!(
            followed(&[node(2), node(2), silent()]),
            Some(tcp("127.0.0.1", 2))
        );
        assert_eq!(followed(&[node(1), node(1), node(2), node(2)]), None);
        assert_eq!(
            followed(&[node(1), node(2), node(2), node(2)]),
            Some(tcp("127.0.0.1", 2))
        );
        assert_eq!(followed(&[node(1)]), Some(tcp("127.0.0.1", 1)));
        assert_eq!(followed(&[silent()]), None);
        // The majority a URL's list needs.
        for (list, majority) in [
            ("h:1", 1),
            ("h:1,h:2", 2),
            ("h:1,h:2,h:3", 2),
            ("h:1,h:2,h:3,h:4", 3),
        ] {
            let sentinels = sentinels_of(&format!("redis+sentinel://{list}/quorum"));
            assert_eq!(sentinels.majority(), majority, "{list}");
        }
    }
}
