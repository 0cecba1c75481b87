//! The wire contract shared by the hub and its peers: method and event names, typed
//! params, results and event payloads. The hub serializes these types; the client, the
//! tools and the bench deserialize the same ones.
//!
//! - [`frame`]: JSON-RPC 2.0 framing: parsing frames, encoding replies and notifications.
//! - [`request`]: a call's method and params validated into a typed [`Request`].
//! - [`peer`]: the client side: one request/response helper over a WebSocket.

pub mod frame;
pub mod peer;
pub mod request;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use request::Request;

/// Method names.
pub mod method {
    pub const REGISTER: &str = "system.register";
    pub const HEARTBEAT: &str = "system.heartbeat";
    pub const UNREGISTER: &str = "system.unregister";
    pub const VOTE: &str = "system.quorum.vote";
    pub const STATUS: &str = "system.quorum.status";
    pub const GET_STATE: &str = "system.get_state";
    pub const SUBSCRIBE: &str = "system.subscribe";
    pub const UNSUBSCRIBE: &str = "system.unsubscribe";

    /// Every method the hub serves.
    pub const ALL: [&str; 8] = [
        REGISTER,
        HEARTBEAT,
        UNREGISTER,
        VOTE,
        STATUS,
        GET_STATE,
        SUBSCRIBE,
        UNSUBSCRIBE,
    ];
}

/// Notification (event) names.
pub mod event {
    /// A decision was fixed; pushed to every session.
    pub const DECISION_MADE: &str = "quorum.decision.made";
    /// A vote was recorded (dashboards subscribe to it).
    pub const VOTE_RECORDED: &str = "quorum.vote.recorded";
    pub const INSTANCE_REGISTERED: &str = "instance.registered";
    pub const INSTANCE_UNREGISTERED: &str = "instance.unregistered";
    /// A replay could not return every missed decision event.
    pub const EVENTS_INCOMPLETE: &str = "system.events.incomplete";

    /// Events a session may subscribe to. `quorum.decision.made` reaches every session
    /// whether it subscribes or not.
    pub const SUBSCRIBABLE: [&str; 4] = [
        DECISION_MADE,
        VOTE_RECORDED,
        INSTANCE_REGISTERED,
        INSTANCE_UNREGISTERED,
    ];

    /// Whether an event name matches a subscription pattern: the exact name, or a prefix
    /// followed by `.*`.
    pub fn pattern_matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_suffix(".*") {
            Some(prefix) => {
                name.len() > prefix.len() + 1
                    && name.starts_with(prefix)
                    && name.as_bytes()[prefix.len()] == b'.'
            }
            None => name == pattern,
        }
    }
}

// ---- event ids ----

/// The id of a decision event in the hub's event log, `<ms>-<seq>`; ordered as Redis
/// orders stream ids. On the wire it is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// The id just before this one, for inclusive ranges that must stop short of it.
    pub fn predecessor(self) -> EventId {
        match (self.ms, self.seq) {
            (0, 0) => EventId::ZERO,
            (ms, 0) => EventId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            (ms, seq) => EventId { ms, seq: seq - 1 },
        }
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;

    /// Accepts `<ms>-<seq>` or a bare `<ms>` (as Redis does), nothing else.
    fn from_str(s: &str) -> Result<Self, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        match (number(ms), number(seq)) {
            (Some(ms), Some(seq)) => Ok(EventId { ms, seq }),
            _ => Err(format!(
                "{s:?} is not an event id (expected <ms>-<seq>, e.g. 1764230000000-0)"
            )),
        }
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---- params (what peers send) ----

/// Params of `system.register`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterParams<'a> {
    pub instance_id: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub roles: &'a [String],
}

/// Params of `system.quorum.vote`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteParams<'a> {
    pub instance_id: &'a str,
    pub decision: &'a str,
    pub value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_instances: Option<u64>,
}

/// Params of `system.quorum.status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusParams<'a> {
    pub decision: &'a str,
}

/// Params of `system.subscribe` and `system.unsubscribe`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscribeParams<'a> {
    pub events: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<EventId>,
}

/// Params of a method that takes none.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NoParams {}

// ---- results ----

/// Result of `system.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub registered: bool,
    pub instance_id: String,
    /// How long the registration lives without a heartbeat (an open session keeps its
    /// own instance alive).
    pub ttl_seconds: u64,
}

/// Result of `system.heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// False when the instance is not registered (anymore).
    pub alive: bool,
}

/// Result of `system.unregister`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unregistered {
    /// False when there was no registration to remove.
    pub unregistered: bool,
}

/// Why a vote was not recorded, when that is a result rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotVoted {
    /// This instance voted on the decision before; `recordedValue` says how.
    AlreadyVoted,
    /// The decision was made before this vote.
    Decided,
    /// The hub's circuit breaker is open: Redis was not called.
    CircuitOpen,
    /// A reason this version does not know.
    #[serde(other)]
    Unknown,
}

