//! The Redis store: the one place that knows key names, Lua scripts and reply shapes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind};

use crate::breaker::{Admission, Breaker};
use crate::config::RateLimit;
use crate::decision::{Ballot, DEFAULT_TOTAL_INSTANCES, DecisionName, VoteOutcome};
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::protocol::{
    DecisionEvent, DecisionStatus, DecisionSummary, EventId, InstanceInfo, RecordedVote,
};

/// Longest the hub waits for one Redis reply before the call fails.
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one attempt to (re)connect to Redis may take.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between reconnection attempts.
pub const REDIS_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// Connection attempts a call makes before it fails. Kept low so that calls fail fast
/// while Redis is down; the next call tries again.
pub const REDIS_CONNECT_ATTEMPTS: usize = 1;
/// Approximate number of decision events the stream keeps (`XADD MAXLEN ~`); a client
/// resuming from an older event is told its recovery is incomplete.
pub const DECISION_STREAM_CAP: u64 = 10_000;
/// Events read from the stream per round trip when replaying a gap.
pub const REPLAY_PAGE: usize = 500;
/// Decisions the recent-decisions index keeps; older ones drop out of `system.get_state`
/// (their keys and audit trail stay).
pub const DECISION_INDEX_CAP: i64 = 10_000;

/// Key names. Decision keys carry the decision as a hash tag (`{name}`), so all of one
/// decision's keys live in one Redis Cluster slot and one script can touch them all.
mod keys {
    pub const DECISION_EVENTS_STREAM: &str = "cb:stream:quorum.decision.made";
    pub const DECISION_EVENTS_CHANNEL: &str = "cb:events:quorum.decision.made";
    pub const VOTE_RECORDED_CHANNEL: &str = "cb:events:quorum.vote.recorded";
    pub const INSTANCE_REGISTERED_CHANNEL: &str = "cb:events:instance.registered";
    pub const INSTANCE_UNREGISTERED_CHANNEL: &str = "cb:events:instance.unregistered";
    /// Prefix of every event channel; the rest of the name is the event's method name.
    pub const EVENT_CHANNEL_PREFIX: &str = "cb:events:";
    /// Sorted set: decision name -> time its first vote was recorded (ms).
    pub const DECISIONS_INDEX: &str = "cb:decisions";
    /// Sorted set: instance id -> last time it was registered or refreshed (ms).
    pub const INSTANCES_INDEX: &str = "cb:instances";

    /// List: an instance's most recent recorded vote times (ms), for the rate limit.
    pub fn vote_rate(id: &str) -> String {
        format!("cb:ratelimit:{{{id}}}:votes")
    }

    pub fn decision(name: &str, part: &str) -> String {
        format!("cb:quorum:{{{name}}}:{part}")
    }

    pub fn instance(id: &str) -> String {
        format!("cb:instance:{{{id}}}")
    }

    pub fn owner(id: &str) -> String {
        format!("cb:instance:{{{id}}}:owner")
    }
}

pub use keys::{DECISION_EVENTS_CHANNEL, EVENT_CHANNEL_PREFIX};

/// Channels of the events sessions may subscribe to (dashboards). A hub listens on them
/// only while one of its sessions has subscribed.
pub const DASHBOARD_CHANNELS: [&str; 3] = [
    keys::VOTE_RECORDED_CHANNEL,
    keys::INSTANCE_REGISTERED_CHANNEL,
    keys::INSTANCE_UNREGISTERED_CHANNEL,
];

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
            register: Script::new(include_str!("../lua/register.lua")),
            heartbeat: Script::new(include_str!("../lua/heartbeat.lua")),
            unregister: Script::new(include_str!("../lua/unregister.lua")),
            release: Script::new(include_str!("../lua/release.lua")),
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

/// Result of claiming or touching an instance that may be bound to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Done (registered, refreshed or removed).
    Done,
    /// The instance has no registration.
    Missing,
    /// The instance is bound to another open session; nothing was changed.
    BoundElsewhere,
}

