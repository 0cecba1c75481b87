//! The Redis store: one connection behind the circuit breaker, and the Lua scripts it runs.
//!
//! The store is the only part of the hub that knows Redis key names, scripts and reply
//! shapes. Its calls are split by what they touch:
//! - `target`: the Redis URL, read once into the Redis it names.
//! - `connection`: the connection to one Redis, to a sentinel-named primary, or the link to
//!   a cluster; `sentinel`: following the primary the sentinels name.
//! - `calls`: how one call reaches Redis: through the breaker, with lost scripts loaded
//!   again, and with `--wait-replicas` waiting for replicas.
//! - `keys`: key and channel names, per layout (one Redis or a cluster).
//! - `slots`: Redis Cluster slots and the partitions decisions are spread over.
//! - `decisions`: the vote script, audit trails and the recent-decisions index;
//!   `ballot`: the vote script's arguments; `vote_reply`: its reply, decoded.
//! - `lifecycle`: deadlines, expiry and retention.
//! - `log`: on a cluster, the second step of a decision: its event into the log.
//! - `publish`: with `--wait-replicas`, publishing events once replicas have them.
//! - `stream`: the decision event stream, read back for replays.
//! - `instances`: registrations, heartbeats and session bindings.
//! - `persistence`: what an acknowledged vote survives on this Redis.
//!
//! A store talks to one Redis (`redis://`, `unix://`), to the primary a set of sentinels
//! watch (`redis+sentinel://`), or to a Redis Cluster (`redis+cluster://`); see
//! ARCHITECTURE.md for what differs between them.

mod ballot;
mod calls;
mod connection;
mod decisions;
mod instances;
mod keys;
mod lifecycle;
mod log;
mod persistence;
mod policies;
mod publish;
mod push;
mod sentinel;
mod slots;
mod stream;
mod target;
mod vote_batch;
mod vote_reply;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::{ConnectionAddr, ConnectionInfo, FromRedisValue, ProtocolVersion, Script, Value};

use crate::breaker::Breaker;
use crate::error::Error;

pub(crate) use ballot::vote_benchmark_command;
use connection::{Acked, Backend, connect};
pub(crate) use decisions::VOTE_SCRIPT;
pub(crate) use instances::{Claim, Standing};
pub(crate) use keys::{DASHBOARD_CHANNELS, EVENT_CHANNEL_PREFIX, Layout};
pub use keys::{decision_key, event_log_epoch_key, event_log_key, instances_by_id_key};
pub(crate) use lifecycle::Lifecycle;
pub(crate) use policies::RoleMembers;
pub(crate) use stream::CursorPlace;
pub(crate) use target::RedisTarget;
pub use target::{CLUSTER_SCHEME, SENTINEL_SCHEME};
pub(crate) use webhooks::{
    Added, AttemptReport, Claimed, Delivery, EndpointKind, LoggedAttempt, MAX_PUSH_SUBSCRIPTIONS,
    MAX_WEBHOOKS, NewEndpoint, Settled, StoredEndpoint,
};

/// Roughly the most bytes of entries one page of `system.get_state` lists, per kind: a
/// page ends early (with a cursor to continue) rather than grow past it.
pub(crate) const MAX_PAGE_BYTES: usize = 256 * 1024;

/// The Lua scripts, embedded at build time.
struct Scripts {
    vote: Script,
    log_decision: Script,
    mark_logged: Script,
    expire: Script,
    publish_pending: Script,
    reserve_vote: Script,
    register: Script,
    heartbeat: Script,
    unregister: Script,
    release: Script,
    forget_role: Script,
    webhook_add: Script,
    webhook_next: Script,
    webhook_settle: Script,
    webhook_change: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            vote: Script::new(VOTE_SCRIPT),
            log_decision: Script::new(log::LOG_SCRIPT),
            expire: Script::new(lifecycle::EXPIRE_SCRIPT),
            mark_logged: Script::new(include_str!("../../lua/mark_logged.lua")),
            publish_pending: Script::new(publish::PUBLISH_SCRIPT),
            reserve_vote: Script::new(include_str!("../../lua/reserve_vote.lua")),
            register: Script::new(include_str!("../../lua/register.lua")),
            heartbeat: Script::new(include_str!("../../lua/heartbeat.lua")),
            unregister: Script::new(include_str!("../../lua/unregister.lua")),
            release: Script::new(include_str!("../../lua/release.lua")),
            forget_role: Script::new(include_str!("../../lua/forget_role.lua")),
            webhook_add: Script::new(include_str!("../../lua/webhook_add.lua")),
            webhook_next: Script::new(include_str!("../../lua/webhook_next.lua")),
            webhook_settle: Script::new(include_str!("../../lua/webhook_settle.lua")),
            webhook_change: Script::new(include_str!("../../lua/webhook_change.lua")),
        }
    }

    fn all(&self) -> [&Script; 15] {
        [
            &self.vote,
            &self.log_decision,
            &self.mark_logged,
            &self.expire,
            &self.publish_pending,
            &self.reserve_vote,
            &self.register,
            &self.heartbeat,
            &self.unregister,
            &self.release,
            &self.forget_role,
            &self.webhook_add,
            &self.webhook_next,
            &self.webhook_settle,
            &self.webhook_change,
        ]
    }
}

