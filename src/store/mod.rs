//! The Redis store: one connection behind the circuit breaker, and the Lua scripts it runs.
//!
//! The store is the only part of the hub that knows Redis key names, scripts and reply
//! shapes. Its calls are split by what they touch:
//! - `keys`: key and channel names.
//! - `decisions`: the vote script, audit trails and the recent-decisions index.
//! - `stream`: the decision event stream, read back for replays.
//! - `instances`: registrations, heartbeats and session bindings.

mod decisions;
mod instances;
mod keys;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind};

use crate::breaker::{Admission, Breaker};
use crate::error::Error;

pub(crate) use decisions::{VOTE_SCRIPT, vote_benchmark_command};
pub(crate) use instances::{Claim, Standing};
pub(crate) use keys::{DASHBOARD_CHANNELS, DECISION_EVENTS_CHANNEL, EVENT_CHANNEL_PREFIX};
pub(crate) use stream::CursorPlace;

/// Roughly the most bytes of entries one page of `system.get_state` lists, per kind: a
/// page ends early (with a cursor to continue) rather than grow past it.
pub(crate) const MAX_PAGE_BYTES: usize = 256 * 1024;

/// Longest the hub waits for one Redis reply before the call fails.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt to (re)connect to Redis may take.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts.
const REDIS_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Connection attempts a call makes before it fails. Kept low so that calls fail fast
/// while Redis is down; the next call tries again.
const REDIS_CONNECT_ATTEMPTS: usize = 1;

/// The Lua scripts, embedded at build time.
struct Scripts {
    vote: Script,
    register: Script,
    heartbeat: Script,
    unregister: Script,
    release: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            vote: Script::new(VOTE_SCRIPT),
            register: Script::new(include_str!("../../lua/register.lua")),
            heartbeat: Script::new(include_str!("../../lua/heartbeat.lua")),
            unregister: Script::new(include_str!("../../lua/unregister.lua")),
            release: Script::new(include_str!("../../lua/release.lua")),
        }
    }

    fn all(&self) -> [&Script; 5] {
        [
            &self.vote,
            &self.register,
            &self.heartbeat,
            &self.unregister,
            &self.release,
        ]
    }
}

/// A cheap-to-clone handle on Redis: one multiplexed connection shared by every call,
/// behind the hub's circuit breaker.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    conn: ConnectionManager,
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
        errors: Counter,
    ) -> Result<Self, Error> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Internal(format!("invalid Redis URL {url:?}: {e}")))?;
        let response_timeout = REDIS_RESPONSE_TIMEOUT.max(longest_call + Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
            .set_max_delay(REDIS_MAX_RECONNECT_DELAY)
            .set_number_of_retries(REDIS_CONNECT_ATTEMPTS);
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(Self {
            client,
            conn,
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

    /// The underlying client, for the pub/sub listener's own connection.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
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

    /// Loads every script into Redis's script cache.
    pub(crate) async fn load_scripts(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let admitted = self.admit()?;
        let mut result = Ok(());
        for script in self.scripts.all() {
            if let Err(e) = script.prepare_invoke().load_async(&mut conn).await {
                result = Err(e);
                break;
            }
        }
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
        if present.iter().all(|p| *p) {
            Ok(())
        } else {
            self.load_scripts().await
        }
    }

    /// Sends one command.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        let admitted = self.admit()?;
        admitted.finish(cmd.query_async(&mut self.conn.clone()).await)
    }

    /// Sends a pipeline that may contain EVALSHA calls, loading the scripts and retrying
    /// once if Redis lost its script cache (a restart or `SCRIPT FLUSH`).
    async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        let admitted = self.admit()?;
        match pipe.query_async(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                // Redis answered, so this was no backend failure.
                drop(admitted.finish(Ok(())));
                tracing::info!("Redis lost its script cache; loading the scripts again");
                self.load_scripts().await?;
                let admitted = self.admit()?;
                admitted.finish(pipe.query_async(&mut conn).await)
            }
            other => admitted.finish(other),
        }
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

    /// Reads the server's persistence settings and says what an acknowledged vote could
    /// lose, if anything.
    pub(crate) async fn durability_warning(&self) -> Option<String> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        pipe.cmd("CONFIG").arg("GET").arg("appendfsync");
        type Reply = (HashMap<String, String>, HashMap<String, String>);
        let (aof, fsync): Reply = match self.query_pipe(&pipe).await {
            Ok(reply) => reply,
            Err(err) => {
                return Some(format!(
                    "could not read Redis persistence settings ({err}); acknowledged votes are only as durable as that server makes them"
                ));
            }
        };
        match (aof.get("appendonly").map(String::as_str), fsync.get("appendfsync").map(String::as_str)) {
            (Some("yes"), Some("always")) => None,
            (Some("yes"), Some(policy)) => Some(format!(
                "Redis runs with appendfsync {policy}: a Redis crash can lose votes acknowledged in the last second; set appendfsync always"
            )),
            _ => Some(
                "Redis runs without append-only persistence: a Redis restart loses acknowledged votes; set appendonly yes and appendfsync always"
                    .to_owned(),
            ),
        }
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
    e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript)
        || e.to_string().contains("NOSCRIPT")
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
