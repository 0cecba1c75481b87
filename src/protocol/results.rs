//! The results of the methods, as the hub sends them and peers read them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::EventId;

/// Result of `system.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub registered: bool,
    pub instance_id: String,
    /// How long the registration lives without a heartbeat (an open session keeps its
    /// own instance alive).
    pub ttl_seconds: u64,
}

/// Result of `system.heartbeat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Alive {
    /// False when the instance is not registered (anymore).
    pub alive: bool,
}

/// Result of `system.unregister`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unregistered {
    /// False when there was no registration to remove.
    pub unregistered: bool,
}

/// Why a vote was not recorded, when that is a result rather than an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotVoted {
    /// This instance voted on the decision before; `recordedValue` says how.
    AlreadyVoted,
    /// The decision was made before this vote.
    Decided,
    /// The hub's circuit breaker is open: Redis was not called.
    CircuitOpen,
    /// The decision's deadline passed without quorum: it is closed.
    Expired,
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
            NotVoted::Expired => "expired",
            NotVoted::Unknown => "unknown",
        }
    }
}

/// Result of `system.quorum.vote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
/// Fields go on the wire in this order, whatever the outcome.
pub struct VoteReply {
    /// Whether this call recorded the vote.
    pub voted: bool,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    /// Votes recorded on the decision (absent when Redis was not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotVoted>,
    /// The value this instance's earlier vote recorded (with `already_voted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_value: Option<String>,
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

    /// Not recorded: the decision expired (its deadline passed without quorum).
    pub fn expired() -> Self {
        Self {
            voted: false,
            reason: Some(NotVoted::Expired),
            recorded_value: None,
            quorum_reached: false,
            final_decision: None,
            vote_count: None,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStatus {
    pub decision: String,
    #[serde(default)]
    pub state: DecisionState,
    pub total_instances: u64,
    pub quorum: u64,
    pub vote_count: u64,
    /// Count per value, in the order each value first received a vote.
    #[schemars(with = "std::collections::BTreeMap<String, u64>")]
    pub tally: serde_json::Map<String, serde_json::Value>,
    pub votes: Vec<RecordedVote>,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    /// The decision's deadline (ms), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<u64>,
    /// When the decision expired (ms), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<u64>,
    /// The policy the decision opened under, when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::policy::DecisionPolicy>,
}

/// Where a decision is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecisionState {
    /// Taking votes.
    #[default]
    Open,
    /// Quorum was reached: the result is final.
    Decided,
    /// The deadline passed without quorum: closed, no result.
    Expired,
}

impl DecisionState {
    /// The state of a decision with (or without) a result and an expiry time.
    pub fn of(decided: bool, expired: bool) -> Self {
        match (decided, expired) {
            (true, _) => DecisionState::Decided,
            (false, true) => DecisionState::Expired,
            (false, false) => DecisionState::Open,
        }
    }
}

/// One recorded vote in a decision's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedVote {
    pub instance_id: String,
    pub value: String,
    /// Arrival order within the decision, from 1.
    pub seq: u64,
}

/// Result of `system.get_state`: one page of instances and one of decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Registered instances, in `instanceId` order.
    pub instances: Vec<InstanceInfo>,
    /// Pass as `instancesAfter` for the next page of instances; `null` after the last.
    pub next_instances: Option<String>,
    /// Decisions, the most recently opened first.
    pub decisions: Vec<DecisionSummary>,
    /// Pass as `decisionsAfter` for the next page of decisions; `null` after the last.
    pub next_decisions: Option<DecisionCursor>,
    pub hub: HubInfo,
    /// The calling session; `null` over `POST /rpc`.
    pub session: Option<SessionInfo>,
}

/// Where a page of decisions ends: the last decision listed and when it was opened. An
/// opaque string on the wire (`<openedAt>:<decision>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionCursor {
    pub opened_at: u64,
    pub decision: String,
}

impl std::fmt::Display for DecisionCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.opened_at, self.decision)
    }
}

impl std::str::FromStr for DecisionCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (opened_at, decision) = s
            .split_once(':')
            .filter(|(at, name)| !name.is_empty() && at.len() <= 20)
            .ok_or_else(|| format!("{s:?} is not a cursor from nextDecisions"))?;
        Ok(Self {
            opened_at: opened_at
                .parse()
                .map_err(|_| format!("{s:?} is not a cursor from nextDecisions"))?,
            decision: decision.to_owned(),
        })
    }
}

wire_as_text!(DecisionCursor);
schema_as_text!(
    DecisionCursor,
    "DecisionCursor",
    super::pattern::CURSOR,
    "Where a page of decisions ends; pass it back as `decisionsAfter`."
);

/// A registered instance as listed by `system.get_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub instance_id: String,
    #[schemars(with = "Vec<String>")]
    pub roles: serde_json::Value,
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub metadata: serde_json::Value,
    /// `online` while a session or heartbeats keep it alive, `disconnected` after its
    /// session closed (until the TTL removes it).
    pub status: String,
    pub last_seen: u64,
}

/// A decision as listed by `system.get_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionSummary {
    pub decision: String,
    #[serde(default)]
    pub state: DecisionState,
    pub total_instances: u64,
    pub quorum: u64,
    pub vote_count: u64,
    pub quorum_reached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    pub opened_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closes_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<u64>,
    /// The pattern of the policy the decision opened under, when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Its threshold as the policy wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// The role its electorate was drawn from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub electorate_role: Option<String>,
}

/// The answering hub, as `system.get_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The instance this session registered as.
    pub instance_id: Option<String>,
}

/// State of a hub's circuit breaker in front of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Result of `system.subscribe` and `system.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Subscribed {
    /// Every pattern the session is subscribed to now.
    pub subscribed: Vec<String>,
    /// With `since`: how many decision events were replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<usize>,
}

/// Result of `system.auth.refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refreshed {
    /// When the session's token now expires (its `exp`), in ms since the Unix epoch.
    pub expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Compared as text: the field order is part of what is checked.
        let wire = [
            (
                VoteReply::recorded(1),
                r#"{"voted":true,"quorumReached":false,"voteCount":1}"#,
            ),
            (
                VoteReply::decided_now(2, "yes".into()),
                r#"{"voted":true,"quorumReached":true,"finalDecision":"yes","voteCount":2}"#,
            ),
            (
                VoteReply::circuit_open(),
                r#"{"voted":false,"quorumReached":false,"reason":"circuit_open"}"#,
            ),
            (
                VoteReply::already_voted(2, "no".into(), Some("yes".into())),
                r#"{"voted":false,"quorumReached":true,"finalDecision":"yes","voteCount":2,"reason":"already_voted","recordedValue":"no"}"#,
            ),
        ];
        for (reply, text) in wire {
            assert_eq!(serde_json::to_string(&reply).unwrap(), text);
        }
    }
}
