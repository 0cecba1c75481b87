//! Command-line and environment configuration of a hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How a hub listens, where its Redis is, and how long registrations live.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on (port 0 picks a free port).
    #[arg(long, env = "QUORUM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve `GET /metrics` on this address instead of --listen (e.g. a private
    /// interface), so that whoever reaches the main port does not read the metrics.
    #[arg(long, env = "QUORUM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Redis to use: redis://[USER:PASS@]HOST:PORT or unix:///run/redis.sock for one Redis,
    /// redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...] for a Redis Cluster (seed nodes;
    /// the credentials apply to every node), or
    /// redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER_NAME for the primary
    /// that these sentinels watch, followed across failovers (the credentials apply to the
    /// primary; the sentinels are asked without). TLS is not supported. Without it the hub starts
    /// its own redis-server (append-only persistence) inside --data-dir.
    #[arg(long, env = "QUORUM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Directory for the managed redis-server's socket and data (unused with --redis-url).
    #[arg(long, env = "QUORUM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Longest the managed redis-server may take to answer when it starts, not counting
    /// the time it reports loading its data (a large append-only file loads for as long
    /// as it takes).
    #[arg(long, env = "QUORUM_REDIS_START_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub redis_start_timeout: Duration,

    /// Directory served at / (the dashboard).
    #[arg(long, env = "QUORUM_WEB_DIR", default_value = "./web-demo")]
    pub web_dir: PathBuf,

    /// Seconds a registration lives without a heartbeat; an open session keeps its own
    /// instance alive by itself.
    #[arg(long, env = "QUORUM_INSTANCE_TTL", default_value = "30", value_parser = parse_ttl_seconds)]
    pub instance_ttl: Duration,

    /// Most votes one instance may cast per rolling window, across every hub, written
    /// COUNT/WINDOW (e.g. 50/60s), or `off`.
    #[arg(long, env = "QUORUM_VOTE_RATE_LIMIT", default_value = "50/60s")]
    pub vote_rate_limit: RateLimit,

    /// Longest a vote's Redis work may take before the caller is told its outcome is
    /// unknown (e.g. 5s, 500ms).
    #[arg(long, env = "QUORUM_VOTE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub vote_timeout: Duration,

    /// Answer a vote only once its write is on this many replicas (Redis `WAIT`, for at
    /// most half of --vote-timeout); fewer in time is answered -32005 (reason
    /// "replication": the vote may or may not survive a failover). 0: answer as soon as
    /// the primary has it.
    #[arg(long, env = "QUORUM_WAIT_REPLICAS", default_value_t = 0)]
    pub wait_replicas: u32,

    /// The longest any decision stays open: one whose votes state no closeAfterMs expires
    /// this long after its first vote, and none may state a longer one (100ms to 7d).
    #[arg(long, env = "QUORUM_MAX_OPEN", default_value = "7d", value_parser = parse_max_open)]
    pub max_open: Duration,

    /// Decision policies to store at start, as a JSON object from name pattern to policy
    /// (see docs/policies.md); each replaces the stored policy of its pattern.
    #[arg(long, env = "QUORUM_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// Refuse votes on decisions that no policy matches (-32002, reason "no_policy").
    #[arg(long, env = "QUORUM_REQUIRE_POLICY")]
    pub require_policy: bool,

    /// How long a decided or expired decision is kept once its event is logged; then its keys
    /// expire and it is gone from system.get_state and system.quorum.status (10s to 3650d).
    #[arg(long, env = "QUORUM_DECISION_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub decision_retention: Duration,

    /// Consecutive Redis failures (connection errors, timeouts) that open the circuit breaker.
    #[arg(long, env = "QUORUM_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: u32,

    /// How long the open breaker answers without calling Redis before one trial call, at
    /// most: it closes sooner when the hub's once-a-second probe finds Redis answering.
    #[arg(long, env = "QUORUM_BREAKER_OPEN", default_value = "30s", value_parser = parse_duration)]
    pub breaker_open: Duration,

    /// Secret for HS256 tokens (at least 16 bytes). When set, every WebSocket upgrade and
    /// every /rpc call must carry a token (`Authorization: Bearer`, or `?token=` on /ws).
    #[arg(long, env = "QUORUM_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Browser origins allowed to open a WebSocket or call /rpc, comma-separated: full
    /// origins (https://dash.example.com), `loopback` (any port on localhost, 127.0.0.1,
    /// [::1]) or `*`. The hub's own origin is always allowed; clients that send no Origin
    /// (agents, curl) are not affected.
    #[arg(
        long,
        env = "QUORUM_ALLOWED_ORIGINS",
        default_value = "loopback",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Without --auth-secret, the only Host names served besides loopback names and
    /// addresses and the listen address, comma-separated (e.g. hub.internal), or `*`.
    /// Other hosts get 403, so a page on a name rebound to this machine reaches nothing.
    #[arg(long, env = "QUORUM_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Most concurrent WebSocket sessions on this hub; the next upgrade gets 503.
    #[arg(long, env = "QUORUM_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// Largest JSON-RPC message in bytes (WebSocket message or HTTP body); a larger
    /// WebSocket message closes the session with 1009.
    #[arg(long, env = "QUORUM_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Calls one session, or one POST /rpc client address, may make per window, all
    /// methods together, invalid requests, pings and pongs included (COUNT/WINDOW or off).
    /// Calls beyond it get -32000; a session that sends twice as many is closed (1008).
    #[arg(long, env = "QUORUM_SESSION_RATE_LIMIT", default_value = "200/1s")]
    pub session_rate_limit: RateLimit,

    /// Messages a session may have waiting to be written before it is closed as a slow
    /// consumer (1008).
    #[arg(long, env = "QUORUM_SESSION_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub session_queue: u64,

    /// Bytes held for a session's outbound, each message at its whole length until it is
    /// written: the session's next call waits while its replies hold half of it (one reply
    /// may pass it), and a pushed event that finds no room closes the session as a slow
    /// consumer (1008).
    #[arg(long, env = "QUORUM_SESSION_QUEUE_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..=1024 * 1024 * 1024))]
    pub session_queue_bytes: u64,

    /// How often the hub pings each WebSocket; a session that leaves two pings unanswered
    /// is closed and its instance released. Any connection (an SSE stream too) whose peer
    /// leaves sent bytes unacknowledged, or its window closed, for two intervals is dropped.
    #[arg(long, env = "QUORUM_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub push: PushConfig,
}

