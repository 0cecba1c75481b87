//! One run of the vote script as the store calls it: its KEYS and ARGV, built from a
//! ballot, the rate limit, the decision lifecycle's settings and (on a cluster) the voter's
//! reservation, and the same call as `redis-benchmark` makes it.

use super::keys::{self, Layout};
use super::lifecycle::Lifecycle;
use super::publish::PUBLISH_LATER;
use super::stream::DECISION_STREAM_CAP;
use crate::config::RateLimit;
use crate::decision::{DEFAULT_TOTAL_INSTANCES, quorum_for};
use crate::policy::Opening;

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
    pub(super) opening: Opening<'a>,
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
        opening,
    } = ballot;
    let mut opening_close = stated_close.unwrap_or(lifecycle.max_open.as_millis() as u64);
    let mut opening_total = stated_total.unwrap_or(DEFAULT_TOTAL_INSTANCES);
    let mut opening_quorum = quorum_for(opening_total);
    if let Opening::Under(terms) = opening {
        opening_total = terms.total;
        opening_quorum = terms.quorum;
        opening_close = terms.close_after_ms.unwrap_or(opening_close);
    }
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
    let mut args = vec![
        decision.to_owned(),
        instance.to_owned(),
        value.to_owned(),
        stated_total.map(|n| n.to_string()).unwrap_or_default(),
        opening_total.to_string(),
        opening_quorum.to_string(),
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
    args.extend(policy_args(opening));
    (keys, args)
}

/// ARGV[20..26] of the vote script: how it may open the decision.
fn policy_args(opening: Opening<'_>) -> Vec<String> {
    let terms = match opening {
        Opening::Plain => return vec![String::new()],
        Opening::Ask => return vec!["ask".to_owned()],
        Opening::Under(terms) => terms,
    };
    let policy = &terms.policy;
    let json = |list: &Vec<String>| serde_json::Value::from(list.clone()).to_string();
    vec![
        "open".to_owned(),
        terms.pattern.clone(),
        policy
            .electorate
            .as_ref()
            .map(|e| e.role.clone())
            .unwrap_or_default(),
        policy.threshold.label(),
        policy.values.as_ref().map(json).unwrap_or_default(),
        terms.electorate.as_ref().map(json).unwrap_or_default(),
        policy.openers.clone().unwrap_or_default(),
    ]
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
        opening: Opening::Plain,
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
            opening: Opening::Plain,
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
        assert_eq!(args.len(), 20);
        assert_eq!(args[19], "", "no policy");
        assert_eq!(args[3], "", "nothing stated, so nothing to mismatch");
        assert_eq!(args[4], DEFAULT_TOTAL_INSTANCES.to_string());
        assert_eq!(args[5], quorum_for(DEFAULT_TOTAL_INSTANCES).to_string());
        assert_eq!(args[8..10], ["5", "1000"], "the script applies the limit");
        assert_eq!(args[12..16], ["log", "", "", ""]);
        let max_open = Lifecycle::DEFAULT.max_open.as_millis().to_string();
        let retention = Lifecycle::DEFAULT.retention.as_millis().to_string();
        assert_eq!(
            args[16..19],
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
    fn a_policy_opens_with_its_terms_and_only_asks_before_reading_them() {
        let terms = crate::policy::Terms {
            pattern: "deploy-*".into(),
            policy: serde_json::from_str(
                r#"{"electorate":{"role":"deployer"},"threshold":"unanimous","values":["a"]}"#,
            )
            .unwrap(),
            electorate: Some(vec!["d1".into(), "d2".into()]),
            total: 2,
            quorum: 2,
            close_after_ms: Some(5000),
        };
        let run = |opening| {
            let ballot = ScriptBallot {
                opening,
                ..ballot(None)
            };
            let layout = Layout::Single;
            vote_invocation(
                &layout,
                ballot,
                LIMIT,
                Reserved::NONE,
                false,
                Lifecycle::DEFAULT,
            )
            .1
        };
        let args = run(Opening::Under(&terms));
        assert_eq!(
            args[4..6],
            ["2", "2"],
            "the electorate's size and threshold"
        );
        assert_eq!(args[17], "5000");
        assert_eq!(
            args[19..],
            [
                "open",
                "deploy-*",
                "deployer",
                "unanimous",
                r#"["a"]"#,
                r#"["d1","d2"]"#,
                ""
            ]
        );
        assert_eq!(run(Opening::Ask)[19..], ["ask"]);
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
}
