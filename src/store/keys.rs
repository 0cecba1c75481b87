//! Redis key and pub/sub channel names: the one place in the hub that spells them.
//!
//! Decision keys carry the decision as a hash tag (`{name}`), so all of one decision's keys
//! live in one Redis Cluster slot and one script can touch them all; instance keys do the
//! same with the instance id.

/// Stream: every decision event, capped (see `DECISION_STREAM_CAP`).
pub(crate) const DECISION_EVENTS_STREAM: &str = "cb:stream:quorum.decision.made";
/// Channel the vote script publishes each decision event on.
pub(crate) const DECISION_EVENTS_CHANNEL: &str = "cb:events:quorum.decision.made";
pub(crate) const VOTE_RECORDED_CHANNEL: &str = "cb:events:quorum.vote.recorded";
pub(crate) const INSTANCE_REGISTERED_CHANNEL: &str = "cb:events:instance.registered";
pub(crate) const INSTANCE_UNREGISTERED_CHANNEL: &str = "cb:events:instance.unregistered";
/// Prefix of every event channel; the rest of the name is the event's method name.
pub(crate) const EVENT_CHANNEL_PREFIX: &str = "cb:events:";
/// Sorted set: decision name -> time its first vote was recorded (ms).
pub(crate) const DECISIONS_INDEX: &str = "cb:decisions";
/// The decisions index `redis-benchmark` writes when `bench suite` measures the vote
/// script: the same work as the hub's, kept out of `system.get_state`.
pub(crate) const BENCH_DECISIONS_INDEX: &str = "cb:bench:decisions";
/// Sorted set: instance id -> last time it was registered or refreshed (ms).
pub(crate) const INSTANCES_INDEX: &str = "cb:instances";
/// Sorted set, every score 0: the same instance ids in byte order, so that
/// `system.get_state` pages through them in an order that heartbeats do not change.
pub(crate) const INSTANCES_BY_ID: &str = "cb:instances:by-id";

/// Channels of the events sessions may subscribe to (dashboards). A hub listens on them
/// only while one of its sessions has subscribed.
pub(crate) const DASHBOARD_CHANNELS: [&str; 3] = [
    VOTE_RECORDED_CHANNEL,
    INSTANCE_REGISTERED_CHANNEL,
    INSTANCE_UNREGISTERED_CHANNEL,
];

/// List: an instance's most recent recorded vote times (ms), for the rate limit.
pub(crate) fn vote_rate(id: &str) -> String {
    format!("cb:ratelimit:{{{id}}}:votes")
}

/// One part (`votes`, `tally`, `result`, `metadata`, `ballots`) of a decision.
pub(crate) fn decision(name: &str, part: &str) -> String {
    format!("cb:quorum:{{{name}}}:{part}")
}

/// Hash: an instance's registration; expires after the instance TTL.
pub(crate) fn instance(id: &str) -> String {
    format!("cb:instance:{{{id}}}")
}

/// String: the owner tag of the session holding an instance; expires after the instance TTL.
pub(crate) fn owner(id: &str) -> String {
    format!("cb:instance:{{{id}}}:owner")
}