/// How the hub signs Web Push messages (VAPID, RFC 8292).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PushConfig {
    /// Who push services contact about this hub's messages: a mailto: or https: URL. A hub
    /// with --auth-secret sends Web Push only when given one.
    #[arg(long = "vapid-subject", env = "QUORUM_VAPID_SUBJECT")]
    pub vapid_subject: Option<String>,

    /// File holding the VAPID private key (base64url), made at first start if missing.
    /// Without it, the hubs on a keyspace share a key kept in Redis.
    #[arg(long = "vapid-key-file", env = "QUORUM_VAPID_KEY_FILE")]
    pub vapid_key_file: Option<PathBuf>,
}

/// How the hub delivers decisions to webhook endpoints.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    /// Webhook endpoints to add at start, if the keyspace has none with the same URL
    /// (repeatable, or comma-separated); they are signed with --webhook-secret-file.
    #[arg(long = "webhook", env = "QUORUM_WEBHOOKS", value_delimiter = ',')]
    pub urls: Vec<String>,

    /// File holding the `whsec_` secret that endpoints given with --webhook are signed with.
    #[arg(long = "webhook-secret-file", env = "QUORUM_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,

    /// Longest one delivery attempt may take (connecting, sending, and the answer's head).
    #[arg(long = "webhook-timeout", env = "QUORUM_WEBHOOK_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// When each attempt at a delivery is made, after the one before it (the first after
    /// the event); after the last, the delivery is given up and recorded so.
    #[arg(
        long = "webhook-retry-schedule",
        env = "QUORUM_WEBHOOK_RETRY_SCHEDULE",
        default_value = "0s,5s,5m,30m,2h,5h,10h,10h"
    )]
    pub retry_schedule: RetrySchedule,

    /// An endpoint whose every attempt has failed for this long is disabled.
    #[arg(long = "webhook-disable-after", env = "QUORUM_WEBHOOK_DISABLE_AFTER", default_value = "5d", value_parser = parse_duration)]
    pub disable_after: Duration,

    /// Deliver webhooks and Web Push also to loopback, private, link-local and unspecified
    /// addresses (refused otherwise, checked on the address connected to), and Web Push to
    /// plain-http push services on loopback (for tests).
    #[arg(long = "webhook-allow-private", env = "QUORUM_WEBHOOK_ALLOW_PRIVATE")]
    pub allow_private: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret_file: None,
            timeout: Duration::from_secs(15),
            retry_schedule: RetrySchedule::standard(),
            disable_after: Duration::from_secs(5 * 86_400),
            allow_private: false,
        }
    }
}