impl Claim {
    fn from_script(code: i64) -> Self {
        match code {
            1 => Claim::Done,
            0 => Claim::Missing,
            _ => Claim::BoundElsewhere,
        }
    }
}

/// Whether an instance may vote through a caller without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    NotRegistered,
    /// Registered and bound to an open WebSocket session: only that session votes as it.
    BoundToSession,
    Registered,
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
}

/// Decision events read back from the stream, oldest first.
#[derive(Debug, Default)]
pub struct Replay {
    pub events: Vec<DecisionEvent>,
    /// A full page came back: more events may follow the last one.
    pub more: bool,
}

/// Reports one admitted call to the breaker when dropped: as a failure unless
/// [`Admitted::finish`] saw it succeed, so a call cancelled by a timeout counts as one.
struct Admitted<'a> {
    breaker: &'a Breaker,
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
        self.breaker.record(self.failed);
    }
}

impl Store {
    /// Prepares a store for `url`. Connects lazily and reconnects by itself, so a hub can
    /// start (and report not-ready) while Redis is still down.
    ///
    /// `longest_call` is the longest any caller waits for one reply (the vote timeout);
    /// the client's own response timeout stays above it, so the caller's timeout decides.
    pub fn open(
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
        })
    }

    /// The underlying client, for the pub/sub listener's own connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Asks the breaker for one call to Redis.
    fn admit(&self) -> Result<Admitted<'_>, Error> {
        match self.breaker.admit() {
            Admission::Allowed => Ok(Admitted {
                breaker: &self.breaker,
                errors: &self.errors,
                failed: true,
            }),
            Admission::Refused { retry_after } => Err(Error::CircuitOpen { retry_after }),
        }
    }

    /// Loads every script into Redis's script cache.
    pub async fn load_scripts(&self) -> Result<(), Error> {
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
    pub async fn check_ready(&self) -> Result<(), Error> {
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

    // ---- votes and decisions ----

    /// Runs the vote script for one ballot.
    pub async fn vote(&self, ballot: &Ballot, limit: RateLimit) -> Result<VoteOutcome, Error> {
        let name = ballot.decision.as_str();
        let stated = ballot
            .total_instances
            .map(|n| n.to_string())
            .unwrap_or_default();
        let (keys, args) = vote_invocation(
            name,
            ballot.instance.as_str(),
            ballot.value.as_str(),
            &stated,
            limit,
        );
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (outcome, vote_count, total, _quorum, final_decision, recorded): (
            String,
            u64,
            u64,
            u64,
            String,
            String,
        ) = self.eval(&self.scripts.vote, &key_refs, &args).await?;
        let outcome = match outcome.as_str() {
            "recorded" => VoteOutcome::Recorded { vote_count },
            "decided_now" => VoteOutcome::DecidedNow {
                vote_count,
                final_decision,
            },
            "already_voted" => VoteOutcome::AlreadyVoted {
                vote_count,
                recorded_value: recorded,
                final_decision: (!final_decision.is_empty()).then_some(final_decision),
            },
            "decided" => VoteOutcome::Decided {
                vote_count,
                final_decision,
            },
            "total_mismatch" => VoteOutcome::TotalMismatch { opened_with: total },
            "rate_limited" => VoteOutcome::RateLimited {
                retry_after_ms: vote_count.max(1),
            },
            other => return Err(Error::Internal(format!("vote script returned {other:?}"))),
        };
        let opened = matches!(
            outcome,
            VoteOutcome::Recorded { vote_count: 1 } | VoteOutcome::DecidedNow { vote_count: 1, .. }
        );
        if opened {
            // The index lives outside the decision's slot, so it is kept next to the
            // script rather than inside it. It only feeds `system.get_state`.
            let mut pipe = redis::pipe();
            pipe.cmd("ZADD")
                .arg(keys::DECISIONS_INDEX)
                .arg("NX")
                .arg(now_ms())
                .arg(name)
                .ignore()
                .cmd("ZREMRANGEBYRANK")
                .arg(keys::DECISIONS_INDEX)
                .arg(0)
                .arg(-DECISION_INDEX_CAP - 1)
                .ignore();
            self.query_pipe::<()>(&pipe).await?;
        }
        Ok(outcome)
    }

    /// The audit trail of one decision, or `None` when it has no votes.
    pub async fn status(&self, decision: &DecisionName) -> Result<Option<DecisionStatus>, Error> {
        let name = decision.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(keys::decision(name, "metadata"))
            .cmd("HGETALL")
            .arg(keys::decision(name, "result"))
            .cmd("ZRANGE")
            .arg(keys::decision(name, "votes"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(keys::decision(name, "ballots"))
            .cmd("HGETALL")
            .arg(keys::decision(name, "tally"));
        type Reply = (
            HashMap<String, String>,
            HashMap<String, String>,
            Vec<(String, f64)>,
            HashMap<String, String>,
            HashMap<String, u64>,
        );
        let (meta, result, voters, ballots, tally): Reply = self.query_pipe(&pipe).await?;
        if meta.is_empty() || voters.is_empty() {
            return Ok(None);
        }
        let votes: Vec<RecordedVote> = voters
            .into_iter()
            .map(|(instance_id, seq)| RecordedVote {
                value: ballots.get(&instance_id).cloned().unwrap_or_default(),
                instance_id,
                seq: seq as u64,
            })
            .collect();
        let final_decision = result.get("value").cloned();
        Ok(Some(DecisionStatus {
            decision: name.to_owned(),
            total_instances: field_u64(&meta, "totalInstances"),
            quorum: field_u64(&meta, "quorum"),
            vote_count: votes.len() as u64,
            tally: tally_in_vote_order(&votes, &tally),
            votes,
            quorum_reached: final_decision.is_some(),
            final_decision,
            decided_at: result.get("decidedAt").and_then(|t| t.parse().ok()),
        }))
    }

    /// The most recently opened decisions, newest first.
    pub async fn recent_decisions(&self, limit: usize) -> Result<Vec<DecisionSummary>, Error> {
        let names: Vec<String> = self
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(keys::DECISIONS_INDEX)
                    .arg(0)
                    .arg(limit as i64 - 1),
            )
            .await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(keys::decision(name, "metadata"))
                .arg(&["totalInstances", "quorum", "openedAt"])
                .cmd("ZCARD")
                .arg(keys::decision(name, "votes"))
                .cmd("HMGET")
                .arg(keys::decision(name, "result"))
                .arg(&["value", "decidedAt"]);
        }
        let replies: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        let mut decisions = Vec::with_capacity(names.len());
        for (name, chunk) in names.into_iter().zip(replies.chunks(3)) {
            let [meta, count, result] = chunk else { break };
            let meta: Vec<Option<u64>> =
                FromRedisValue::from_redis_value_ref(meta).map_err(internal)?;
            let vote_count: u64 = FromRedisValue::from_redis_value_ref(count).map_err(internal)?;
            let result: Vec<Option<String>> =
                FromRedisValue::from_redis_value_ref(result).map_err(internal)?;
            let (Some(total_instances), Some(quorum)) = (meta[0], meta[1]) else {
                continue; // removed since it was indexed
            };
            let final_decision = result[0].clone();
            decisions.push(DecisionSummary {
                decision: name,
                total_instances,
                quorum,
                vote_count,
                quorum_reached: final_decision.is_some(),
                final_decision,
                opened_at: meta[2].unwrap_or_default(),
                decided_at: result[1].as_deref().and_then(|t| t.parse().ok()),
            });
        }
        Ok(decisions)
    }

    // ---- decision events ----

    /// The id of the newest decision event, or zero when there is none.
    pub async fn last_event_id(&self) -> Result<EventId, Error> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(keys::DECISION_EVENTS_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let events = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(events.first().map(|e| e.event_id).unwrap_or(EventId::ZERO))
    }

    /// Up to [`REPLAY_PAGE`] decision events after `after` and no later than `upto`.
    pub async fn events_after(
        &self,
        after: EventId,
        upto: Option<EventId>,
    ) -> Result<Replay, Error> {
        let end = upto.map_or_else(|| "+".to_owned(), |id| id.to_string());
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(keys::DECISION_EVENTS_STREAM)
            .arg(format!("({after}"))
            .arg(end)
            .arg("COUNT")
            .arg(REPLAY_PAGE);
        let events = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(Replay {
            more: events.len() == REPLAY_PAGE,
            events,
        })
    }

    /// Whether events after `after` may be missing from the stream (trimmed by its cap, or
    /// deleted), so that a replay from `after` cannot be complete. Errs on the side of
    /// "missing" when `after` is exactly the last trimmed event.
    pub async fn events_missing_after(&self, after: EventId) -> Result<bool, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(keys::DECISION_EVENTS_STREAM);
        let (exists,): (bool,) = self.query_pipe(&pipe).await?;
        if !exists {
            return Ok(false);
        }
        let reply: redis::Value = self
            .query(
                redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(keys::DECISION_EVENTS_STREAM),
            )
            .await?;
        let items: Vec<redis::Value> = match reply {
            redis::Value::Array(items) => items,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let mut info: HashMap<String, String> = HashMap::new();
        for pair in items.chunks(2) {
            if let [name, value] = pair
                && let (Ok(name), Ok(value)) = (
                    String::from_redis_value_ref(name),
                    String::from_redis_value_ref(value),
                )
            {
                info.insert(name, value);
            }
        }
        let id = |name: &str| info.get(name).and_then(|v| v.parse::<EventId>().ok());
        let number = |name: &str| {
            info.get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        let deleted_after = id("max-deleted-entry-id").is_some_and(|deleted| deleted > after);
        let trimmed = number("entries-added") > number("length");
        let before_kept = match id("recorded-first-entry-id") {
            Some(first) if number("length") > 0 => after < first,
            _ => id("last-generated-id").is_some_and(|last| after < last),
        };
        Ok(deleted_after || (trimmed && before_kept))
    }

    /// Reads the server's persistence settings and says what an acknowledged vote could
    /// lose, if anything.
    pub async fn durability_warning(&self) -> Option<String> {
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

    // ---- instances ----

    /// Registers (or refreshes) an instance; with `owner`, also binds it to that session.
    pub async fn register(
        &self,
        registration: &Registration,
        owner: Option<&str>,
        ttl: Duration,
    ) -> Result<Claim, Error> {
        let id = registration.instance.as_str();
        let now = now_ms().to_string();
        let roles = serde_json::to_string(&registration.roles).map_err(internal)?;
        let metadata = serde_json::to_string(&registration.metadata).map_err(internal)?;
        let ttl_ms = ttl.as_millis().to_string();
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(
            &self.scripts.register,
            &[&keys::instance(id), &keys::owner(id)],
            &[
                owner.unwrap_or(""),
                &ttl_ms,
                &now,
                &roles,
                &metadata,
                id,
                keys::INSTANCE_REGISTERED_CHANNEL,
            ],
        ));
        pipe.cmd("ZADD")
            .arg(keys::INSTANCES_INDEX)
            .arg(&now)
            .arg(id)
            .ignore();
        let (code,): (i64,) = self.query_pipe(&pipe).await?;
        Ok(if code == 1 {
            Claim::Done
        } else {
            Claim::BoundElsewhere
        })
    }

    /// Refreshes the TTL of each `(instance, owner)` pair in one round trip.
    pub async fn heartbeat_many(
        &self,
        pairs: &[(&InstanceId, Option<&str>)],
        ttl: Duration,
    ) -> Result<Vec<Claim>, Error> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms().to_string();
        let ttl_ms = ttl.as_millis().to_string();
        let mut pipe = redis::pipe();
        for (instance, owner) in pairs {
            let id = instance.as_str();
            pipe.add_command(evalsha(
                &self.scripts.heartbeat,
                &[&keys::instance(id), &keys::owner(id)],
                &[owner.unwrap_or(""), &ttl_ms, &now],
            ));
            pipe.cmd("ZADD")
                .arg(keys::INSTANCES_INDEX)
                .arg(&now)
                .arg(id)
                .ignore();
        }
        let codes: Vec<i64> = self.query_pipe(&pipe).await?;
        Ok(codes.into_iter().map(Claim::from_script).collect())
    }

    /// Refreshes one instance's TTL.
    pub async fn heartbeat(
        &self,
        instance: &InstanceId,
        owner: Option<&str>,
        ttl: Duration,
    ) -> Result<Claim, Error> {
        let claims = self.heartbeat_many(&[(instance, owner)], ttl).await?;
        claims
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("empty heartbeat reply".into()))
    }

    /// Removes an instance's registration (refused if another session holds it).
    pub async fn unregister(
        &self,
        instance: &InstanceId,
        owner: Option<&str>,
    ) -> Result<Claim, Error> {
        let id = instance.as_str();
        let mut pipe = redis::pipe();
        pipe.add_command(evalsha(
            &self.scripts.unregister,
            &[&keys::instance(id), &keys::owner(id)],
            &[owner.unwrap_or(""), id, keys::INSTANCE_UNREGISTERED_CHANNEL],
        ));
        let (code,): (i64,) = self.query_pipe(&pipe).await?;
        let claim = Claim::from_script(code);
        if claim != Claim::BoundElsewhere {
            self.query::<()>(redis::cmd("ZREM").arg(keys::INSTANCES_INDEX).arg(id))
                .await?;
        }
        Ok(claim)
    }

    /// Frees a closed session's binding; the registration lives on until its TTL.
    pub async fn release(&self, instance: &InstanceId, owner: &str) -> Result<(), Error> {
        let id = instance.as_str();
        let now = now_ms().to_string();
        self.eval::<i64>(
            &self.scripts.release,
            &[&keys::instance(id), &keys::owner(id)],
            &[owner, &now, id, keys::INSTANCE_UNREGISTERED_CHANNEL],
        )
        .await?;
        Ok(())
    }

    /// Whether an instance is registered, and whether a session holds it.
    pub async fn standing(&self, instance: &InstanceId) -> Result<Standing, Error> {
        let id = instance.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(keys::instance(id))
            .cmd("EXISTS")
            .arg(keys::owner(id));
        let (registered, bound): (bool, bool) = self.query_pipe(&pipe).await?;
        Ok(match (registered, bound) {
            (false, _) => Standing::NotRegistered,
            (true, true) => Standing::BoundToSession,
            (true, false) => Standing::Registered,
        })
    }

    /// Registered instances, most recently seen first. Entries not refreshed since
    /// `stale_before_ms` are dropped from the index first.
    pub async fn instances(
        &self,
        limit: usize,
        stale_before_ms: u64,
    ) -> Result<Vec<InstanceInfo>, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(keys::INSTANCES_INDEX)
            .arg("-inf")
            .arg(format!("({stale_before_ms}"))
            .ignore()
            .cmd("ZREVRANGE")
            .arg(keys::INSTANCES_INDEX)
            .arg(0)
            .arg(limit as i64 - 1);
        let (ids,): (Vec<String>,) = self.query_pipe(&pipe).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::instance(id));
        }
        let hashes: Vec<HashMap<String, String>> = self.query_pipe(&pipe).await?;
        let mut gone = Vec::new();
        let mut instances = Vec::with_capacity(ids.len());
        for (id, fields) in ids.into_iter().zip(hashes) {
            if fields.is_empty() {
                gone.push(id);
                continue;
            }
            let json = |name: &str, empty: serde_json::Value| {
                fields
                    .get(name)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(empty)
            };
            instances.push(InstanceInfo {
                roles: json("roles", serde_json::Value::Array(Vec::new())),
                metadata: json("metadata", serde_json::Value::Object(Default::default())),
                status: fields.get("status").cloned().unwrap_or_default(),
                last_seen: field_u64(&fields, "lastSeen"),
                instance_id: id,
            });
        }
        if !gone.is_empty() {
            self.query::<()>(redis::cmd("ZREM").arg(keys::INSTANCES_INDEX).arg(&gone))
                .await?;
        }
        Ok(instances)
    }
}