/// A cheap-to-clone handle on Redis: one multiplexed connection (or cluster connection)
/// shared by every call, behind the hub's circuit breaker.
#[derive(Clone)]
pub struct Store {
    /// How to reach the node that carries decision events (the one Redis, or a seed of
    /// the cluster), for the pub/sub listener's own connection.
    events_node: ConnectionInfo,
    /// With `redis+sentinel://`, the sentinels that name the primary.
    sentinels: Option<Arc<sentinel::Sentinels>>,
    backend: Backend,
    /// Votes that wait for replicas, and the connections they go through.
    acked: Arc<Acked>,
    layout: Layout,
    /// How decisions close: their default deadline, and how long they are kept after.
    lifecycle: Lifecycle,
    scripts: Arc<Scripts>,
    /// Votes waiting for their run of the vote script, one queue per partition (one on
    /// one Redis): a run's keys share one slot.
    vote_batches: Arc<[Arc<vote_batch::VoteBatches>]>,
    breaker: Arc<Breaker>,
    /// Counts failed Redis calls for `/metrics`.
    errors: Counter,
    /// Whether calls go through the breaker. The hub's own upkeep (keepalive, readiness
    /// probes) does not: it must reach Redis as soon as Redis answers again, and its
    /// failures say nothing about the calls the breaker protects.
    guarded: bool,
}

impl Store {
    /// Prepares a store for `url`. Connects lazily and reconnects by itself, so a hub can
    /// start (and report not-ready) while Redis is still down.
    ///
    /// `longest_call` is the longest any caller waits for one reply (the vote timeout);
    /// the client's own response timeout stays above it, so the caller's timeout decides.
    pub(crate) fn open(
        url: &str,
        breaker: Breaker,
        longest_call: Duration,
        wait_replicas: u32,
        lifecycle: Lifecycle,
        errors: Counter,
    ) -> Result<Self, Error> {
        let target = RedisTarget::parse(url)
            .map_err(|e| Error::Internal(format!("invalid Redis URL {url:?}: {e}")))?;
        let layout = Layout::of(&target);
        let connections = connect(target, longest_call, wait_replicas)?;
        let vote_batches = (0..layout.partitions()).map(|_| Arc::default()).collect();
        Ok(Self {
            events_node: connections.events_node,
            sentinels: connections.sentinels,
            backend: connections.backend,
            acked: Arc::new(connections.acked),
            layout,
            lifecycle,
            scripts: Arc::new(Scripts::new()),
            vote_batches,
            breaker: Arc::new(breaker),
            errors,
            guarded: true,
        })
    }

    /// The same store with calls that neither ask the breaker nor count towards it, for
    /// the hub's own upkeep.
    pub(crate) fn unguarded(&self) -> Store {
        Store {
            guarded: false,
            ..self.clone()
        }
    }

