//! Votes on one Redis reach the vote script in batches: group commit for votes.
//!
//! A vote joins the queue; while fewer than [`RUNNING_BATCHES`] batches run, one more
//! starts at once, so a lone vote is sent without waiting. While they run, votes queue,
//! and the next batch takes every vote that waited (at most [`MAX_BATCH_VOTES`]) into one
//! run of the script. The run judges them one after another, in queue order, exactly as
//! separate runs would; what they share is the run's fixed cost in Redis (the call and
//! its parsing, the clock, the dashboards flag, the append-only file's transaction) and
//! one round trip. On a cluster every key of a run must share one slot, so the store
//! keeps one queue per partition (see [`Store::vote`]): a batch holds votes on one
//! partition's decisions only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::Store;
use super::ballot::{RunSettings, ScriptVote};
use super::vote_reply::VoteScriptReply;
use crate::error::Error;

/// Batches that run at once: one runs in Redis while the next is on its way.
const RUNNING_BATCHES: usize = 2;
/// Most votes one run of the script judges, so that one run holds Redis for about a
/// millisecond at most.
pub(crate) const MAX_BATCH_VOTES: usize = 64;

/// The votes waiting for a batch, and how many batches run.
#[derive(Default)]
pub(super) struct VoteBatches {
    state: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    running: usize,
}

/// A vote waiting for its batch, and where its answer goes.
struct Waiting {
    vote: ScriptVote,
    settings: RunSettings,
    answer: oneshot::Sender<Result<VoteScriptReply, Error>>,
}

impl VoteBatches {
    /// Runs `vote` in the next batch and returns its answer. A caller that stops waiting
    /// before its batch is sent takes its vote out: it is never run.
    pub(super) async fn vote(
        self: &Arc<Self>,
        store: &Store,
        vote: ScriptVote,
        settings: RunSettings,
    ) -> Result<VoteScriptReply, Error> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push_back(Waiting {
                vote,
                settings,
                answer,
            });
            let start = queue.running < RUNNING_BATCHES;
            if start {
                queue.running += 1;
            }
            start
        };
        if start {
            // A task of its own, so that a caller that stops waiting never strands the
            // votes batched with its own.
            tokio::spawn(Runner(Some(self.clone())).run(store.clone()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a vote batch ended unanswered".into())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next batch: the votes at the head of the queue that share its settings, at
    /// most [`MAX_BATCH_VOTES`], leaving out those whose caller stopped waiting. `None`
    /// when no vote waits: the runner is then counted out, under the same lock as a new
    /// vote looks at the count, so that no vote is left waiting without a runner.
    fn next_batch(&self) -> Option<Vec<Waiting>> {
        let mut queue = self.lock();
        let mut batch: Vec<Waiting> = Vec::new();
        while batch.len() < MAX_BATCH_VOTES {
            let Some(next) = queue.waiting.front() else {
                break;
            };
            if batch
                .first()
                .is_some_and(|first| first.settings != next.settings)
            {
                break;
            }
            let next = queue.waiting.pop_front().expect("the front was just seen");
            if !next.answer.is_closed() {
                batch.push(next);
            }
        }
        if batch.is_empty() {
            queue.running -= 1;
            return None;
        }
        Some(batch)
    }
}

/// One of the running batches' loops. It is counted out when no vote waits, or, should
/// it end otherwise, when dropped.
struct Runner(Option<Arc<VoteBatches>>);

impl Runner {
    /// Runs batches until none is waiting.
    async fn run(mut self, store: Store) {
        loop {
            let Some(batches) = &self.0 else { return };
            let Some(batch) = batches.next_batch() else {
                self.0 = None;
                return;
            };
            let votes: Vec<&ScriptVote> = batch.iter().map(|w| &w.vote).collect();
            let answers = store.run_votes(&votes, batch[0].settings).await;
            match answers {
                Ok(answers) => {
                    for (waiting, answer) in batch.into_iter().zip(answers) {
                        // A caller that stopped waiting meanwhile is not told.
                        let _ = waiting.answer.send(Ok(answer));
                    }
                }
                Err(err) => {
                    for waiting in batch {
                        let _ = waiting.answer.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(batches) = &self.0 {
            batches.lock().running -= 1;
        }
    }
}
