//! Votes as the vote script takes them: each vote's keys and arguments, built from a
//! ballot, the decision lifecycle's settings and (on a cluster) the voter's reservation;
//! what a batch of them shares (the rate limit, the event log's settings); and the same
//! call as `redis-benchmark` makes it.

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

/// Keys the vote script takes for each vote of a batch (see `lua/quorum_vote.lua`).
const KEYS_PER_VOTE: usize = 6;
/// Arguments the vote script takes for each vote of a batch.
const ARGS_PER_VOTE: usize = 11;

/// One vote's part of a run of the vote script: its keys and arguments.
#[derive(Debug, Clone)]
pub(super) struct ScriptVote {
    keys: [String; KEYS_PER_VOTE],
    /// The decision's name first.
    args: [String; ARGS_PER_VOTE],
}

impl ScriptVote {
    /// The decision, whose partition (on a cluster) names the run's shared keys.
    fn decision(&self) -> &str {
        &self.args[0]
    }
}

/// One vote as the vote script takes it (see the contract in `lua/quorum_vote.lua`).
///
/// The quorum is computed here, by [`quorum_for`], and only stored by the script, so the
/// rule has one source. `stated_total` still goes to the script as given (empty when
/// omitted), since only a stated total can conflict with the one the decision opened with.
pub(super) fn script_vote(
    layout: &Layout,
    ballot: ScriptBallot<'_>,
    reserved: Reserved<'_>,
    lifecycle: Lifecycle,
) -> ScriptVote {
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
    // On one Redis the voter's rate window; on a cluster, where the window lives in the
    // instance's slot, the places its recorded votes took.
    let window = if layout.is_cluster() {
        key("places")
    } else {
        keys::vote_rate(instance)
    };
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    ScriptVote {
        keys: [
            key("votes"),
            key("tally"),
            key("result"),
            key("metadata"),
            key("ballots"),
            window,
        ],
        args: [
            decision.to_owned(),
            instance.to_owned(),
            value.to_owned(),
            number(stated_total),
            opening_total.to_string(),
            opening_quorum.to_string(),
            number(stated_close),
            opening_close.to_string(),
            number(reserved.refused_for),
            reserved.place.unwrap_or_default().to_owned(),
            policy_arg(opening),
        ],
    }
}

/// The vote's policy argument: '' (none), 'ask', or the terms to open under, as JSON.
fn policy_arg(opening: Opening<'_>) -> String {
    let terms = match opening {
        Opening::Plain => return String::new(),
        Opening::Ask => return "ask".to_owned(),
        Opening::Under(terms) => terms,
    };
    let policy = &terms.policy;
    let mut open = serde_json::Map::new();
    open.insert("pattern".into(), terms.pattern.clone().into());
    open.insert("threshold".into(), policy.threshold.label().into());
    if let Some(electorate) = &policy.electorate {
        open.insert("role".into(), electorate.role.clone().into());
        let members = terms.electorate.clone().unwrap_or_default();
        open.insert("members".into(), members.into());
    }
    if let Some(values) = &policy.values {
        // Kept as text: the script stores it as given, and checks votes against it.
        let text = serde_json::Value::from(values.clone()).to_string();
        open.insert("values".into(), text.into());
    }
    if let Some(openers) = &policy.openers {
        open.insert("openers".into(), openers.clone().into());
    }
    serde_json::Value::Object(open).to_string()
}

/// What every vote of one run of the vote script shares: the hub's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunSettings {
    pub(super) limit: RateLimit,
    /// Whether a decision event waits for replicas before it is published.
    pub(super) publish_later: bool,
    pub(super) lifecycle: Lifecycle,
}

/// One run of the vote script: what its votes share, then each vote's keys and arguments,
/// borrowed (a batch's dozens of keys and arguments are not copied again).
pub(super) struct Invocation<'a> {
    shared_keys: Vec<String>,
    shared_args: Vec<String>,
    votes: &'a [&'a ScriptVote],
}

impl Invocation<'_> {
    /// KEYS: the shared ones, then [`KEYS_PER_VOTE`] per vote.
    pub(super) fn keys(&self) -> Vec<&str> {
        let each = self.votes.iter().flat_map(|vote| &vote.keys);
        let mut keys =
            Vec::with_capacity(self.shared_keys.len() + self.votes.len() * KEYS_PER_VOTE);
        keys.extend(self.shared_keys.iter().chain(each).map(String::as_str));
        keys
    }

    /// ARGV: the shared ones, then [`ARGS_PER_VOTE`] per vote.
    pub(super) fn args(&self) -> Vec<&str> {
        let each = self.votes.iter().flat_map(|vote| &vote.args);
        let mut args =
            Vec::with_capacity(self.shared_args.len() + self.votes.len() * ARGS_PER_VOTE);
        args.extend(self.shared_args.iter().chain(each).map(String::as_str));
        args
    }
}

