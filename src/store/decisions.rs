//! Votes and decisions: the vote script's invocation and outcomes, audit trails, and the
//! recent-decisions index.

use std::collections::HashMap;

use redis::FromRedisValue;

use super::stream::DECISION_STREAM_CAP;
use super::{MAX_PAGE_BYTES, Store, field_u64, internal, keys};
use crate::config::RateLimit;
use crate::decision::{Ballot, DEFAULT_TOTAL_INSTANCES, DecisionName, VoteOutcome, quorum_for};
use crate::error::Error;
use crate::protocol::{DecisionCursor, DecisionStatus, DecisionSummary, RecordedVote};

/// Decisions the recent-decisions index keeps; older ones drop out of `system.get_state`
/// (their keys and audit trail stay).
pub(crate) const DECISION_INDEX_CAP: u64 = 10_000;

/// Bytes a decision's summary counts for in a page, beyond its name (its value is at most
/// 256 characters).
const SUMMARY_BYTES: usize = 1200;

/// The vote script's source, for tools that load it themselves.
pub(crate) const VOTE_SCRIPT: &str = include_str!("../../lua/quorum_vote.lua");

/// Entries of the decisions index: names with the time each was opened.
type Indexed = Vec<(String, u64)>;

/// A page of decisions, and where the next one starts (`None`: this is the last).
#[derive(Debug)]
pub(crate) struct DecisionPage {
    pub decisions: Vec<DecisionSummary>,
    pub next: Option<DecisionCursor>,
}

impl Store {
    /// Runs the vote script for one ballot. The script also indexes a decision it opens,
    /// in the same atomic run, so a recorded vote's decision is always in `get_state`.
    pub(crate) async fn vote(
        &self,
        ballot: &Ballot,
        limit: RateLimit,
    ) -> Result<VoteOutcome, Error> {
        let (keys, args) = vote_invocation(
            ballot.decision.as_str(),
            ballot.instance.as_str(),
            ballot.value.as_str(),
            ballot.total_instances,
            limit,
        );
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (outcome, vote_count, total, _quorum, final_decision, recorded): (
            String,
            u64,
            u64,
            u64,
            String,
            String,
        ) = self.eval(&self.scripts.vote, &key_refs, &args).await?;
        Ok(match outcome.as_str() {
            "recorded" => VoteOutcome::Recorded { vote_count },
            "decided_now" => VoteOutcome::DecidedNow {
                vote_count,
                final_decision,
            },
            "already_voted" => VoteOutcome::AlreadyVoted {
                vote_count,
                recorded_value: recorded,
                final_decision: (!final_decision.is_empty()).then_some(final_decision),
            },
            "decided" => VoteOutcome::Decided {
                vote_count,
                final_decision,
            },
            "total_mismatch" => VoteOutcome::TotalMismatch { opened_with: total },
            "rate_limited" => VoteOutcome::RateLimited {
                retry_after_ms: vote_count.max(1),
            },
            other => return Err(Error::Internal(format!("vote script returned {other:?}"))),
        })
    }

