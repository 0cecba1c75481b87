//! Vote throughput and latency: sessions, each its own instance with one vote in flight,
//! grouped `group` to a decision; each moving on at its own pace, or (`--together`) a
//! group voting on each decision at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::{BenchError, DEFAULT_URL, Percentiles, Progress, Table, call, histogram, run_tag};
use quorum_hub::config::parse_duration;
use quorum_hub::protocol::peer::CallError;
use quorum_hub::protocol::{VoteParams, VoteReply, method};

/// How often the progress bar is redrawn while the votes run.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Args)]
pub struct VotesOptions {
    /// The hub's WebSocket endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Sessions, each its own instance, each with one vote in flight.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Sessions per decision (`totalInstances`).
    #[arg(long, default_value_t = 60)]
    pub group: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many votes, if sooner.
    #[arg(long = "votes", value_name = "N")]
    pub max_votes: Option<u64>,
    /// Votes per second per session (default: as fast as replies come).
    #[arg(long)]
    pub rate: Option<f64>,
    /// A group's sessions vote on each decision together, like agents answering one
    /// question at once: each round starts once the whole group has its replies to the last.
    /// Without it each session moves on to its next decision as soon as it has its reply.
    #[arg(long, conflicts_with = "max_votes")]
    pub together: bool,
}

/// Longest a session of a group voting together waits for the rest of its group past the
/// run's end, should one of them have stopped.
const TOGETHER_GRACE: Duration = Duration::from_secs(5);

/// What a group voting together shares: where its rounds meet, and whether to stop.
struct Lockstep {
    barrier: tokio::sync::Barrier,
    stop: std::sync::atomic::AtomicBool,
}

impl Lockstep {
    /// Waits for the whole group; false once the group is to stop (the run's end, as its
    /// leader saw it, or a member that stopped answering).
    async fn next_round(&self, deadline: Instant) -> bool {
        let until = (deadline + TOGETHER_GRACE).into();
        let Ok(met) = tokio::time::timeout_at(until, self.barrier.wait()).await else {
            return false;
        };
        if met.is_leader() {
            self.stop
                .store(Instant::now() >= deadline, Ordering::Relaxed);
        }
        if tokio::time::timeout_at(until, self.barrier.wait())
            .await
            .is_err()
        {
            return false;
        }
        !self.stop.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub sessions: usize,
    pub group: usize,
    pub votes: u64,
    pub seconds: f64,
    pub votes_per_second: f64,
    pub latency_us: Percentiles,
    /// Replies by outcome: recorded, decided_now, already_voted, decided, circuit_open,
    /// or the error code.
    pub outcomes: BTreeMap<String, u64>,
}

pub async fn run(options: &VotesOptions) -> Result<VotesReport, BenchError> {
    let prefix = format!("bv{}", run_tag());
    let sessions = super::open_registered(&options.url, &prefix, options.sessions).await?;
    let group = options.group.max(1);
    // One meeting point per group of sessions voting together (the last may be smaller).
    let locksteps: Vec<Arc<Lockstep>> = (0..options.sessions.div_ceil(group))
        .map(|g| {
            Arc::new(Lockstep {
                barrier: tokio::sync::Barrier::new(group.min(options.sessions - g * group)),
                stop: Default::default(),
            })
        })
        .collect();
    let cast = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = Vec::new();
    for (i, mut socket) in sessions.into_iter().enumerate() {
        let (cast, options, prefix) = (cast.clone(), options.clone(), prefix.clone());
        let lockstep = options.together.then(|| locksteps[i / group].clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let instance = format!("{prefix}-{i}");
            let pace = options
                .rate
                .map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
            let mut next_at = Instant::now();
            // Each session stops by itself at the deadline or when the vote budget is spent.
            for round in 0u64.. {
                if let Some(lockstep) = &lockstep {
                    if !lockstep.next_round(deadline).await {
                        break;
                    }
                } else if Instant::now() >= deadline {
                    break;
                }
                if let Some(max) = options.max_votes
                    && cast.fetch_add(1, Ordering::Relaxed) >= max
                {
                    break;
                }
                if let Some(pace) = pace {
                    tokio::time::sleep_until(next_at.into()).await;
                    next_at += pace;
                }
                let decision = format!("{prefix}-g{}-{round}", i / group);
                let params = VoteParams {
                    instance_id: &instance,
                    decision: &decision,
                    value: if round % 2 == 0 { "yes" } else { "no" },
                    total_instances: Some(group as u64),
                    close_after_ms: None,
                };
                let sent = Instant::now();
                let reply = call::<VoteReply>(&mut socket, round + 1, method::VOTE, &params).await;
                let outcome = match reply {
                    Ok(reply) => reply.outcome().to_owned(),
                    Err(CallError::Rpc(error)) => error.code.to_string(),
                    Err(CallError::Malformed(_)) => "malformed".to_owned(),
                    Err(CallError::Closed) => {
                        *outcomes.entry("closed".into()).or_default() += 1;
                        break;
                    }
                };
                let _ = latency.record(sent.elapsed().as_micros() as u64);
                *outcomes.entry(outcome).or_default() += 1;
                if options.max_votes.is_none() {
                    cast.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = socket.close(None).await;
            (latency, outcomes)
        }));
    }
    let mut progress = Progress::new("voting", options.duration.as_millis() as u64);
    while !tasks.iter().all(|t| t.is_finished()) {
        progress.set(started.elapsed().as_millis() as u64);
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
    progress.finish();
    let mut latency = histogram();
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        let (h, o) = task.await.map_err(|e| BenchError::Other(e.to_string()))?;
        latency
            .add(&h)
            .map_err(|e| BenchError::Other(e.to_string()))?;
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let votes = latency.len();
    Ok(VotesReport {
        sessions: options.sessions,
        group,
        votes,
        seconds,
        votes_per_second: votes as f64 / seconds,
        latency_us: Percentiles::of(&latency),
        outcomes,
    })
}

/// The report as a table.
pub fn table(report: &VotesReport) -> String {
    let mut t = Table::new();
    t.row(
        "sessions, group",
        format!("{}, {}", report.sessions, report.group),
    );
    t.row(
        "votes in seconds",
        format!("{} in {:.1}", report.votes, report.seconds),
    );
    t.row("votes/s", format!("{:.0}", report.votes_per_second));
    t.row(
        "latency (ms) p50/p90/p99/p99.9/max",
        report.latency_us.long_ms(),
    );
    for (outcome, count) in &report.outcomes {
        t.row(format!("replies: {outcome}"), count);
    }
    t.0
}