/// The run of the vote script for `votes` (at least one; on a cluster all in one
/// partition, since every key of a run must share one slot).
///
/// On one Redis the script logs a decision and applies the rate limit itself; on a
/// cluster it defers the log and gets the verdict of the voter's reservation.
pub(super) fn run_invocation<'a>(
    layout: &Layout,
    votes: &'a [&'a ScriptVote],
    settings: RunSettings,
) -> Invocation<'a> {
    let first = votes[0].decision();
    let mut shared_keys = vec![
        layout.decisions_index(first),
        layout
            .unlogged(first)
            .unwrap_or_else(|| layout.stream().to_owned()),
        layout.deadlines(first),
        layout.dashboards_flag(first),
    ];
    let limit = if layout.is_cluster() {
        RateLimit::OFF
    } else {
        shared_keys.push(layout.published().to_owned());
        settings.limit
    };
    let shared_args = vec![
        if layout.is_cluster() { "defer" } else { "log" }.to_owned(),
        DECISION_STREAM_CAP.to_string(),
        layout.decision_channel().to_owned(),
        keys::VOTE_RECORDED_CHANNEL.to_owned(),
        limit.max.to_string(),
        limit.window.as_millis().to_string(),
        DECISION_INDEX_CAP.to_string(),
        if settings.publish_later {
            PUBLISH_LATER
        } else {
            ""
        }
        .to_owned(),
        settings.lifecycle.retention.as_millis().to_string(),
        votes.len().to_string(),
    ];
    Invocation {
        shared_keys,
        shared_args,
        votes,
    }
}

