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

/// Shortest deadline a vote may give a decision (`closeAfterMs`).
pub const MIN_CLOSE_AFTER_MS: u64 = 100;
/// Longest deadline a vote may give a decision (`closeAfterMs`): 7 days.
pub const MAX_CLOSE_AFTER_MS: u64 = 604_800_000;

/// Checks a stated `closeAfterMs`.
pub fn parse_close_after(field: &'static str, raw: u64) -> Result<u64, Error> {
    if (MIN_CLOSE_AFTER_MS..=MAX_CLOSE_AFTER_MS).contains(&raw) {
        Ok(raw)
    } else {
        Err(Error::invalid(
            field,
            format!(
                "{field} must be an integer from {MIN_CLOSE_AFTER_MS} to {MAX_CLOSE_AFTER_MS} \
                 milliseconds (got {raw})"
            ),
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
    /// The deadline the vote gives a decision it opens, in ms after its first vote; `None`
    /// when the caller left it to the decision (or to `--max-open` for a new one).
    pub close_after_ms: Option<u64>,
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
    /// Not recorded: the decision was opened with another `closeAfterMs`.
    CloseMismatch { opened_with: u64 },
    /// Not recorded: the decision's deadline passed without quorum; it is closed.
    Expired { vote_count: u64 },
    /// Not recorded: the instance used up its votes for the current window.
    RateLimited { retry_after_ms: u64 },
    /// Not recorded: the decision's electorate does not hold the instance.
    NotInElectorate,
    /// Not recorded: the decision's policy does not allow the value.
    ValueRefused,
    /// Not recorded: a policy applies and the decision is not open yet; the vote is to be
    /// made again with the terms it opens under.
    NeedsOpening,
}

impl VoteOutcome {
    /// The `outcome` label of `quorum_votes_total` for this outcome: a vote that decided
    /// counts as recorded, and a ballot refused for stating another `totalInstances` or
    /// `closeAfterMs` as an error.
    pub fn label(&self) -> &'static str {
        match self {
            VoteOutcome::Recorded { .. } | VoteOutcome::DecidedNow { .. } => "recorded",
            VoteOutcome::AlreadyVoted { .. } => "already_voted",
            VoteOutcome::Decided { .. } => "decided",
            VoteOutcome::RateLimited { .. } => "rate_limited",
            VoteOutcome::Expired { .. } => "expired",
            VoteOutcome::TotalMismatch { .. }
            | VoteOutcome::CloseMismatch { .. }
            | VoteOutcome::NotInElectorate
            | VoteOutcome::ValueRefused
            | VoteOutcome::NeedsOpening => "error",
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
    fn values_allow_any_text_but_control_characters() {
        assert!(VoteValue::parse("value", "approve {x} ; -- \"'").is_ok());
        assert!(VoteValue::parse("value", "a\nb").is_err());
        assert!(VoteValue::parse("value", "").is_err());
        assert!(VoteValue::parse("value", &"é".repeat(256)).is_ok());
        assert!(VoteValue::parse("value", &"é".repeat(257)).is_err());
    }

    #[test]
    fn each_outcome_has_its_metric_label() {
        let cases = [
            (VoteOutcome::Recorded { vote_count: 1 }, "recorded"),
            (
                VoteOutcome::DecidedNow {
                    vote_count: 2,
                    final_decision: "yes".into(),
                },
                "recorded",
            ),
            (
                VoteOutcome::AlreadyVoted {
                    vote_count: 2,
                    recorded_value: "no".into(),
                    final_decision: None,
                },
                "already_voted",
            ),
            (
                VoteOutcome::Decided {
                    vote_count: 2,
                    final_decision: "yes".into(),
                },
                "decided",
            ),
            (VoteOutcome::TotalMismatch { opened_with: 5 }, "error"),
            (VoteOutcome::CloseMismatch { opened_with: 100 }, "error"),
            (VoteOutcome::Expired { vote_count: 1 }, "expired"),
            (
                VoteOutcome::RateLimited { retry_after_ms: 9 },
                "rate_limited",
            ),
        ];
        for (outcome, label) in cases {
            assert_eq!(outcome.label(), label, "{outcome:?}");
        }
    }
}