    /// Where this store's keys live.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A RESP3 client for the node that serves decision events (pub/sub pushes arrive on
    /// the connection as they are published). On a cluster that is the primary serving
    /// the event log's slot, asked of the cluster each time.
    pub(crate) async fn events_client(&self) -> Result<redis::Client, Error> {
        let mut node = self.events_node.clone();
        if let Some(sentinels) = &self.sentinels {
            node = sentinels.primary().1.ok_or_else(|| {
                Error::Internal("a majority of the sentinels has not named a primary yet".into())
            })?;
        }
        if self.layout.is_cluster() {
            let (host, port) = self.primary_for(self.layout.stream()).await?;
            // A node whose address is unknown is reported as "" or "?" (meaning: the host
            // the question went to); a seed's host stands in for it.
            let host = match (host.as_str(), node.addr()) {
                ("" | "?", ConnectionAddr::Tcp(seed, _)) => seed.clone(),
                _ => host,
            };
            node = node.set_addr(ConnectionAddr::Tcp(host, port));
        }
        let settings = node
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        redis::Client::open(node.set_redis_settings(settings)).map_err(Error::from)
    }

    /// With sentinels, changes of the primary as they are learnt (the listener follows
    /// them); `None` for any other Redis.
    pub(crate) fn primary_changes(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<sentinel::Primary>> {
        self.sentinels.as_ref().map(|sentinels| sentinels.changes())
    }

    /// The address of the primary that serves `key`'s slot, as the cluster reports it.
    async fn primary_for(&self, key: &str) -> Result<(String, u16), Error> {
        let slot = i64::from(slots::key_slot(key));
        let ranges: Vec<Value> = self.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            if (*first..=*last).contains(&slot)
                && let (Some(host), Some(Value::Int(port))) = (primary.first(), primary.get(1))
            {
                let host = String::from_redis_value_ref(host).map_err(internal)?;
                let port = u16::try_from(*port).map_err(internal)?;
                return Ok((host, port));
            }
        }
        Err(Error::Internal(format!("no primary serves slot {slot}")))
    }

    pub(crate) fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Ready means Redis answers and every script is in its cache (loaded again if not).
    pub(crate) async fn check_ready(&self) -> Result<(), Error> {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("EXISTS");
        for script in self.scripts.all() {
            cmd.arg(script.get_hash());
        }
        let present: Vec<bool> = self.query(&cmd).await?;
        self.check_layout().await?;
        if present.iter().all(|p| *p) {
            Ok(())
        } else {
            self.load_scripts().await
        }
    }

    /// Reads one key of every slot the hub writes to (every partition, the event log and
    /// the instance indexes on a cluster; the one Redis otherwise) and succeeds only if
    /// all of them answer.
    pub(crate) async fn probe(&self) -> Result<(), Error> {
        let mut keys = self.layout.decisions_indexes();
        keys.push(self.layout.stream().to_owned());
        keys.push(self.layout.instances_index().to_owned());
        if !self.layout.is_cluster() {
            keys.truncate(1);
        }
        let cmds = keys
            .iter()
            .map(|key| redis::cmd("EXISTS").arg(key).to_owned())
            .collect();
        self.query_each(cmds).await.map(drop)
    }

    /// Sets the dashboards flags (every partition's, on a cluster) for `ttl`: votes are
    /// then published for dashboards, on any hub.
    pub(crate) async fn flag_dashboards(&self, ttl: Duration) -> Result<(), Error> {
        let ttl = ttl.as_millis().to_string();
        let cmds = self
            .layout
            .dashboards_flags()
            .iter()
            .map(|flag| {
                redis::cmd("SET")
                    .arg(flag)
                    .arg(1)
                    .arg("PX")
                    .arg(&ttl)
                    .to_owned()
            })
            .collect();
        self.query_each(cmds).await.map(drop)
    }

    /// Marks a cluster keyspace with its layout on first use; for one written with another
    /// layout, says why this hub must not serve it (its decisions would be looked for
    /// under other key names). Nothing to check on one Redis.
    pub(crate) async fn layout_conflict(&self) -> Result<Option<String>, Error> {
        if !self.layout.is_cluster() {
            return Ok(None);
        }
        let wanted = self.layout.description();
        let found: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.layout.layout_mark())
                    .arg(&wanted)
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        Ok(found.filter(|found| *found != wanted).map(|found| {
            format!(
                "this Redis Cluster's keyspace was written with layout {found:?}, and this hub uses {wanted:?}"
            )
        }))
    }

    /// [`Store::layout_conflict`] as a readiness check.
    async fn check_layout(&self) -> Result<(), Error> {
        match self.layout_conflict().await? {
            Some(conflict) => Err(Error::Internal(conflict)),
            None => Ok(()),
        }
    }
}

fn field_u64(fields: &HashMap<String, String>, name: &str) -> u64 {
    fields
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}
