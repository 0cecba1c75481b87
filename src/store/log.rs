//! On a cluster, the second step of a decision: its event into the one event log, once,
//! and the sweep that finishes decisions whose hub stopped between the two steps.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;

use super::{Store, field_u64, internal};
use crate::error::Error;
use crate::protocol::EventId;

use super::stream::DECISION_STREAM_CAP;

/// The log script's source (the shared event definition first).
pub(crate) const LOG_SCRIPT: &str = concat!(
    include_str!("../../lua/decision_event.lua"),
    include_str!("../../lua/log_decision.lua")
);

/// On a cluster, longest a vote waits for the decision it made to be logged before it is
/// answered anyway (the sweep finishes the log step).
const LOG_STEP_TIMEOUT: Duration = Duration::from_millis(500);

/// Most unlogged decisions one sweep logs per partition.
const SWEEP_BATCH: usize = 100;

/// The parts of a decision, besides its result, that expire with it once its event is
/// logged (`places` holds the rate-window places of its recorded votes).
const RETAINED_WITH_RESULT: [&str; 5] = ["votes", "tally", "metadata", "ballots", "places"];

/// A decision a script closed (made, or expired): everything its event carries but the
/// event id.
#[derive(Debug, Clone)]
pub(crate) struct Decided {
    pub decision: String,
    /// The winning value ('' for an expired decision).
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
    /// When it was decided, or when it expired.
    pub decided_at: u64,
    /// For an expired decision, its tally at expiry (JSON).
    pub expired_tally: Option<String>,
}

