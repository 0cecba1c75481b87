//! One run of the vote script as the store calls it: its KEYS and ARGV, built from a
//! ballot, the rate limit, the decision lifecycle's settings and (on a cluster) the voter's
//! reservation; its reply, decoded; and the same call as `redis-benchmark` makes it.

use redis::{FromRedisValue, ParsingError, Value};

use super::keys::{self, Layout};
use super::lifecycle::Lifecycle;
use super::log::Decided;
use super::publish::PUBLISH_LATER;
use super::stream::DECISION_STREAM_CAP;
use crate::config::RateLimit;
use crate::decision::{DEFAULT_TOTAL_INSTANCES, VoteOutcome, quorum_for};

/// Decisions the recent-decisions index keeps; older ones drop out of `system.get_state`
/// (their keys and audit trail stay). The vote script trims the index to it.
pub(crate) const DECISION_INDEX_CAP: u64 = 10_000;

/// What the voter's rate-window reservation gives the vote script (cluster only).
pub(super) struct Reserved<'a> {
    /// Milliseconds until the window has room, when the reservation was refused.
    refused_for: Option<u64>,
    /// The place taken, kept beside the ballot if the vote is recorded.
    place: Option<&'a str>,
}

impl<'a> From<Option<&'a Reservation>> for Reserved<'a> {
    fn from(reservation: Option<&'a Reservation>) -> Self {
        match reservation {
            Some(Reservation::Refused { retry_after_ms }) => Reserved {
                refused_for: Some(*retry_after_ms),
                place: None,
            },
            Some(Reservation::Taken { at }) => Reserved {
                refused_for: None,
                place: Some(at),
            },
            None => Reserved::NONE,
        }
    }
}

impl Reserved<'_> {
    /// No reservation (one Redis, or no rate limit).
    const NONE: Reserved<'static> = Reserved {
        refused_for: None,
        place: None,
    };
}

/// A place in an instance's vote-rate window (cluster only).
pub(super) enum Reservation {
    /// Taken at this time (ms, as stored): given back if the vote is not recorded.
    Taken {
        at: String,
    },
    Refused {
        retry_after_ms: u64,
    },
}

/// A ballot as the vote script takes it.
pub(super) struct ScriptBallot<'a> {
    pub(super) decision: &'a str,
    pub(super) instance: &'a str,
    pub(super) value: &'a str,
    pub(super) total_instances: Option<u64>,
    pub(super) close_after_ms: Option<u64>,
}

/// KEYS and ARGV of one run of the vote script (see the contract in `lua/quorum_vote.lua`).
///
/// The quorum is computed here, by [`quorum_for`], and only stored by the script, so the
/// rule has one source. `stated_total` still goes to the script as given (empty when
/// omitted), since only a stated total can conflict with the one the decision opened with.
///
/// On one Redis the script logs the decision and applies the rate limit itself; on a
/// cluster it defers the log, gets the verdict of the voter's reservation (`refused_for`),
/// and publishes the vote only while the partition's dashboards flag is set.
pub(super) fn vote_invocation(
    layout: &Layout,
    ballot: ScriptBallot<'_>,
    limit: RateLimit,
    reserved: Reserved<'_>,
    publish_later: bool,
    lifecycle: Lifecycle,
) -> (Vec<String>, Vec<String>) {
    let ScriptBallot {
        decision,
        instance,
        value,
        total_instances: stated_total,
        close_after_ms: stated_close,
    } = ballot;
    let opening_close = stated_close.unwrap_or(lifecycle.max_open.as_millis() as u64);
    let opening_total = stated_total.unwrap_or(DEFAULT_TOTAL_INSTANCES);
    let key = |part| layout.decision(decision, part);
    let mut keys = vec![
        key("votes"),
        key("tally"),
        key("result"),
        key("metadata"),
        key("ballots"),
        layout.decisions_index(decision),
    ];
    let inline_limit = match (layout.unlogged(decision), layout.dashboards_flag(decision)) {
        (Some(unlogged), Some(flag)) => {
            keys.push(unlogged);
            keys.push(flag);
            keys.push(key("places"));
            RateLimit::OFF
        }
        _ => {
            keys.push(layout.stream().to_owned());
            keys.push(keys::vote_rate(instance));
            keys.push(layout.published().to_owned());
            limit
        }
    };
    keys.push(layout.deadlines(decision));
    let args = vec![
        decision.to_owned(),
        instance.to_owned(),
        value.to_owned(),
        stated_total.map(|n| n.to_string()).unwrap_or_default(),
        opening_total.to_string(),
        quorum_for(opening_total).to_string(),
        DECISION_STREAM_CAP.to_string(),
        layout.decision_channel().to_owned(),
        inline_limit.max.to_string(),
        inline_limit.window.as_millis().to_string(),
        keys::VOTE_RECORDED_CHANNEL.to_owned(),
        DECISION_INDEX_CAP.to_string(),
        if layout.is_cluster() { "defer" } else { "log" }.to_owned(),
        reserved
            .refused_for
            .map(|ms| ms.to_string())
            .unwrap_or_default(),
        reserved.place.unwrap_or_default().to_owned(),
        if publish_later { PUBLISH_LATER } else { "" }.to_owned(),
        stated_close.map(|ms| ms.to_string()).unwrap_or_default(),
        opening_close.to_string(),
        lifecycle.retention.as_millis().to_string(),
    ];
    (keys, args)
}

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