/// Most attempts a retry schedule may list.
pub const MAX_RETRY_SCHEDULE: usize = 32;

/// When each attempt at a webhook delivery is made, each after the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// The Standard Webhooks schedule: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h,
    /// 10 h and 10 h.
    pub fn standard() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self(vec![
            Duration::ZERO,
            Duration::from_secs(5),
            minutes(5),
            minutes(30),
            minutes(120),
            minutes(300),
            minutes(600),
            minutes(600),
        ])
    }

    /// How long after attempt `made` (from 1) the next one is due; `None` when that was
    /// the last.
    pub fn after(&self, made: u32) -> Option<Duration> {
        self.0.get(made as usize).copied()
    }

    /// Attempts the schedule makes at most.
    pub fn attempts(&self) -> usize {
        self.0.len()
    }
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let steps = s
            .split(',')
            .map(|step| parse_duration(step.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if steps.len() > MAX_RETRY_SCHEDULE {
            return Err(format!(
                "a retry schedule lists at most {MAX_RETRY_SCHEDULE} attempts (got {})",
                steps.len()
            ));
        }
        Ok(Self(steps))
    }
}

/// A vote rate limit: at most `max` votes per instance in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// 0 means no limit.
    pub max: u32,
    pub window: Duration,
}

impl RateLimit {
    pub const OFF: RateLimit = RateLimit {
        max: 0,
        window: Duration::ZERO,
    };

    pub fn is_off(&self) -> bool {
        self.max == 0
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateLimit::OFF);
        }
        let (max, window) = s
            .split_once('/')
            .ok_or_else(|| format!("expected COUNT/WINDOW such as 50/60s, or off (got {s:?})"))?;
        let max: u32 = max
            .trim()
            .parse()
            .map_err(|_| format!("bad vote count {max:?} in {s:?}"))?;
        let window = parse_duration(window.trim())?;
        if max == 0 || window.is_zero() {
            return Err(format!(
                "count and window must be above zero in {s:?} (use off to disable)"
            ));
        }
        Ok(RateLimit { max, window })
    }
}

/// Parses a duration written as a number and a unit: `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 5m (got {s:?})"))?;
    let seconds = |per_unit: u64| {
        n.checked_mul(per_unit)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?} is too long"))
    };
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => seconds(60)?,
        "h" => seconds(3600)?,
        "d" => seconds(86_400)?,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    Ok(duration)
}

/// Parses `--max-open`: a duration within the range a vote's `closeAfterMs` may take.
fn parse_max_open(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    let ms = duration.as_millis() as u64;
    let range = crate::decision::MIN_CLOSE_AFTER_MS..=crate::decision::MAX_CLOSE_AFTER_MS;
    if range.contains(&ms) {
        Ok(duration)
    } else {
        Err(format!("expected a duration from 100ms to 7d (got {s:?})"))
    }
}

