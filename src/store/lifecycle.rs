//! The end of a decision's life: deadlines that close a decision as expired, exactly once
//! however many hubs run, and how long a closed decision is kept.
//!
//! A decision's deadline (`closesAt`) is fixed by its first vote and indexed in a sorted
//! set (one per partition on a cluster). Every hub asks the index for the decisions due now
//! and closes each with `expire.lua`; a vote that finds its decision past the deadline
//! closes it the same way. A closed decision's keys expire after the retention, counted
//! from when its event is logged: on one Redis the script that closes the decision, by
//! quorum or by deadline, logs its event and sets the expiry in the same run; on a cluster
//! the log step does (`mark_logged.lua`), so a decision is never gone before its event is
//! in the log.

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;

use super::log::Decided;
use super::stream::DECISION_STREAM_CAP;
use super::{Error, Store};

/// How the store closes decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifecycle {
    /// The deadline of a decision whose votes state none (`--max-open`).
    pub(crate) max_open: Duration,
    /// How long a closed decision's keys are kept once its event is logged
    /// (`--decision-retention`).
    pub(crate) retention: Duration,
}

impl Lifecycle {
    /// The defaults of `--max-open` and `--decision-retention`.
    pub(crate) const DEFAULT: Lifecycle = Lifecycle {
        max_open: Duration::from_millis(crate::decision::MAX_CLOSE_AFTER_MS),
        retention: Duration::from_secs(7 * 86_400),
    };
}

/// The expiry script's source (the shared definitions first).
pub(crate) const EXPIRE_SCRIPT: &str = concat!(
    include_str!("../../lua/decision_event.lua"),
    include_str!("../../lua/lifecycle.lua"),
    include_str!("../../lua/expire.lua")
);

/// Most due decisions one look at one deadlines index takes.
const EXPIRE_BATCH: usize = 100;
/// Due decisions a hub closes at once.
const EXPIRE_CONCURRENCY: usize = 16;

/// What one look for due decisions did.
#[derive(Debug, Default)]
pub(crate) struct Expiries {
    /// Decisions this look closed.
    pub(crate) closed: usize,
    /// Some index had more due than the look took: look again at once.
    pub(crate) more: bool,
    /// The first failure, if any.
    pub(crate) failure: Option<Error>,
}

/// What `expire.lua` answers: whether it closed the decision, then voteCount, quorum,
/// totalInstances, the tally (JSON), the event id ('' on a cluster) and expiredAt.
type ExpireReply = (
    u8,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<String>,
    Option<u64>,
);

impl Store {
    /// Closes as expired the decisions whose deadline has passed by Redis's clock, up to
    /// [`EXPIRE_BATCH`] per index, [`EXPIRE_CONCURRENCY`] at a time. Returns how many this
    /// call closed, whether an index had more due than it took (call again at once), and
    /// the first failure, if any: an index that cannot be read now is left for the next
    /// call, and the others are served.
    pub(crate) async fn expire_due(&self) -> Expiries {
        let mut expiries = Expiries::default();
        let now = match self.redis_time_ms().await {
            Ok(now) => now,
            Err(err) => {
                expiries.failure = Some(err);
                return expiries;
            }
        };
        let indexes = self.layout.deadlines_indexes();
        let listed = join_all(indexes.iter().map(|index| {
            let cmd = redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(EXPIRE_BATCH)
                .to_owned();
            async move { self.query::<Vec<String>>(&cmd).await }
        }))
        .await;
        let mut due = Vec::new();
        for names in listed {
            match names {
                Ok(names) => {
                    expiries.more |= names.len() == EXPIRE_BATCH;
                    due.extend(names);
                }
                Err(err) => {
                    expiries.failure.get_or_insert(err);
                }
            }
        }
        // Hubs that find the same due decisions start at different places in the list.
        if !due.is_empty() {
            let start = (now as usize ^ std::process::id() as usize) % due.len();
            due.rotate_left(start);
        }
        let outcomes: Vec<Result<bool, Error>> = futures::stream::iter(due)
            .map(|name| async move { self.expire(&name).await })
            .buffer_unordered(EXPIRE_CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(closed) => expiries.closed += usize::from(closed),
                Err(err) => {
                    expiries.failure.get_or_insert(err);
                }
            }
        }
        expiries
    }

    /// Redis's clock (ms): deadlines are Redis times, so "due" is asked by its clock.
    async fn redis_time_ms(&self) -> Result<u64, Error> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Closes one decision as expired if it is past its deadline and still open (on a
    /// cluster, then logs its event). Returns whether this call closed it.
    async fn expire(&self, name: &str) -> Result<bool, Error> {
        let key = |part| self.layout.decision(name, part);
        let deferred = self.layout.is_cluster();
        let mut keys = vec![
            key("votes"),
            key("tally"),
            key("result"),
            key("metadata"),
            key("ballots"),
            self.layout.deadlines(name),
        ];
        match self.layout.unlogged(name) {
            Some(unlogged) => keys.push(unlogged),
            None => {
                keys.push(self.layout.stream().to_owned());
                keys.push(self.layout.published().to_owned());
            }
        }
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let reply: ExpireReply = self
            .eval_acknowledged(
                &self.scripts.expire,
                &key_refs,
                &[
                    name,
                    if deferred { "defer" } else { "log" },
                    &self.lifecycle.retention.as_millis().to_string(),
                    &DECISION_STREAM_CAP.to_string(),
                    self.layout.decision_channel(),
                    self.publish_mode(),
                ],
            )
            .await?;
        let (closed, vote_count, quorum, total, tally, event_id, expired_at) = reply;
        if closed != 1 {
            return Ok(false);
        }
        match event_id.filter(|id| !id.is_empty()) {
            Some(event_id) => self.publish_acknowledged_upto(&event_id).await,
            None => {
                let expired = Decided {
                    decision: name.to_owned(),
                    value: String::new(),
                    vote_count: vote_count.unwrap_or_default(),
                    quorum: quorum.unwrap_or_default(),
                    total_instances: total.unwrap_or_default(),
                    decided_at: expired_at.unwrap_or_default(),
                    expired_tally: tally,
                };
                // Logged now, or by the sweep if this fails.
                if let Err(err) = self.log_decided(&expired).await {
                    tracing::warn!(%err, decision = name, "could not log an expired decision yet; the sweep will");
                }
            }
        }
        Ok(true)
    }
}
