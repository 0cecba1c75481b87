//! The Redis store: one connection behind the circuit breaker, and the Lua scripts it runs.
//!
//! The store is the only part of the hub that knows Redis key names, scripts and reply
//! shapes. Its calls are split by what they touch:
//! - `target`: the Redis URL, read once into the Redis it names.
//! - `connection`: the connection to one Redis, to a sentinel-named primary, or the link to
//!   a cluster; `sentinel`: following the primary the sentinels name.
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
mod connection;
mod decisions;
mod instances;
mod keys;
mod lifecycle;
mod log;
mod persistence;
mod publish;
mod sentinel;
mod slots;
mod stream;
mod target;
mod vote_reply;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use prometheus_client::metrics::counter::Counter;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, Pipeline, ProtocolVersion, RedisError,
    Script, ServerErrorKind, Value,
};

use crate::breaker::{Admission, Breaker};
use crate::error::Error;

pub(crate) use ballot::vote_benchmark_command;
use connection::{Acked, Backend, Conn, connect, connection_of, watch};
pub(crate) use decisions::VOTE_SCRIPT;
pub(crate) use instances::{Claim, Standing};
pub(crate) use keys::{DASHBOARD_CHANNELS, EVENT_CHANNEL_PREFIX, Layout};
pub use keys::{decision_key, event_log_epoch_key, event_log_key, instances_by_id_key};
pub(crate) use lifecycle::Lifecycle;
pub(crate) use stream::CursorPlace;
pub(crate) use target::RedisTarget;
pub use target::{CLUSTER_SCHEME, SENTINEL_SCHEME};

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
        }
    }

    fn all(&self) -> [&Script; 10] {
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
    breaker: Arc<Breaker>,
    /// Counts failed Redis calls for `/metrics`.
    errors: Counter,
    /// Whether calls go through the breaker. The hub's own upkeep (keepalive, readiness
    /// probes) does not: it must reach Redis as soon as Redis answers again, and its
    /// failures say nothing about the calls the breaker protects.
    guarded: bool,
}

/// Reports one admitted call to the breaker when dropped: as a failure unless
/// [`Admitted::finish`] saw it succeed, so a call cancelled by a timeout counts as one.
struct Admitted<'a> {
    /// `None` for an unguarded store: the outcome is counted, not reported.
    breaker: Option<&'a Breaker>,
    errors: &'a Counter,
    failed: bool,
}

