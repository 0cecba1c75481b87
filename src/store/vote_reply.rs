//! The vote script's reply (see `answer` in `lua/quorum_vote.lua`), decoded into a
//! [`VoteOutcome`] in one place.

use redis::{FromRedisValue, ParsingError, Value};

use super::log::Decided;
use crate::decision::VoteOutcome;

/// The vote script's reply (see `answer` in `lua/quorum_vote.lua`), decoded. Its outcome
/// names are read here and nowhere else.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct VoteScriptReply {
    /// What became of the ballot.
    pub(super) outcome: VoteOutcome,
    /// Whether this run closed the decision (`decided_now`, `expired_now`).
    pub(super) closed_now: bool,
    /// The closed decision's event id; empty while its event is not in the log.
    pub(super) event_id: String,
    quorum: u64,
    total_instances: u64,
    /// When the decision was decided or expired (0 while it is open).
    closed_at: u64,
    /// For an expired decision, its tally at expiry (JSON).
    expired_tally: Option<String>,
    /// With `already_voted` on a cluster, the rate-window place its recorded vote took.
    place: String,
}

/// The reply's slots: outcome, voteCount (`retryAfterMs` with `rate_limited`, the opening
/// `closeAfterMs` with `close_mismatch`), totalInstances, quorum, finalDecision,
/// recordedValue (the tally at expiry with `expired`), eventId, decidedAt (or expiredAt),
/// and the rate-window place.
type ReplySlots = (
    String,
    u64,
    u64,
    u64,
    String,
    String,
    String,
    String,
    String,
);

impl FromRedisValue for VoteScriptReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (name, count, total_instances, quorum, final_decision, recorded, event_id, at, place): ReplySlots =
            FromRedisValue::from_redis_value(v)?;
        let mut expired_tally = None;
        let (outcome, closed_now) = match name.as_str() {
            "recorded" => (VoteOutcome::Recorded { vote_count: count }, false),
            "decided_now" => (
                VoteOutcome::DecidedNow {
                    vote_count: count,
                    final_decision,
                },
                true,
            ),
            "already_voted" => (
                VoteOutcome::AlreadyVoted {
                    vote_count: count,
                    recorded_value: recorded,
                    final_decision: (!final_decision.is_empty()).then_some(final_decision),
                },
                false,
            ),
            "decided" => (
                VoteOutcome::Decided {
                    vote_count: count,
                    final_decision,
                },
                false,
            ),
            "total_mismatch" => (
                VoteOutcome::TotalMismatch {
                    opened_with: total_instances,
                },
                false,
            ),
            "close_mismatch" => (VoteOutcome::CloseMismatch { opened_with: count }, false),
            "expired" | "expired_now" => {
                expired_tally = Some(recorded);
                (
                    VoteOutcome::Expired { vote_count: count },
                    name == "expired_now",
                )
            }
            "rate_limited" => (
                VoteOutcome::RateLimited {
                    retry_after_ms: count.max(1),
                },
                false,
            ),
            "not_in_electorate" => (VoteOutcome::NotInElectorate, false),
            "value_refused" => (VoteOutcome::ValueRefused, false),
            "needs_opening" => (VoteOutcome::NeedsOpening, false),
            other => return Err(format!("vote script returned {other:?}").into()),
        };
        Ok(VoteScriptReply {
            outcome,
            closed_now,
            event_id,
            quorum,
            total_instances,
            closed_at: at.parse().unwrap_or_default(),
            expired_tally,
            place,
        })
    }
}

impl VoteScriptReply {
    /// Whether the vote kept the place it took in the voter's rate window (`at`, on a
    /// cluster): recorded now, or recorded by an earlier try of this same call (the
    /// cluster client retries a call whose answer it lost).
    pub(super) fn counted(&self, at: &str) -> bool {
        match self.outcome {
            VoteOutcome::Recorded { .. } | VoteOutcome::DecidedNow { .. } => true,
            VoteOutcome::AlreadyVoted { .. } => self.place == at,
            _ => false,
        }
    }