/// Arguments for `redis-benchmark` that run the vote script on random decisions and
/// instances (`__rand_int__` is replaced by the benchmark), the way a hub on one Redis
/// calls it.
pub(crate) fn vote_benchmark_command(
    sha: &str,
    total_instances: u64,
    limit: RateLimit,
) -> Vec<String> {
    let ballot = ScriptBallot {
        decision: "rb__rand_int__",
        instance: "i__rand_int__",
        value: "yes",
        total_instances: Some(total_instances),
        close_after_ms: None,
    };
    let (mut keys, args) = vote_invocation(
        &Layout::Single,
        ballot,
        limit,
        Reserved::NONE,
        false,
        Lifecycle::DEFAULT,
    );
    keys[5] = keys::BENCH_DECISIONS_INDEX.to_owned();
    keys[9] = keys::BENCH_DEADLINES_INDEX.to_owned();
    let mut command = vec!["EVALSHA".to_owned(), sha.to_owned(), keys.len().to_string()];
    command.extend(keys);
    command.extend(args);
    command
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    const LIMIT: RateLimit = RateLimit {
        max: 5,
        window: Duration::from_secs(1),
    };

    fn ballot(total_instances: Option<u64>) -> ScriptBallot<'static> {
        ScriptBallot {
            decision: "d",
            instance: "i",
            value: "v",
            total_instances,
            close_after_ms: None,
        }
    }

    #[test]
    fn an_omitted_total_opens_with_the_default_and_its_quorum() {
        let (keys, args) = vote_invocation(
            &Layout::Single,
            ballot(None),
            LIMIT,
            Reserved::NONE,
            false,
            Lifecycle::DEFAULT,
        );
        assert_eq!(keys.len(), 10);
        assert_eq!(keys[9], Layout::Single.deadlines("d"));
        assert_eq!(keys[5], Layout::Single.decisions_index("d"));
        assert_eq!(keys[8], Layout::Single.published());
        assert_eq!(args.len(), 19);
        assert_eq!(args[3], "", "nothing stated, so nothing to mismatch");
        assert_eq!(args[4], DEFAULT_TOTAL_INSTANCES.to_string());
        assert_eq!(args[5], quorum_for(DEFAULT_TOTAL_INSTANCES).to_string());
        assert_eq!(args[8..10], ["5", "1000"], "the script applies the limit");
        assert_eq!(args[12..16], ["log", "", "", ""]);
        let max_open = Lifecycle::DEFAULT.max_open.as_millis().to_string();
        let retention = Lifecycle::DEFAULT.retention.as_millis().to_string();
        assert_eq!(
            args[16..],
            ["", &max_open, &retention],
            "opens with --max-open"
        );
    }

    #[test]
    fn with_replicas_to_wait_for_the_event_is_published_later() {
        let (_, args) = vote_invocation(
            &Layout::Single,
            ballot(None),
            LIMIT,
            Reserved::NONE,
            true,
            Lifecycle::DEFAULT,
        );
        assert_eq!(args[15], PUBLISH_LATER);
    }

    #[test]
    fn a_stated_total_opens_with_its_own_quorum() {
        let (_, args) = vote_invocation(
            &Layout::Single,
            ballot(Some(6)),
            LIMIT,
            Reserved::NONE,
            false,
            Lifecycle::DEFAULT,
        );
        assert_eq!(args[3..6], ["6", "6", "4"]);
    }

    #[test]
    fn on_a_cluster_every_key_shares_the_decision_slot_and_the_limit_is_reserved() {
        let layout = Layout::partitioned();
        let reserved = Reserved {
            refused_for: Some(250),
            place: None,
        };
        let (keys, args) = vote_invocation(
            &layout,
            ballot(None),
            LIMIT,
            reserved,
            false,
            Lifecycle::DEFAULT,
        );
        assert_eq!(
            keys.len(),
            10,
            "no rate key: it lives in the instance's slot"
        );
        assert_eq!(keys[9], layout.deadlines("d"));
        assert_eq!(keys[7], layout.dashboards_flag("d").unwrap());
        assert_eq!(keys[8], layout.decision("d", "places"));
        let slot = super::super::slots::key_slot(&keys[0]);
        for key in &keys {
            assert_eq!(super::super::slots::key_slot(key), slot, "{key}");
        }
        assert_eq!(args[8], "0", "the script applies no limit itself");
        assert_eq!(args[12..16], ["defer", "250", "", ""]);
    }

    #[test]
    fn the_benchmark_command_declares_every_key_it_passes() {
        let command = vote_benchmark_command("sha", 60, LIMIT);
        let (keys, args) = vote_invocation(
            &Layout::Single,
            ballot(Some(60)),
            LIMIT,
            Reserved::NONE,
            false,
            Lifecycle::DEFAULT,
        );
        assert_eq!(command[..3], ["EVALSHA", "sha", &keys.len().to_string()]);
        assert_eq!(command.len(), 3 + keys.len() + args.len());
        assert_eq!(command[3 + 5], keys::BENCH_DECISIONS_INDEX);
        assert_eq!(command[3 + 9], keys::BENCH_DEADLINES_INDEX);
    }

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