/// Arguments for `redis-benchmark` that run the vote script on random decisions and
/// instances (`__rand_int__` is replaced by the benchmark), the way a hub on one Redis
/// calls it for a single vote.
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
    let vote = script_vote(&Layout::Single, ballot, Reserved::NONE, Lifecycle::DEFAULT);
    let settings = RunSettings {
        limit,
        publish_later: false,
        lifecycle: Lifecycle::DEFAULT,
    };
    let votes = [&vote];
    let run = run_invocation(&Layout::Single, &votes, settings);
    let mut keys = run.keys();
    keys[0] = keys::BENCH_DECISIONS_INDEX;
    keys[2] = keys::BENCH_DEADLINES_INDEX;
    let mut command = vec!["EVALSHA".to_owned(), sha.to_owned(), keys.len().to_string()];
    command.extend(keys.into_iter().chain(run.args()).map(str::to_owned));
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

    const SETTINGS: RunSettings = RunSettings {
        limit: LIMIT,
        publish_later: false,
        lifecycle: Lifecycle::DEFAULT,
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

    fn vote(layout: &Layout, ballot: ScriptBallot<'_>) -> ScriptVote {
        script_vote(layout, ballot, Reserved::NONE, Lifecycle::DEFAULT)
    }

    #[test]
    fn an_omitted_total_opens_with_the_default_and_its_quorum() {
        let layout = Layout::Single;
        let one = vote(&layout, ballot(None));
        let votes = [&one];
        let run = run_invocation(&layout, &votes, SETTINGS);
        let (keys, args) = (run.keys(), run.args());
        assert_eq!(keys.len(), 5 + KEYS_PER_VOTE);
        assert_eq!(keys[0], layout.decisions_index("d"));
        assert_eq!(keys[1], layout.stream());
        assert_eq!(keys[2], layout.deadlines("d"));
        assert_eq!(keys[3], layout.dashboards_flag("d"));
        assert_eq!(keys[4], layout.published());
        assert_eq!(keys[5], layout.decision("d", "votes"));
        assert_eq!(keys[10], keys::vote_rate("i"));
        assert_eq!(args.len(), 10 + ARGS_PER_VOTE);
        assert_eq!(args[0], "log");
        assert_eq!(args[4..6], ["5", "1000"], "the script applies the limit");
        assert_eq!(args[7], "", "published at once");
        assert_eq!(
            args[8],
            Lifecycle::DEFAULT.retention.as_millis().to_string()
        );
        assert_eq!(args[9], "1", "one vote");
        let max_open = Lifecycle::DEFAULT.max_open.as_millis().to_string();
        assert_eq!(
            args[10..],
            [
                "d",
                "i",
                "v",
                "",
                &DEFAULT_TOTAL_INSTANCES.to_string(),
                &quorum_for(DEFAULT_TOTAL_INSTANCES).to_string(),
                "",
                &max_open,
                "",
                "",
                ""
            ],
            "nothing stated, so nothing to mismatch; opens with --max-open and no policy"
        );
    }

    #[test]
    fn a_batch_shares_its_settings_and_lists_each_vote_in_order() {
        let layout = Layout::Single;
        let first = vote(&layout, ballot(None));
        let second = vote(
            &layout,
            ScriptBallot {
                decision: "e",
                instance: "j",
                ..ballot(Some(6))
            },
        );
        let votes = [&first, &second];
        let run = run_invocation(&layout, &votes, SETTINGS);
        let (keys, args) = (run.keys(), run.args());
        assert_eq!(keys.len(), 5 + 2 * KEYS_PER_VOTE);
        assert_eq!(args.len(), 10 + 2 * ARGS_PER_VOTE);
        assert_eq!(args[9], "2");
        assert_eq!(keys[5 + KEYS_PER_VOTE], layout.decision("e", "votes"));
        assert_eq!(keys[5 + 2 * KEYS_PER_VOTE - 1], keys::vote_rate("j"));
        assert_eq!(
            args[10 + ARGS_PER_VOTE..10 + ARGS_PER_VOTE + 6],
            ["e", "j", "v", "6", "6", "4"]
        );
    }

    #[test]
    fn with_replicas_to_wait_for_the_event_is_published_later() {
        let layout = Layout::Single;
        let one = vote(&layout, ballot(None));
        let settings = RunSettings {
            publish_later: true,
            ..SETTINGS
        };
        let votes = [&one];
        let run = run_invocation(&layout, &votes, settings);
        let (_, args) = (run.keys(), run.args());
        assert_eq!(args[7], PUBLISH_LATER);
    }

    #[test]
    fn a_stated_total_opens_with_its_own_quorum() {
        let one = vote(&Layout::Single, ballot(Some(6)));
        assert_eq!(one.args[3..6], ["6", "6", "4"]);
    }

    #[test]
    fn on_a_cluster_every_key_shares_the_decision_slot_and_the_limit_is_reserved() {
        let layout = Layout::partitioned();
        let reserved = Reserved {
            refused_for: Some(250),
            place: None,
        };
        let one = script_vote(&layout, ballot(None), reserved, Lifecycle::DEFAULT);
        let votes = [&one];
        let run = run_invocation(&layout, &votes, SETTINGS);
        let (keys, args) = (run.keys(), run.args());
        assert_eq!(
            keys.len(),
            4 + KEYS_PER_VOTE,
            "no rate key: it lives in the instance's slot"
        );
        assert_eq!(keys[2], layout.deadlines("d"));
        assert_eq!(keys[3], layout.dashboards_flag("d"));
        assert_eq!(keys[4 + KEYS_PER_VOTE - 1], layout.decision("d", "places"));
        let slot = super::super::slots::key_slot(keys[0]);
        for key in &keys {
            assert_eq!(super::super::slots::key_slot(key), slot, "{key}");
        }
        assert_eq!(args[0], "defer");
        assert_eq!(args[4], "0", "the script applies no limit itself");
        assert_eq!(args[10 + 8..10 + 10], ["250", ""]);
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
            vote(&Layout::Single, ballot).args
        };
        let args = run(Opening::Under(&terms));
        assert_eq!(
            args[4..6],
            ["2", "2"],
            "the electorate's size and threshold"
        );
        assert_eq!(args[7], "5000");
        let open: serde_json::Value = serde_json::from_str(&args[10]).unwrap();
        assert_eq!(
            open,
            serde_json::json!({
                "pattern": "deploy-*",
                "threshold": "unanimous",
                "role": "deployer",
                "members": ["d1", "d2"],
                "values": r#"["a"]"#,
            })
        );
        assert_eq!(run(Opening::Ask)[10], "ask");
    }

    #[test]
    fn the_benchmark_command_declares_every_key_it_passes() {
        let command = vote_benchmark_command("sha", 60, LIMIT);
        let one = vote(&Layout::Single, ballot(Some(60)));
        let votes = [&one];
        let run = run_invocation(&Layout::Single, &votes, SETTINGS);
        let (keys, args) = (run.keys(), run.args());
        assert_eq!(command[..3], ["EVALSHA", "sha", &keys.len().to_string()]);
        assert_eq!(command.len(), 3 + keys.len() + args.len());
        assert_eq!(command[3], keys::BENCH_DECISIONS_INDEX);
        assert_eq!(command[3 + 2], keys::BENCH_DEADLINES_INDEX);
    }
}