    /// The audit trail of one decision, or `None` when it has no votes.
    pub(crate) async fn status(
        &self,
        decision: &DecisionName,
    ) -> Result<Option<DecisionStatus>, Error> {
        let name = decision.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(keys::decision(name, "metadata"))
            .cmd("HGETALL")
            .arg(keys::decision(name, "result"))
            .cmd("ZRANGE")
            .arg(keys::decision(name, "votes"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(keys::decision(name, "ballots"))
            .cmd("HGETALL")
            .arg(keys::decision(name, "tally"));
        type Reply = (
            HashMap<String, String>,
            HashMap<String, String>,
            Vec<(String, f64)>,
            HashMap<String, String>,
            HashMap<String, u64>,
        );
        let (meta, result, voters, ballots, tally): Reply = self.query_pipe(&pipe).await?;
        if meta.is_empty() || voters.is_empty() {
            return Ok(None);
        }
        let votes: Vec<RecordedVote> = voters
            .into_iter()
            .map(|(instance_id, seq)| RecordedVote {
                value: ballots.get(&instance_id).cloned().unwrap_or_default(),
                instance_id,
                seq: seq as u64,
            })
            .collect();
        let final_decision = result.get("value").cloned();
        Ok(Some(DecisionStatus {
            decision: name.to_owned(),
            total_instances: field_u64(&meta, "totalInstances"),
            quorum: field_u64(&meta, "quorum"),
            vote_count: votes.len() as u64,
            tally: tally_in_vote_order(&votes, &tally),
            votes,
            quorum_reached: final_decision.is_some(),
            final_decision,
            decided_at: result.get("decidedAt").and_then(|t| t.parse().ok()),
        }))
    }

    /// A page of decisions, the most recently opened first, after `after` (from the
    /// newest with `None`).
    pub(crate) async fn recent_decisions(
        &self,
        limit: usize,
        after: Option<&DecisionCursor>,
    ) -> Result<DecisionPage, Error> {
        // After the cursor: the decisions opened at the same moment whose names sort
        // before its own (the index's order for equal scores), then those opened earlier.
        // Both are read by score, so decisions opened meanwhile (later) change nothing.
        let mut listed: Indexed = match after {
            None => {
                self.query(
                    redis::cmd("ZREVRANGE")
                        .arg(keys::DECISIONS_INDEX)
                        .arg(0)
                        .arg(limit)
                        .arg("WITHSCORES"),
                )
                .await?
            }
            Some(cursor) => {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREVRANGEBYSCORE")
                    .arg(keys::DECISIONS_INDEX)
                    .arg(cursor.opened_at)
                    .arg(cursor.opened_at)
                    .arg("WITHSCORES")
                    .cmd("ZREVRANGEBYSCORE")
                    .arg(keys::DECISIONS_INDEX)
                    .arg(format!("({}", cursor.opened_at))
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1);
                let (same_moment, earlier): (Indexed, Indexed) = self.query_pipe(&pipe).await?;
                same_moment
                    .into_iter()
                    .filter(|(name, _)| *name < cursor.decision)
                    .chain(earlier)
                    .collect()
            }
        };
        let mut more = listed.len() > limit;
        listed.truncate(limit);
        // The page also ends at its byte bound.
        let mut bytes = 0;
        if let Some(fits) = listed.iter().position(|(name, _)| {
            bytes += name.len() + SUMMARY_BYTES;
            bytes > MAX_PAGE_BYTES
        }) {
            listed.truncate(fits.max(1));
            more = true;
        }
        let next = more
            .then(|| listed.last())
            .flatten()
            .map(|(decision, opened_at)| DecisionCursor {
                opened_at: *opened_at,
                decision: decision.clone(),
            });
        let names: Vec<String> = listed.into_iter().map(|(name, _)| name).collect();
        if names.is_empty() {
            return Ok(DecisionPage {
                decisions: Vec::new(),
                next,
            });
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(keys::decision(name, "metadata"))
                .arg(&["totalInstances", "quorum", "openedAt"])
                .cmd("ZCARD")
                .arg(keys::decision(name, "votes"))
                .cmd("HMGET")
                .arg(keys::decision(name, "result"))
                .arg(&["value", "decidedAt"]);
        }
        let replies: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        let mut decisions = Vec::with_capacity(names.len());
        for (name, chunk) in names.into_iter().zip(replies.chunks(3)) {
            let [meta, count, result] = chunk else { break };
            let meta: Vec<Option<u64>> =
                FromRedisValue::from_redis_value_ref(meta).map_err(internal)?;
            let vote_count: u64 = FromRedisValue::from_redis_value_ref(count).map_err(internal)?;
            let result: Vec<Option<String>> =
                FromRedisValue::from_redis_value_ref(result).map_err(internal)?;
            let (Some(total_instances), Some(quorum)) = (meta[0], meta[1]) else {
                continue; // removed since it was indexed
            };
            let final_decision = result[0].clone();
            decisions.push(DecisionSummary {
                decision: name,
                total_instances,
                quorum,
                vote_count,
                quorum_reached: final_decision.is_some(),
                final_decision,
                opened_at: meta[2].unwrap_or_default(),
                decided_at: result[1].as_deref().and_then(|t| t.parse().ok()),
            });
        }
        Ok(DecisionPage { decisions, next })
    }
}

/// The tally hash, keyed in the order each value first received a vote.
fn tally_in_vote_order(
    votes: &[RecordedVote],
    tally: &HashMap<String, u64>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut ordered = serde_json::Map::new();
    for vote in votes {
        if !ordered.contains_key(&vote.value) {
            let count = tally.get(&vote.value).copied().unwrap_or_default();
            ordered.insert(vote.value.clone(), count.into());
        }
    }
    ordered
}

/// KEYS and ARGV of one run of the vote script (see the contract in `lua/quorum_vote.lua`).
///
/// The quorum is computed here, by [`quorum_for`], and only stored by the script, so the
/// rule has one source. `stated_total` still goes to the script as given (empty when
/// omitted), since only a stated total can conflict with the one the decision opened with.
fn vote_invocation(
    decision: &str,
    instance: &str,
    value: &str,
    stated_total: Option<u64>,
    limit: RateLimit,
) -> (Vec<String>, Vec<String>) {
    let opening_total = stated_total.unwrap_or(DEFAULT_TOTAL_INSTANCES);
    let keys = vec![
        keys::decision(decision, "votes"),
        keys::decision(decision, "tally"),
        keys::decision(decision, "result"),
        keys::decision(decision, "metadata"),
        keys::decision(decision, "ballots"),
        keys::DECISION_EVENTS_STREAM.to_owned(),
        keys::vote_rate(instance),
        keys::DECISIONS_INDEX.to_owned(),
    ];
    let args = vec![
        decision.to_owned(),
        instance.to_owned(),
        value.to_owned(),
        stated_total.map(|n| n.to_string()).unwrap_or_default(),
        opening_total.to_string(),
        quorum_for(opening_total).to_string(),
        DECISION_STREAM_CAP.to_string(),
        keys::DECISION_EVENTS_CHANNEL.to_owned(),
        limit.max.to_string(),
        limit.window.as_millis().to_string(),
        keys::VOTE_RECORDED_CHANNEL.to_owned(),
        DECISION_INDEX_CAP.to_string(),
    ];
    (keys, args)
}

/// Arguments for `redis-benchmark` that run the vote script on random decisions and
/// instances (`__rand_int__` is replaced by the benchmark), the way a hub calls it.
pub(crate) fn vote_benchmark_command(
    sha: &str,
    total_instances: u64,
    limit: RateLimit,
) -> Vec<String> {
    let (mut keys, args) = vote_invocation(
        "rb__rand_int__",
        "i__rand_int__",
        "yes",
        Some(total_instances),
        limit,
    );
    keys[7] = keys::BENCH_DECISIONS_INDEX.to_owned();
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

    #[test]
    fn an_omitted_total_opens_with_the_default_and_its_quorum() {
        let (keys, args) = vote_invocation("d", "i", "v", None, LIMIT);
        assert_eq!(keys.len(), 8);
        assert_eq!(keys[7], keys::DECISIONS_INDEX);
        assert_eq!(args.len(), 12);
        assert_eq!(args[3], "", "nothing stated, so nothing to mismatch");
        assert_eq!(args[4], DEFAULT_TOTAL_INSTANCES.to_string());
        assert_eq!(args[5], quorum_for(DEFAULT_TOTAL_INSTANCES).to_string());
    }

    #[test]
    fn a_stated_total_opens_with_its_own_quorum() {
        let (_, args) = vote_invocation("d", "i", "v", Some(6), LIMIT);
        assert_eq!(args[3..6], ["6", "6", "4"]);
    }

    #[test]
    fn the_benchmark_command_declares_every_key_it_passes() {
        let command = vote_benchmark_command("sha", 60, LIMIT);
        let (keys, args) = vote_invocation("x", "y", "z", Some(60), LIMIT);
        assert_eq!(command[..3], ["EVALSHA", "sha", &keys.len().to_string()]);
        assert_eq!(command.len(), 3 + keys.len() + args.len());
        assert!(command[3..].iter().all(|part| !part.is_empty()));
    }
}