impl NotVoted {
    pub fn as_str(self) -> &'static str {
        match self {
            NotVoted::AlreadyVoted => "already_voted",
            NotVoted::Decided => "decided",
            NotVoted::CircuitOpen => "circuit_open",
            NotVoted::Unknown => "unknown",
        }
    }
}

/// Result of `system.quorum.vote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteReply {
    /// Whether this call recorded the vote.
    pub voted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotVoted>,
    /// The value this instance's earlier vote recorded (with `already_voted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_value: Option<String>,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    /// Votes recorded on the decision (absent when Redis was not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_count: Option<u64>,
}

impl VoteReply {
    /// Recorded; the decision is still open.
    pub fn recorded(vote_count: u64) -> Self {
        Self::voted(vote_count, None)
    }

    /// Recorded, and this vote fixed the decision.
    pub fn decided_now(vote_count: u64, final_decision: String) -> Self {
        Self::voted(vote_count, Some(final_decision))
    }

    fn voted(vote_count: u64, final_decision: Option<String>) -> Self {
        Self {
            voted: true,
            reason: None,
            recorded_value: None,
            quorum_reached: final_decision.is_some(),
            final_decision,
            vote_count: Some(vote_count),
        }
    }

    /// Not recorded: the instance voted before (and the decision may be made).
    pub fn already_voted(
        vote_count: u64,
        recorded_value: String,
        final_decision: Option<String>,
    ) -> Self {
        Self {
            voted: false,
            reason: Some(NotVoted::AlreadyVoted),
            recorded_value: Some(recorded_value),
            quorum_reached: final_decision.is_some(),
            final_decision,
            vote_count: Some(vote_count),
        }
    }

    /// Not recorded: the decision was made before.
    pub fn decided(vote_count: u64, final_decision: String) -> Self {
        Self {
            voted: false,
            reason: Some(NotVoted::Decided),
            recorded_value: None,
            quorum_reached: true,
            final_decision: Some(final_decision),
            vote_count: Some(vote_count),
        }
    }

    /// Not recorded: the circuit breaker is open, Redis was not called.
    pub fn circuit_open() -> Self {
        Self {
            voted: false,
            reason: Some(NotVoted::CircuitOpen),
            recorded_value: None,
            quorum_reached: false,
            final_decision: None,
            vote_count: None,
        }
    }

    /// What happened, in one word: `recorded`, `decided_now`, or the reason it was not
    /// recorded (`already_voted`, `decided`, `circuit_open`).
    pub fn outcome(&self) -> &'static str {
        match (self.voted, self.reason) {
            (true, _) if self.quorum_reached => "decided_now",
            (true, _) => "recorded",
            (false, Some(reason)) => reason.as_str(),
            (false, None) => "not_voted",
        }
    }
}

/// Result of `system.quorum.status`: a decision's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStatus {
    pub decision: String,
    pub total_instances: u64,
    pub quorum: u64,
    pub vote_count: u64,
    /// Count per value, in the order each value first received a vote.
    pub tally: serde_json::Map<String, serde_json::Value>,
    pub votes: Vec<RecordedVote>,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
}

/// One recorded vote in a decision's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedVote {
    pub instance_id: String,
    pub value: String,
    /// Arrival order within the decision, from 1.
    pub seq: u64,
}

/// Result of `system.get_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Registered instances, most recently seen first.
    pub instances: Vec<InstanceInfo>,
    /// The most recently opened decisions, newest first.
    pub decisions: Vec<DecisionSummary>,
    pub hub: HubInfo,
    /// The calling session; `null` over `POST /rpc`.
    pub session: Option<SessionInfo>,
}

/// A registered instance as listed by `system.get_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub instance_id: String,
    pub roles: serde_json::Value,
    pub metadata: serde_json::Value,
    /// `online` while a session or heartbeats keep it alive, `disconnected` after its
    /// session closed (until the TTL removes it).
    pub status: String,
    pub last_seen: u64,
}

/// A decision as listed by `system.get_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionSummary {
    pub decision: String,
    pub total_instances: u64,
    pub quorum: u64,
    pub vote_count: u64,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    pub opened_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
}

/// The answering hub, as `system.get_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubInfo {
    pub hub_id: String,
    /// Open WebSocket sessions on this hub.
    pub sessions: usize,
    pub uptime_seconds: u64,
    pub breaker: BreakerState,
    /// The last decision event this hub delivered.
    pub last_event_id: Option<EventId>,
    pub version: String,
}

/// The calling session, as `system.get_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The instance this session registered as.
    pub instance_id: Option<String>,
}

