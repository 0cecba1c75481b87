//! Decisions and ballots: validated names and values, the quorum rule, and vote outcomes.

use serde::Serialize;

use crate::error::Error;
use crate::instance::{InstanceId, check_name};

/// Longest decision name, in characters.
pub const MAX_DECISION_LEN: usize = 200;
/// Longest vote value, in characters.
pub const MAX_VALUE_LEN: usize = 256;
/// Largest `totalInstances` a decision may expect.
pub const MAX_TOTAL_INSTANCES: u64 = 10_000;
/// `totalInstances` used when the first vote does not state one.
pub const DEFAULT_TOTAL_INSTANCES: u64 = 3;

/// Votes needed to decide among `total_instances`: a strict majority.
pub fn quorum_for(total_instances: u64) -> u64 {
    total_instances / 2 + 1
}

/// The name of a decision topic. It becomes part of Redis key names, so it has no
/// whitespace, control characters or braces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DecisionName(String);

impl DecisionName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, Error> {
        check_name(field, raw, MAX_DECISION_LEN)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an instance votes for: any text of 1-256 characters without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct VoteValue(String);

impl VoteValue {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, Error> {
        let len = raw.chars().count();
        if len == 0 || len > MAX_VALUE_LEN {
            return Err(Error::invalid(
                field,
                format!("{field} must be 1-{MAX_VALUE_LEN} characters (got {len})"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(Error::invalid(
                field,
                format!("{field} must not contain control characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a stated `totalInstances`.
pub fn parse_total_instances(field: &'static str, raw: u64) -> Result<u64, Error> {
    if (1..=MAX_TOTAL_INSTANCES).contains(&raw) {
        Ok(raw)
    } else {
        Err(Error::invalid(
            field,
            format!("{field} must be an integer from 1 to {MAX_TOTAL_INSTANCES} (got {raw})"),
        ))
    }
}

/// One instance's vote on one decision.
#[derive(Debug, Clone)]
pub struct Ballot {
    pub instance: InstanceId,
    pub decision: DecisionName,
    pub value: VoteValue,
    /// `None` when the caller left it to the decision (or to the default for a new one).
    pub total_instances: Option<u64>,
}

/// What the vote script did with a ballot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Recorded; the decision is still open.
    Recorded { vote_count: u64 },
    /// Recorded, and this vote reached the quorum and fixed the result.
    DecidedNow {
        vote_count: u64,
        final_decision: String,
    },
    /// Not recorded: this instance already voted on the decision.
    AlreadyVoted {
        vote_count: u64,
        recorded_value: String,
        final_decision: Option<String>,
    },
    /// Not recorded: the decision was already made.
    Decided {
        vote_count: u64,
        final_decision: String,
    },
    /// Not recorded: the decision was opened with another `totalInstances`.
    TotalMismatch { opened_with: u64 },
    /// Not recorded: the instance used up its votes for the current window.
    RateLimited { retry_after_ms: u64 },
}

/// The audit trail of one decision, as `system.quorum.status` reports it.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
}

/// One recorded vote in a decision's audit trail.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedVote {
    pub instance_id: String,
    pub value: String,
    /// Arrival order within the decision, from 1.
    pub seq: u64,
}

/// A decision as listed by `system.get_state`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionSummary {
    pub decision: String,
    pub total_instances: u64,
    pub quorum: u64,
    pub vote_count: u64,
    pub quorum_reached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_decision: Option<String>,
    pub opened_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<u64>,
}

/// The `quorum.decision.made` event, exactly as the vote script publishes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionEvent {
    pub decision: String,
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
    pub event_id: String,
    pub timestamp: u64,
}

/// The decision event published by the vote script, parsed.
pub fn parse_decision_event(payload: &[u8]) -> Result<DecisionEvent, Error> {
    serde_json::from_slice(payload).map_err(|e| Error::Internal(format!("bad decision event: {e}")))
}

/// The id of a decision event in the Redis stream, `<ms>-<seq>`; ordered as Redis orders it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_table_from_the_method_description() {
        let table = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (total, quorum) in table {
            assert_eq!(quorum_for(total), quorum, "totalInstances={total}");
        }
    }

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
    fn values_allow_any_text_but_control_characters() {
        assert!(VoteValue::parse("value", "approve {x} ; -- \"'").is_ok());
        assert!(VoteValue::parse("value", "a\nb").is_err());
        assert!(VoteValue::parse("value", "").is_err());
        assert!(VoteValue::parse("value", &"é".repeat(256)).is_ok());
        assert!(VoteValue::parse("value", &"é".repeat(257)).is_err());
    }
}