impl Admitted<'_> {
    fn finish<T>(mut self, result: Result<T, RedisError>) -> Result<T, Error> {
        self.failed = result.is_err();
        result.map_err(Error::from)
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.failed {
            self.errors.inc();
        }
        if let Some(breaker) = self.breaker {
            breaker.record(self.failed);
        }
    }
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
        Ok(Self {
            events_node: connections.events_node,
            sentinels: connections.sentinels,
            backend: connections.backend,
            acked: Arc::new(connections.acked),
            layout,
            lifecycle,
            scripts: Arc::new(Scripts::new()),
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

    /// Asks the breaker for one call to Redis.
    fn admit(&self) -> Result<Admitted<'_>, Error> {
        if !self.guarded {
            return Ok(Admitted {
                breaker: None,
                errors: &self.errors,
                failed: true,
            });
        }
        match self.breaker.admit() {
            Admission::Allowed => Ok(Admitted {
                breaker: Some(&self.breaker),
                errors: &self.errors,
                failed: true,
            }),
            Admission::Refused { retry_after } => Err(Error::CircuitOpen { retry_after }),
        }
    }

    /// The connection for one call, and on a cluster which one it is.
    fn conn(&self) -> (Conn, u64) {
        connection_of(&self.backend)
    }

    /// Looks at a call's outcome: a cluster connection on which a call timed out is
    /// replaced.
    fn watch<T>(&self, generation: u64, result: &Result<T, RedisError>) {
        watch(&self.backend, generation, result);
    }

    /// Loads every script into Redis's script cache.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        let (mut conn, generation) = self.conn();
        let admitted = self.admit()?;
        let mut result = Ok(());
        for script in self.scripts.all() {
            if let Err(e) = script.prepare_invoke().load_async(&mut conn).await {
                result = Err(e);
                break;
            }
        }
        self.watch(generation, &result);
        admitted.finish(result)
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

    /// Sets every partition's dashboards flag for `ttl` (cluster only): votes are then
    /// published for dashboards, on any hub.
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

    /// Sends one command.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let (mut conn, generation) = self.conn();
        let admitted = self.admit()?;
        let result = cmd.query_async(&mut conn).await;
        self.watch(generation, &result);
        admitted.finish(result)
    }

    /// Sends commands that may touch keys of different slots, and returns their replies
    /// in order: one pipeline on one Redis; on a cluster, each command on its own (sent
    /// at once, so the cluster connection pipelines those for one node). Not atomic in
    /// either case.
    async fn query_each(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>, Error> {
        match &self.backend {
            Backend::Single(_) | Backend::Sentinel(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                self.query_pipe(&pipe).await
            }
            Backend::Cluster(_) => {
                try_join_all(cmds.into_iter().map(|cmd| async move {
                    let mut pipe = redis::pipe();
                    pipe.add_command(cmd);
                    let (reply,): (Value,) = self.query_pipe(&pipe).await?;
                    Ok::<_, Error>(reply)
                }))
                .await
            }
        }
    }

    /// Sends a pipeline that may contain EVALSHA calls, loading the scripts and retrying
    /// once if Redis lost its script cache (a restart or `SCRIPT FLUSH`).
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Error> {
        self.query_pipe_via(&self.backend, pipe).await
    }

    /// [`Store::query_pipe`] through a given backend.
    async fn query_pipe_via<T: FromRedisValue>(
        &self,
        backend: &Backend,
        pipe: &Pipeline,
    ) -> Result<T, Error> {
        let (mut conn, generation) = connection_of(backend);
        let admitted = self.admit()?;
        match pipe.query_async(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                // Redis answered, so this was no backend failure.
                drop(admitted.finish(Ok(())));
                tracing::info!("Redis lost its script cache; loading the scripts again");
                self.load_scripts().await?;
                let admitted = self.admit()?;
                let result = pipe.query_async(&mut conn).await;
                watch(backend, generation, &result);
                admitted.finish(result)
            }
            other => {
                watch(backend, generation, &other);
                admitted.finish(other)
            }
        }
    }

    /// Runs one script that writes, and with `--wait-replicas` answers only once the
    /// write is on that many replicas: `WAIT` in the same pipeline, on the connection (and
    /// so the node) that ran the script.
    async fn eval_acknowledged<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, Error> {
        self.write_acknowledged(evalsha(script, keys, args)).await
    }

    /// Sends one command that writes, and with `--wait-replicas` answers only once the
    /// write is on that many replicas (see [`Store::eval_acknowledged`]).
    async fn write_acknowledged<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, Error> {
        let (reply, confirmed) = self.write_and_wait(cmd).await?;
        confirmed.map(|()| reply)
    }

    /// [`Store::write_acknowledged`] on the publisher's own connection.
    async fn write_acknowledged_for_publisher<T: FromRedisValue>(
        &self,
        cmd: Cmd,
    ) -> Result<T, Error> {
        let (reply, confirmed) = self.wait_via(self.acked.publisher_backend(), cmd).await?;
        confirmed.map(|()| reply)
    }

    /// [`Store::write_acknowledged`] for a caller that acts on the reply even when too few
    /// replicas confirmed the write in time (it is in the primary): the reply, and
    /// whether it was confirmed.
    async fn write_and_wait<T: FromRedisValue>(
        &self,
        cmd: Cmd,
    ) -> Result<(T, Result<(), Error>), Error> {
        self.wait_via(self.acked.next_backend(), cmd).await
    }

    /// [`Store::write_and_wait`] through `backend` (`None`: no replicas to wait for).
    async fn wait_via<T: FromRedisValue>(
        &self,
        backend: Option<&Backend>,
        cmd: Cmd,
    ) -> Result<(T, Result<(), Error>), Error> {
        let acked = &self.acked;
        let Some(backend) = backend else {
            let mut pipe = redis::pipe();
            pipe.add_command(cmd);
            let (reply,): (T,) = self.query_pipe(&pipe).await?;
            return Ok((reply, Ok(())));
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(acked.replicas)
            .arg(acked.timeout_ms);
        let (reply, acknowledged): (T, u64) = self.query_pipe_via(backend, &pipe).await?;
        let confirmed = if acknowledged < u64::from(acked.replicas) {
            Err(Error::Replication {
                acknowledged,
                wanted: acked.replicas,
            })
        } else {
            Ok(())
        };
        Ok((reply, confirmed))
    }

    /// Runs one script with EVALSHA (reloading it on NOSCRIPT).
    async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, Error> {
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(script, keys, args));
        let (reply,): (T,) = self.query_pipe(&pipe).await?;
        Ok(reply)
    }
}

fn evalsha(script: &Script, keys: &[&str], args: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    cmd
}

fn is_noscript(e: &RedisError) -> bool {
    // A pipeline's error wraps the command's ("Pipeline failure: ... NoScript: ...").
    e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
        || e.to_string().to_ascii_lowercase().contains("noscript")
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