/// The tally hash, keyed in the order each value first received a vote.
fn tally_in_vote_order(
    votes: &[RecordedVote],
    tally: &HashMap<String, u64>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut ordered = serde_json::Map::new();
    for vote in votes {
        if !ordered.contains_key(&vote.value) {
            let count = tally.get(&vote.value).copied().unwrap_or_default();
            ordered.insert(vote.value.clone(), count.into());
        }
    }
    ordered
}

/// KEYS and ARGV of one run of the vote script (see `lua/quorum_vote.lua`).
fn vote_invocation(
    decision: &str,
    instance: &str,
    value: &str,
    stated_total: &str,
    limit: RateLimit,
) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::decision(decision, "votes"),
        keys::decision(decision, "tally"),
        keys::decision(decision, "result"),
        keys::decision(decision, "metadata"),
        keys::decision(decision, "ballots"),
        keys::DECISION_EVENTS_STREAM.to_owned(),
        keys::vote_rate(instance),
    ];
    let args = vec![
        decision.to_owned(),
        instance.to_owned(),
        value.to_owned(),
        stated_total.to_owned(),
        DEFAULT_TOTAL_INSTANCES.to_string(),
        DECISION_STREAM_CAP.to_string(),
        keys::DECISION_EVENTS_CHANNEL.to_owned(),
        limit.max.to_string(),
        limit.window.as_millis().to_string(),
        keys::VOTE_RECORDED_CHANNEL.to_owned(),
    ];
    (keys, args)
}