/// Shortest `--decision-retention`: on a cluster it is also how long a decision's logged
/// mark lives, which must outlast the time between logging its event and recording the
/// event id beside the decision (milliseconds, or the sweep's period and grace after a
/// failed step), so that logging it again finds the event it was logged with.
pub const MIN_DECISION_RETENTION: Duration = Duration::from_secs(10);
/// Longest `--decision-retention` (ten years).
pub const MAX_DECISION_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `--decision-retention`: from [`MIN_DECISION_RETENTION`] to
/// [`MAX_DECISION_RETENTION`].
fn parse_retention(s: &str) -> Result<Duration, String> {
    let duration = parse_duration(s)?;
    if (MIN_DECISION_RETENTION..=MAX_DECISION_RETENTION).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!("expected a duration from 10s to 3650d (got {s:?})"))
    }
}

/// Longest `--instance-ttl`, in seconds (one day).
pub const MAX_INSTANCE_TTL_SECS: u64 = 86_400;

/// Parses `--instance-ttl`: whole seconds from 1 to [`MAX_INSTANCE_TTL_SECS`].
fn parse_ttl_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs) if (1..=MAX_INSTANCE_TTL_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "expected whole seconds from 1 to {MAX_INSTANCE_TTL_SECS} (got {s:?})"
        )),
    }
}

impl Config {
    /// A configuration for `redis_url` with every other setting at its default;
    /// handy for embedding and tests.
    pub fn with_redis(redis_url: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            redis_url: Some(redis_url.into()),
            data_dir: PathBuf::from("./data"),
            redis_start_timeout: crate::managed_redis::START_TIMEOUT,
            web_dir: PathBuf::from("./web-demo"),
            instance_ttl: Duration::from_secs(30),
            vote_rate_limit: RateLimit {
                max: 50,
                window: Duration::from_secs(60),
            },
            vote_timeout: Duration::from_secs(5),
            wait_replicas: 0,
            max_open: Duration::from_millis(crate::decision::MAX_CLOSE_AFTER_MS),
            decision_retention: Duration::from_secs(7 * 86_400),
            policy_file: None,
            require_policy: false,
            breaker_failures: crate::breaker::DEFAULT_FAILURES,
            breaker_open: crate::breaker::DEFAULT_OPEN_FOR,
            auth_secret: None,
            allowed_origins: vec!["loopback".to_owned()],
            allowed_hosts: Vec::new(),
            max_sessions: 10_000,
            max_message_bytes: 64 * 1024,
            session_rate_limit: RateLimit {
                max: 200,
                window: Duration::from_secs(1),
            },
            session_queue: 1024,
            session_queue_bytes: 1024 * 1024,
            ping_interval: Duration::from_secs(20),
            webhooks: WebhookConfig::default(),
            push: PushConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rate_limits_parse_as_written() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert_eq!(
            "50/60s".parse(),
            Ok(RateLimit {
                max: 50,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!("off".parse(), Ok(RateLimit::OFF));
        assert!("0/60s".parse::<RateLimit>().is_err());
        assert!("50".parse::<RateLimit>().is_err());
    }

    #[test]
    fn a_retry_schedule_lists_the_wait_before_each_attempt() {
        let schedule: RetrySchedule = "0s, 200ms,1s".parse().unwrap();
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.after(1), Some(Duration::from_millis(200)));
        assert_eq!(schedule.after(2), Some(Duration::from_secs(1)));
        assert_eq!(schedule.after(3), None);
        assert_eq!(
            "0s,5s,5m,30m,2h,5h,10h,10h".parse::<RetrySchedule>(),
            Ok(RetrySchedule::standard())
        );
        assert!("0s,5x".parse::<RetrySchedule>().is_err());
        assert!(vec!["1s"; 33].join(",").parse::<RetrySchedule>().is_err());
    }
}