    /// The decision's event without its id, when this reply finds it closed (made or
    /// expired).
    pub(super) fn closed(&self, decision: &str) -> Option<Decided> {
        let (vote_count, value) = match &self.outcome {
            VoteOutcome::DecidedNow {
                vote_count,
                final_decision,
            }
            | VoteOutcome::Decided {
                vote_count,
                final_decision,
            }
            | VoteOutcome::AlreadyVoted {
                vote_count,
                final_decision: Some(final_decision),
                ..
            } => (*vote_count, final_decision.clone()),
            VoteOutcome::Expired { vote_count } => (*vote_count, String::new()),
            _ => return None,
        };
        Some(Decided {
            decision: decision.to_owned(),
            value,
            vote_count,
            quorum: self.quorum,
            total_instances: self.total_instances,
            decided_at: self.closed_at,
            expired_tally: self.expired_tally.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script's reply to a vote that found its decision past the deadline and closed it.
    const EXPIRED_NOW: [&str; 9] = [
        "expired_now",
        "1",
        "3",
        "2",
        "",
        "{\"no\":1}",
        "",
        "1800",
        "",
    ];

    /// A reply as the script sends it: its nine slots, numbers as integers or strings.
    fn reply(slots: [&str; 9]) -> Value {
        Value::Array(
            slots
                .iter()
                .map(|slot| match slot.parse::<i64>() {
                    Ok(n) => Value::Int(n),
                    Err(_) => Value::BulkString(slot.as_bytes().to_vec()),
                })
                .collect(),
        )
    }

    fn decode(slots: [&str; 9]) -> VoteScriptReply {
        VoteScriptReply::from_redis_value(reply(slots)).expect("a reply the script sends")
    }

    #[test]
    fn each_outcome_decodes_from_the_slots_the_script_answers_it_with() {
        let cases = [
            (
                ["recorded", "1", "3", "2", "", "", "", "", ""],
                VoteOutcome::Recorded { vote_count: 1 },
            ),
            (
                ["decided_now", "2", "3", "2", "yes", "", "7-0", "1700", ""],
                VoteOutcome::DecidedNow {
                    vote_count: 2,
                    final_decision: "yes".into(),
                },
            ),
            (
                ["already_voted", "2", "3", "2", "", "no", "", "", "1699"],
                VoteOutcome::AlreadyVoted {
                    vote_count: 2,
                    recorded_value: "no".into(),
                    final_decision: None,
                },
            ),
            (
                [
                    "already_voted",
                    "3",
                    "3",
                    "2",
                    "yes",
                    "no",
                    "7-0",
                    "1700",
                    "",
                ],
                VoteOutcome::AlreadyVoted {
                    vote_count: 3,
                    recorded_value: "no".into(),
                    final_decision: Some("yes".into()),
                },
            ),
            (
                ["decided", "2", "3", "2", "yes", "", "7-0", "1700", ""],
                VoteOutcome::Decided {
                    vote_count: 2,
                    final_decision: "yes".into(),
                },
            ),
            (
                ["total_mismatch", "1", "5", "3", "", "", "", "", ""],
                VoteOutcome::TotalMismatch { opened_with: 5 },
            ),
            (
                ["close_mismatch", "60000", "3", "2", "", "", "", "", ""],
                VoteOutcome::CloseMismatch { opened_with: 60000 },
            ),
            (
                [
                    "expired",
                    "1",
                    "3",
                    "2",
                    "",
                    "{\"no\":1}",
                    "7-0",
                    "1800",
                    "",
                ],
                VoteOutcome::Expired { vote_count: 1 },
            ),
            (EXPIRED_NOW, VoteOutcome::Expired { vote_count: 1 }),
            (
                ["rate_limited", "250", "3", "2", "", "", "", "", ""],
                VoteOutcome::RateLimited {
                    retry_after_ms: 250,
                },
            ),
            (
                ["rate_limited", "0", "3", "2", "", "", "", "", ""],
                VoteOutcome::RateLimited { retry_after_ms: 1 },
            ),
        ];
        for (slots, outcome) in cases {
            let decoded = decode(slots);
            assert_eq!(decoded.outcome, outcome, "{slots:?}");
            let closed_now = matches!(slots[0], "decided_now" | "expired_now");
            assert_eq!(decoded.closed_now, closed_now, "{slots:?}");
            assert_eq!(decoded.event_id, slots[6], "{slots:?}");
        }
    }

    #[test]
    fn an_outcome_the_script_never_answers_is_refused() {
        let err =
            VoteScriptReply::from_redis_value(reply(["maybe", "1", "3", "2", "", "", "", "", ""]))
                .unwrap_err();
        assert!(
            err.to_string().contains("vote script returned \"maybe\""),
            "{err}"
        );
    }

    #[test]
    fn a_reply_short_of_its_slots_is_refused() {
        let short = Value::Array(vec![
            Value::BulkString(b"already_voted".to_vec()),
            Value::Int(2),
        ]);
        assert!(VoteScriptReply::from_redis_value(short).is_err());
    }

    #[test]
    fn a_vote_counts_against_its_place_when_recorded_now_or_by_an_earlier_try() {
        let place = "1699";
        assert!(decode(["recorded", "1", "3", "2", "", "", "", "", ""]).counted(place));
        assert!(decode(["decided_now", "2", "3", "2", "yes", "", "", "1700", ""]).counted(place));
        let earlier_try = ["already_voted", "2", "3", "2", "", "no", "", "", "1699"];
        assert!(decode(earlier_try).counted(place));
        let earlier_vote = ["already_voted", "2", "3", "2", "", "no", "", "", "1500"];
        assert!(!decode(earlier_vote).counted(place));
        for refused in [
            ["decided", "2", "3", "2", "yes", "", "", "1700", ""],
            ["rate_limited", "250", "3", "2", "", "", "", "", ""],
            ["total_mismatch", "1", "5", "3", "", "", "", "", ""],
            ["expired_now", "1", "3", "2", "", "{}", "", "1800", ""],
        ] {
            assert!(!decode(refused).counted(place), "{refused:?}");
        }
    }

    #[test]
    fn a_reply_that_finds_the_decision_closed_carries_its_event() {
        let decided = decode(["decided_now", "2", "3", "2", "yes", "", "", "1700", ""])
            .closed("d")
            .expect("decided");
        assert_eq!(
            (decided.decision.as_str(), decided.value.as_str()),
            ("d", "yes")
        );
        assert_eq!(
            (
                decided.vote_count,
                decided.quorum,
                decided.total_instances,
                decided.decided_at
            ),
            (2, 2, 3, 1700)
        );
        assert_eq!(decided.expired_tally, None);

        let expired = decode(EXPIRED_NOW).closed("d").expect("expired");
        assert_eq!(expired.value, "");
        assert_eq!((expired.vote_count, expired.decided_at), (1, 1800));
        assert_eq!(expired.expired_tally.as_deref(), Some("{\"no\":1}"));

        let made_before = decode(["already_voted", "3", "3", "2", "yes", "no", "", "1700", ""])
            .closed("d")
            .expect("decided before this vote");
        assert_eq!(
            (made_before.value.as_str(), made_before.vote_count),
            ("yes", 3)
        );

        for open in [
            ["recorded", "1", "3", "2", "", "", "", "", ""],
            ["already_voted", "1", "3", "2", "", "no", "", "", ""],
            ["rate_limited", "250", "3", "2", "", "", "", "", ""],
            ["close_mismatch", "60000", "3", "2", "", "", "", "", ""],
        ] {
            assert!(decode(open).closed("d").is_none(), "{open:?}");
        }
    }
}