/// The vote script's source, for tools that load it themselves.
pub const VOTE_SCRIPT: &str = include_str!("../lua/quorum_vote.lua");

/// Arguments for `redis-benchmark` that run the vote script on random decisions and
/// instances (`__rand_int__` is replaced by the benchmark), the way a hub calls it.
pub fn vote_benchmark_command(sha: &str, total_instances: u64, limit: RateLimit) -> Vec<String> {
    let (keys, args) = vote_invocation(
        "rb__rand_int__",
        "i__rand_int__",
        "yes",
        &total_instances.to_string(),
        limit,
    );
    let mut command = vec!["EVALSHA".to_owned(), sha.to_owned(), keys.len().to_string()];
    command.extend(keys);
    command.extend(args);
    command
}

/// Parses an XRANGE / XREVRANGE reply into decision events.
fn parse_stream_entries(reply: redis::Value) -> Result<Vec<DecisionEvent>, Error> {
    type Entries = Vec<(String, Vec<(String, String)>)>;
    let entries: Entries = FromRedisValue::from_redis_value(reply).map_err(internal)?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, fields)| {
            // The same rule as live delivery: an event without a valid id is logged, not sent.
            let id = id
                .parse::<EventId>()
                .inspect_err(
                    |err| tracing::error!(%err, "ignoring a decision event without a valid id"),
                )
                .ok()?;
            let fields: HashMap<String, String> = fields.into_iter().collect();
            Some(DecisionEvent {
                decision: fields.get("decision").cloned().unwrap_or_default(),
                value: fields.get("value").cloned().unwrap_or_default(),
                vote_count: field_u64(&fields, "voteCount"),
                quorum: field_u64(&fields, "quorum"),
                total_instances: field_u64(&fields, "totalInstances"),
                event_id: id,
                timestamp: field_u64(&fields, "timestamp"),
            })
        })
        .collect())
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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
