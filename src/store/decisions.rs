//! Votes and decisions: the vote script's invocation and outcomes, audit trails, and the
//! recent-decisions index.

use std::collections::HashMap;

use redis::FromRedisValue;

use super::ballot::{
    Reservation, Reserved, RunSettings, ScriptBallot, ScriptVote, run_invocation, script_vote,
};
use super::keys;
use super::vote_reply::VoteScriptReply;
use super::{MAX_PAGE_BYTES, Store, field_u64, internal};
use crate::config::RateLimit;
use crate::decision::{self, DecisionName, VoteOutcome};
use crate::error::Error;
use crate::protocol::policy::{DecisionPolicy, ElectorateSnapshot};
use crate::protocol::{
    DecisionCursor, DecisionState, DecisionStatus, DecisionSummary, RecordedVote,
};

/// Bytes a decision's summary counts for in a page, beyond its name (its value is at most
/// 256 characters).
const SUMMARY_BYTES: usize = 1200;

/// The vote script's source, for tools that load it themselves.
pub(crate) const VOTE_SCRIPT: &str = concat!(
    include_str!("../../lua/decision_event.lua"),
    include_str!("../../lua/lifecycle.lua"),
    include_str!("../../lua/quorum_vote.lua")
);

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
    ///
    /// The vote joins its partition's batch (see [`super::vote_batch`]). On a cluster a
    /// vote takes up to three steps (see ARCHITECTURE.md): a place in the voter's rate
    /// window, the vote script in the decision's slot, and, for a decision
    /// whose event is not logged yet, the log script in the event log's slot. Once the
    /// vote script has answered, the answer stands: a failure to log is left to the sweep
    /// ([`Store::log_unlogged`]) and never turns a recorded vote into an error.
    pub(crate) async fn vote(
        &self,
        ballot: &decision::Ballot,
        limit: RateLimit,
        opening: crate::policy::Opening<'_>,
    ) -> Result<VoteOutcome, Error> {
        let instance = ballot.instance.as_str();
        let reservation = if self.layout.is_cluster() && limit.max > 0 {
            Some(self.reserve_vote(instance, limit).await?)
        } else {
            None
        };
        let vote = script_vote(
            &self.layout,
            ScriptBallot {
                decision: ballot.decision.as_str(),
                instance,
                value: ballot.value.as_str(),
                total_instances: ballot.total_instances,
                close_after_ms: ballot.close_after_ms,
                opening,
            },
            Reserved::from(reservation.as_ref()),
            self.lifecycle,
        );
        let settings = RunSettings {
            limit,
            publish_later: self.waits_for_replicas(),
            lifecycle: self.lifecycle,
        };
        // Votes on one partition share a queue, so that a batch's keys share one slot.
        let partition = self.layout.partition(ballot.decision.as_str());
        let voted = self.vote_batches[partition]
            .vote(self, vote, settings)
            .await;
        // A vote that did not count gives its place back. A vote that failed keeps it,
        // since the failure may hide a recorded vote.
        if let (Some(Reservation::Taken { at }), Ok(reply)) = (&reservation, &voted)
            && !reply.counted(at)
        {
            self.refund_vote(instance, at).await;
        }
        let reply = voted?;
        // Closed by this very vote: its WAIT confirmed the close (a vote that only found
        // the decision closed wrote nothing, so its WAIT confirms nothing).
        if reply.closed_now && !reply.event_id.is_empty() {
            // On one Redis the vote logged the event itself; with --wait-replicas it is
            // published now that the write is on the replicas.
            self.publish_acknowledged_upto(&reply.event_id).await;
        }
        if self.layout.is_cluster()
            && reply.event_id.is_empty()
            && let Some(decided) = reply.closed(ballot.decision.as_str())
        {
            self.log_after_vote(&decided, reply.closed_now).await;
        }
        Ok(reply.outcome)
    }

    /// Runs the vote script once for `votes` (in order), and with `--wait-replicas`
    /// answers only once its writes are on the replicas. Returns one answer per vote.
    pub(super) async fn run_votes(
        &self,
        votes: &[&ScriptVote],
        settings: RunSettings,
    ) -> Result<Vec<VoteScriptReply>, Error> {
        let run = run_invocation(&self.layout, votes, settings);
        let answers: Vec<VoteScriptReply> = self
            .eval_acknowledged(&self.scripts.vote, &run.keys(), &run.args())
            .await?;
        if answers.len() != votes.len() {
            return Err(internal(format!(
                "the vote script answered {} of {} votes",
                answers.len(),
                votes.len()
            )));
        }
        Ok(answers)
    }

    /// Takes a place in the instance's vote-rate window (cluster only).
    async fn reserve_vote(&self, instance: &str, limit: RateLimit) -> Result<Reservation, Error> {
        let (taken, value): (i64, String) = self
            .eval(
                &self.scripts.reserve_vote,
                &[&keys::vote_rate(instance)],
                &[
                    &limit.max.to_string(),
                    &limit.window.as_millis().to_string(),
                ],
            )
            .await?;
        Ok(if taken == 1 {
            Reservation::Taken { at: value }
        } else {
            Reservation::Refused {
                retry_after_ms: value.parse().unwrap_or(1),
            }
        })
    }

    /// Gives back a place taken for a vote that was not recorded. Best effort: a place
    /// not given back only lapses with its window.
    async fn refund_vote(&self, instance: &str, at: &str) {
        let refund = redis::cmd("LREM")
            .arg(keys::vote_rate(instance))
            .arg(1)
            .arg(at)
            .to_owned();
        if let Err(err) = self.query::<i64>(&refund).await {
            tracing::warn!(%err, instance, "could not give back a vote-rate place");
        }
    }

    /// The audit trail of one decision, or `None` when it has no votes.
    pub(crate) async fn status(
        &self,
        decision: &DecisionName,
    ) -> Result<Option<DecisionStatus>, Error> {
        let name = decision.as_str();
        let key = |part| self.layout.decision(name, part);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(key("metadata"))
            .cmd("HGETALL")
            .arg(key("result"))
            .cmd("ZRANGE")
            .arg(key("votes"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(key("ballots"))
            .cmd("HGETALL")
            .arg(key("tally"));
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
        let expired_at = result.get("expiredAt").and_then(|t| t.parse().ok());
        Ok(Some(DecisionStatus {
            decision: name.to_owned(),
            state: DecisionState::of(final_decision.is_some(), expired_at.is_some()),
            total_instances: field_u64(&meta, "totalInstances"),
            quorum: field_u64(&meta, "quorum"),
            vote_count: votes.len() as u64,
            tally: tally_in_vote_order(&votes, &tally),
            votes,
            quorum_reached: final_decision.is_some(),
            final_decision,
            decided_at: result.get("decidedAt").and_then(|t| t.parse().ok()),
            closes_at: meta.get("closesAt").and_then(|t| t.parse().ok()),
            expired_at,
            policy: decision_policy(&meta),
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
        // On a cluster each partition has its index; their pages are merged in that order.
        let indexes = self.layout.decisions_indexes();
        let mut cmds = Vec::new();
        for index in &indexes {
            match after {
                None => cmds.push(
                    redis::cmd("ZREVRANGE")
                        .arg(index)
                        .arg(0)
                        .arg(limit)
                        .arg("WITHSCORES")
                        .to_owned(),
                ),
                Some(cursor) => {
                    cmds.push(
                        redis::cmd("ZREVRANGEBYSCORE")
                            .arg(index)
                            .arg(cursor.opened_at)
                            .arg(cursor.opened_at)
                            .arg("WITHSCORES")
                            .to_owned(),
                    );
                    cmds.push(
                        redis::cmd("ZREVRANGEBYSCORE")
                            .arg(index)
                            .arg(format!("({}", cursor.opened_at))
                            .arg("-inf")
                            .arg("WITHSCORES")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit + 1)
                            .to_owned(),
                    );
                }
            }
        }
        let mut listed: Indexed = Vec::new();
        for (n, reply) in self.query_each(cmds).await?.iter().enumerate() {
            let entries: Indexed = FromRedisValue::from_redis_value_ref(reply).map_err(internal)?;
            let same_moment = after.is_some() && n % 2 == 0;
            listed.extend(entries.into_iter().filter(|(name, _)| match after {
                Some(cursor) if same_moment => *name < cursor.decision,
                _ => true,
            }));
        }
        listed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        listed.truncate(limit + 1);
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
        let mut cmds = Vec::with_capacity(names.len() * 3);
        for name in &names {
            let key = |part| self.layout.decision(name, part);
            cmds.push(
                redis::cmd("HMGET")
                    .arg(key("metadata"))
                    .arg(&[
                        "totalInstances",
                        "quorum",
                        "openedAt",
                        "closesAt",
                        "policy",
                        "threshold",
                        "role",
                    ])
                    .to_owned(),
            );
            cmds.push(redis::cmd("ZCARD").arg(key("votes")).to_owned());
            cmds.push(
                redis::cmd("HMGET")
                    .arg(key("result"))
                    .arg(&["value", "decidedAt", "expiredAt"])
                    .to_owned(),
            );
        }
        let replies = self.query_each(cmds).await?;
        let mut decisions = Vec::with_capacity(names.len());
        let mut gone = Vec::new();
        for (name, chunk) in names.into_iter().zip(replies.chunks(3)) {
            let [meta, count, result] = chunk else { break };
            let text: Vec<Option<String>> =
                FromRedisValue::from_redis_value_ref(meta).map_err(internal)?;
            let text = |n: usize| text.get(n).cloned().flatten();
            let meta: Vec<Option<u64>> = (0..4)
                .map(|n| text(n).and_then(|t| t.parse().ok()))
                .collect();
            let vote_count: u64 = FromRedisValue::from_redis_value_ref(count).map_err(internal)?;
            let result: Vec<Option<String>> =
                FromRedisValue::from_redis_value_ref(result).map_err(internal)?;
            let (Some(total_instances), Some(quorum)) = (
                meta.first().copied().flatten(),
                meta.get(1).copied().flatten(),
            ) else {
                // Its keys expired after the retention (or were removed): it leaves the index.
                gone.push(name);
                continue;
            };
            let final_decision = result.first().cloned().flatten();
            let expired_at = result
                .get(2)
                .cloned()
                .flatten()
                .and_then(|t| t.parse().ok());
            decisions.push(DecisionSummary {
                state: DecisionState::of(final_decision.is_some(), expired_at.is_some()),
                closes_at: meta.get(3).copied().flatten(),
                expired_at,
                decision: name,
                total_instances,
                quorum,
                vote_count,
                quorum_reached: final_decision.is_some(),
                final_decision,
                opened_at: meta[2].unwrap_or_default(),
                policy: text(4),
                threshold: text(5),
                electorate_role: text(6),
                decided_at: result
                    .get(1)
                    .cloned()
                    .flatten()
                    .and_then(|t| t.parse().ok()),
            });
        }
        if !gone.is_empty() {
            let cmds = gone
                .iter()
                .map(|name| {
                    redis::cmd("ZREM")
                        .arg(self.layout.decisions_index(name))
                        .arg(name)
                        .to_owned()
                })
                .collect();
            // Best effort: the next page that meets them tries again.
            if let Err(err) = self.query_each(cmds).await {
                tracing::debug!(%err, "could not drop expired decisions from the index");
            }
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

/// The prefix of the metadata fields that list a decision's electors.
const MEMBER_FIELD: &str = "member:";

/// The terms the vote script stored in a decision's metadata (see `lua/quorum_vote.lua`);
/// `None` for a decision opened without a policy.
fn decision_policy(meta: &HashMap<String, String>) -> Option<DecisionPolicy> {
    let pattern = meta.get("policy")?.clone();
    let electorate = meta.get("role").map(|role| {
        let mut members: Vec<String> = meta
            .keys()
            .filter_map(|field| field.strip_prefix(MEMBER_FIELD))
            .map(str::to_owned)
            .collect();
        members.sort();
        ElectorateSnapshot {
            role: role.clone(),
            members,
        }
    });
    Some(DecisionPolicy {
        pattern,
        threshold: meta.get("threshold").cloned().unwrap_or_default(),
        electorate,
        values: meta
            .get("values")
            .and_then(|text| serde_json::from_str(text).ok()),
        openers: meta.get("openers").cloned(),
    })
}