/// State of a hub's circuit breaker in front of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Result of `system.subscribe` and `system.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Every pattern the session is subscribed to now.
    pub subscribed: Vec<String>,
    /// With `since`: how many decision events were replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<usize>,
}

// ---- events ----

/// `quorum.decision.made`: a decision was fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionEvent {
    pub decision: String,
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
    /// Unique and identical for every observer; resume after it with `?lastEventId=`.
    pub event_id: EventId,
    pub timestamp: u64,
}

/// `quorum.vote.recorded`: one vote was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoteRecorded {
    pub decision: String,
    pub instance_id: String,
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
}

/// `instance.registered`: an instance registered or refreshed its registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceRegistered {
    pub instance_id: String,
    pub roles: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    pub last_seen: u64,
}

/// `instance.unregistered`: an instance was removed, or its session closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceUnregistered {
    pub instance_id: String,
    /// `unregistered` or `disconnected`.
    pub reason: String,
}

/// `system.events.incomplete`: some decision events after `since` are no longer kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsIncomplete {
    pub since: EventId,
    pub message: String,
}

impl EventsIncomplete {
    pub fn after(since: EventId) -> Self {
        Self {
            since,
            message: format!(
                "some decision events after {since} are no longer kept; the ones that follow \
                 are all that remain, so call system.get_state for the current state of every \
                 decision"
            ),
        }
    }
}

/// A notification as a peer receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    DecisionMade(DecisionEvent),
    EventsIncomplete(EventsIncomplete),
    VoteRecorded(VoteRecorded),
    InstanceRegistered(InstanceRegistered),
    InstanceUnregistered(InstanceUnregistered),
    /// An event this version does not know, or one whose params did not parse.
    Other {
        method: String,
        params: serde_json::Value,
    },
}

impl Notification {
    /// Types a notification by its method name.
    pub fn parse(method: String, params: serde_json::Value) -> Self {
        fn typed<T: serde::de::DeserializeOwned>(
            params: &serde_json::Value,
            wrap: fn(T) -> Notification,
        ) -> Option<Notification> {
            T::deserialize(params).ok().map(wrap)
        }
        let parsed = match method.as_str() {
            event::DECISION_MADE => typed(&params, Notification::DecisionMade),
            event::EVENTS_INCOMPLETE => typed(&params, Notification::EventsIncomplete),
            event::VOTE_RECORDED => typed(&params, Notification::VoteRecorded),
            event::INSTANCE_REGISTERED => typed(&params, Notification::InstanceRegistered),
            event::INSTANCE_UNREGISTERED => typed(&params, Notification::InstanceUnregistered),
            _ => None,
        };
        parsed.unwrap_or(Notification::Other { method, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_like_redis_stream_ids() {
        let a: EventId = "1764230000000-0".parse().unwrap();
        let b: EventId = "1764230000000-1".parse().unwrap();
        let c: EventId = "1764230000001".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.predecessor(), a);
        assert_eq!(
            c.predecessor(),
            EventId {
                ms: 1764230000000,
                seq: u64::MAX
            }
        );
        assert_eq!(a.to_string(), "1764230000000-0");
        for bad in [
            "",
            "-",
            "1-",
            "x-1",
            "1-2-3",
            "+",
            "1 -2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_ids_are_strings_on_the_wire() {
        let id: EventId = "1764230000000-7".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"1764230000000-7\"");
        assert_eq!(
            serde_json::from_str::<EventId>("\"1764230000000-7\"").unwrap(),
            id
        );
        assert!(serde_json::from_str::<EventId>("17").is_err());
    }

    #[test]
    fn vote_replies_name_their_outcome_and_keep_their_shape() {
        let cases = [
            (VoteReply::recorded(1), "recorded"),
            (VoteReply::decided_now(2, "yes".into()), "decided_now"),
            (
                VoteReply::already_voted(2, "no".into(), None),
                "already_voted",
            ),
            (VoteReply::decided(3, "yes".into()), "decided"),
            (VoteReply::circuit_open(), "circuit_open"),
        ];
        for (reply, outcome) in cases {
            assert_eq!(reply.outcome(), outcome);
            let json = serde_json::to_value(&reply).unwrap();
            assert_eq!(serde_json::from_value::<VoteReply>(json).unwrap(), reply);
        }
        assert_eq!(
            serde_json::to_value(VoteReply::circuit_open()).unwrap(),
            serde_json::json!({"voted": false, "quorumReached": false, "reason": "circuit_open"})
        );
    }

    #[test]
    fn unknown_notifications_are_kept_not_dropped() {
        let n = Notification::parse("future.event".into(), serde_json::json!({"x": 1}));
        assert!(matches!(n, Notification::Other { ref method, .. } if method == "future.event"));
    }
}