impl Store {
    /// The log step of a vote that found its decision closed and its event not logged yet
    /// (`closed_now`: closed by this very vote). A failure is left to the sweep
    /// ([`Store::log_unlogged`]).
    pub(crate) async fn log_after_vote(&self, decided: &Decided, closed_now: bool) {
        let log_step = async {
            // A vote that closed it was confirmed with it; any other vote may
            // have written nothing, so with --wait-replicas the decision's own write
            // is confirmed before it is logged (and so published).
            if !closed_now && let Some(mark) = self.layout.partition_ack_mark(&decided.decision) {
                self.confirm_partition(&mark).await?;
            }
            self.log_decided(decided).await
        };
        // Bounded on its own, well within the vote's timeout: the vote is answered
        // from the script's result whatever happens here.
        match tokio::time::timeout(LOG_STEP_TIMEOUT, log_step).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(%err, decision = %decided.decision, "could not log a decision yet; the sweep will")
            }
            Err(_) => {
                tracing::warn!(decision = %decided.decision, "logging a decision is slow; the sweep will finish it")
            }
        }
    }

    /// Appends a decided decision's event to the log (or finds the one it was logged
    /// with), then, in the decision's slot, records its event id beside the result, takes
    /// it off the unlogged set and sets its keys to expire after the retention: on a
    /// cluster a closed decision is kept, however long, until its event is logged.
    pub(crate) async fn log_decided(&self, decided: &Decided) -> Result<EventId, Error> {
        let name = decided.decision.as_str();
        let Some(unlogged) = self.layout.unlogged(name) else {
            return Err(Error::Internal(
                "only a cluster logs decisions in a second step".into(),
            ));
        };
        // With --wait-replicas the event is on the log's replicas before the decision is
        // marked as logged: a log lost in a failover is logged again by the sweep.
        let event_id: String = self
            .eval_acknowledged(
                &self.scripts.log_decision,
                &[
                    self.layout.stream(),
                    &self.layout.logged(name),
                    self.layout.published(),
                ],
                &[
                    name,
                    &decided.value,
                    &decided.vote_count.to_string(),
                    &decided.quorum.to_string(),
                    &decided.total_instances.to_string(),
                    &decided.decided_at.to_string(),
                    &DECISION_STREAM_CAP.to_string(),
                    self.layout.decision_channel(),
                    // The mark lives as long as the decision it marks (`--decision-retention`):
                    // logging it again within that time returns the same event.
                    &self.lifecycle.retention.as_millis().to_string(),
                    self.publish_mode(),
                    decided.expired_tally.as_deref().unwrap_or(""),
                ],
            )
            .await?;
        self.publish_acknowledged_upto(&event_id).await;
        // The decision's retention starts here, now that its event is logged.
        let key = |part| self.layout.decision(name, part);
        let mut keys = vec![key("result"), unlogged];
        keys.extend(RETAINED_WITH_RESULT.iter().map(|part| key(part)));
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.eval::<i64>(
            &self.scripts.mark_logged,
            &key_refs,
            &[
                &event_id,
                name,
                &self.lifecycle.retention.as_millis().to_string(),
            ],
        )
        .await?;
        event_id.parse().map_err(internal)
    }

    /// Logs the decisions decided before `before_ms` whose events are not in the log yet:
    /// their hub stopped between the two steps, or its log step failed. A partition or a
    /// decision that cannot be reached now is left for the next sweep; the others are
    /// logged. Returns how many were logged, and the first failure, if any.
    pub(crate) async fn log_unlogged(&self, before_ms: u64) -> (usize, Option<Error>) {
        let sets = self.layout.unlogged_sets();
        let listed = join_all(sets.iter().map(|set| async move {
            let mut cmd = redis::cmd("ZRANGEBYSCORE");
            cmd.arg(set)
                .arg("-inf")
                .arg(format!("({before_ms}"))
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH);
            self.query::<Vec<String>>(&cmd).await
        }))
        .await;
        let mut logged = 0;
        let mut failure = None;
        let marks = self.layout.partition_ack_marks();
        for ((set, mark), names) in sets.iter().zip(&marks).zip(listed) {
            let names = match names {
                Ok(names) if names.is_empty() => continue,
                Ok(names) => names,
                Err(err) => {
                    failure.get_or_insert(err);
                    continue;
                }
            };
            // Their decisions may be the writes of votes that replicas did not confirm.
            if let Err(err) = self.confirm_partition(mark).await {
                failure.get_or_insert(err);
                continue;
            }
            for name in names {
                match self.log_one_unlogged(set, name).await {
                    Ok(done) => logged += usize::from(done),
                    Err(err) => {
                        failure.get_or_insert(err);
                    }
                }
            }
        }
        (logged, failure)
    }

    /// Logs one decision from an unlogged set, or takes it off if there is nothing left to
    /// log (logged meanwhile, or gone). Returns whether it logged it.
    async fn log_one_unlogged(&self, set: &str, name: String) -> Result<bool, Error> {
        let key = |part| self.layout.decision(&name, part);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HGETALL")
            .arg(key("result"))
            .cmd("HMGET")
            .arg(key("metadata"))
            .arg(&["quorum", "totalInstances"]);
        type Reply = (HashMap<String, String>, Vec<Option<u64>>);
        let (result, meta): Reply = self.query_pipe(&pipe).await?;
        let closed = result.contains_key("value") || result.contains_key("expiredAt");
        if !closed || result.contains_key("eventId") {
            self.query::<()>(redis::cmd("ZREM").arg(set).arg(&name))
                .await?;
            return Ok(false);
        }
        let expired_tally = result
            .get("expiredAt")
            .map(|_| result.get("tally").cloned().unwrap_or_else(|| "{}".into()));
        let decided = Decided {
            value: result.get("value").cloned().unwrap_or_default(),
            vote_count: field_u64(&result, "voteCount"),
            decided_at: field_u64(
                &result,
                if expired_tally.is_some() {
                    "expiredAt"
                } else {
                    "decidedAt"
                },
            ),
            quorum: meta.first().copied().flatten().unwrap_or_default(),
            total_instances: meta.get(1).copied().flatten().unwrap_or_default(),
            expired_tally,
            decision: name,
        };
        self.log_decided(&decided).await?;
        Ok(true)
    }
}
