//! Prometheus metrics of one hub, served at `GET /metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `outcome` label of `quorum_votes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

/// The `part` label of `quorum_session_footprint_bytes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Part {
    pub part: &'static str,
}

/// Every metric the hub keeps. Cloning shares the underlying values.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub sessions_open: Gauge,
    pub registrations: Counter,
    /// Votes answered, by outcome: recorded, already_voted, decided, rate_limited,
    /// circuit_open, error.
    pub votes: Family<Outcome, Counter>,
    /// Decisions fixed by a vote that this hub carried.
    pub decisions_made: Counter,
    pub vote_latency: Histogram,
    /// Decision events queued to sessions (one per session per event).
    pub events_delivered: Counter,
    /// Of those, the ones written straight into the socket by the delivering task.
    pub events_written_direct: Counter,
    /// Events that found a session's queue full (the session is then closed).
    pub events_dropped: Counter,
    pub slow_consumer_closes: Counter,
    /// Dashboard events (`quorum.vote.recorded`, `instance.*`) not passed on: the hub's
    /// backlog of them was full, or a subscriber's queue had no room to spare for them.
    pub dashboard_events_dropped: Counter,
    /// Bytes held for the sessions' outbound (queued, being written, or left unflushed by a
    /// direct write), each session's in whole steps of 64 KiB (`HELD_STEP_BYTES` in
    /// `session/outbox.rs`).
    pub session_outbound_bytes: Gauge,
    /// The most bytes one session has held for its outbound at once, since the hub started.
    pub session_outbound_peak_bytes: Gauge,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Gauge,
    /// Redis calls that failed (connection errors, timeouts).
    pub redis_errors: Counter,
    /// Times the decision listener had to subscribe again.
    pub redis_resubscribes: Counter,
    /// Webhook delivery attempts this hub made, by outcome: delivered, gone, failed, error.
    pub webhook_attempts: Family<Outcome, Counter>,
    /// From a decision event to a webhook receiver's 2xx, per endpoint.
    pub webhook_delivery: Histogram,
    /// Webhook deliveries waiting (due, or being attempted), over every endpoint, as this
    /// hub last read them.
    pub webhook_pending: Gauge,
    /// What one idle WebSocket session holds, by part, as this build lays it out (see
    /// `session/footprint.rs`); set when the first session opens.
    pub session_footprint: Family<Part, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            sessions_open: Gauge::default(),
            registrations: Counter::default(),
            votes: Family::default(),
            decisions_made: Counter::default(),
            // 0.1 ms to about 3 s.
            vote_latency: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            events_delivered: Counter::default(),
            events_written_direct: Counter::default(),
            events_dropped: Counter::default(),
            slow_consumer_closes: Counter::default(),
            dashboard_events_dropped: Counter::default(),
            session_outbound_bytes: Gauge::default(),
            session_outbound_peak_bytes: Gauge::default(),
            breaker_state: Gauge::default(),
            redis_errors: Counter::default(),
            redis_resubscribes: Counter::default(),
            webhook_attempts: Family::default(),
            // 1 ms to about 19 h (the retry schedule reaches days).
            webhook_delivery: Histogram::new(exponential_buckets(0.001, 4.0, 14)),
            webhook_pending: Gauge::default(),
            session_footprint: Family::default(),
        }
    }

    pub fn vote(&self, outcome: &'static str) {
        self.votes.get_or_create(&Outcome { outcome }).inc();
    }

    /// The registry to encode, built around these metrics.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("quorum");
        r.register(
            "sessions_open",
            "Open WebSocket sessions on this hub",
            self.sessions_open.clone(),
        );
        r.register(
            "registrations",
            "Instance registrations handled",
            self.registrations.clone(),
        );
        r.register("votes", "Votes answered, by outcome", self.votes.clone());
        r.register(
            "decisions_made",
            "Decisions fixed by a vote this hub carried",
            self.decisions_made.clone(),
        );
        r.register(
            "vote_latency_seconds",
            "Time to answer a vote",
            self.vote_latency.clone(),
        );
        r.register(
            "events_delivered",
            "Decision events queued to sessions",
            self.events_delivered.clone(),
        );
        r.register(
            "events_written_direct",
            "Decision events written straight into a socket by the delivering task",
            self.events_written_direct.clone(),
        );
        r.register(
            "events_dropped",
            "Events that found a session's queue full",
            self.events_dropped.clone(),
        );
        r.register(
            "slow_consumer_closes",
            "Sessions closed for not reading",
            self.slow_consumer_closes.clone(),
        );
        r.register(
            "dashboard_events_dropped",
            "Dashboard events dropped because the hub or a subscriber could not keep up",
            self.dashboard_events_dropped.clone(),
        );
        r.register(
            "session_outbound_bytes",
            "Bytes held for the sessions' outbound (queued, being written or unflushed), each session's in whole 64 KiB",
            self.session_outbound_bytes.clone(),
        );
        r.register(
            "session_outbound_peak_bytes",
            "Most bytes one session has held for its outbound at once (queued, being written or unflushed)",
            self.session_outbound_peak_bytes.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            self.breaker_state.clone(),
        );
        r.register(
            "redis_errors",
            "Redis calls that failed",
            self.redis_errors.clone(),
        );
        r.register(
            "redis_resubscribes",
            "Times the event listener subscribed again",
            self.redis_resubscribes.clone(),
        );
        r.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome",
            self.webhook_attempts.clone(),
        );
        r.register(
            "webhook_delivery_seconds",
            "From a decision event to its webhook receiver's 2xx",
            self.webhook_delivery.clone(),
        );
        r.register(
            "webhook_pending",
            "Webhook deliveries waiting, over every endpoint",
            self.webhook_pending.clone(),
        );
        r.register(
            "session_footprint_bytes",
            "What one idle WebSocket session holds, by part, as this build lays it out",
            self.session_footprint.clone(),
        );
        r
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Renders the registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%err, "could not encode metrics");
    }
    text
}
