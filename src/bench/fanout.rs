//! Fan-out latency: many idle sessions, one voter making decisions, and the time until
//! each session (and the last one) has each decision.

use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::netstat::{Counters, Losses};
use super::{
    BenchError, DEFAULT_URL, Percentiles, Progress, Table, call, connect, histogram, register,
    run_tag,
};
use crate::protocol::{VoteParams, VoteReply, event, method};

/// Longest a fan-out scenario waits for one decision to reach every session.
const FANOUT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct FanoutOptions {
    /// The hub's WebSocket endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Idle sessions that only listen.
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    #[arg(long, default_value_t = 20)]
    pub decisions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub sessions: usize,
    pub decisions: usize,
    /// Per decision: from the deciding vote's reply to the last session receiving it.
    pub last_delivery_us: Percentiles,
    /// The same for each timed decision, in order.
    pub last_delivery_each_us: Vec<u64>,
    /// Every delivery: from the deciding vote's reply to one session receiving it.
    pub delivery_us: Percentiles,
    /// Deliveries that never came, the warm-up decision included.
    pub missed: u64,
    /// What the kernel dropped and sent again over the timed decisions, machine-wide.
    pub kernel: Option<Losses>,
}

pub async fn run(options: &FanoutOptions) -> Result<FanoutReport, BenchError> {
    let tag = run_tag();
    // Registered, as agents are; the registration's round trip also proves the hub has the
    // session, so no decision precedes it.
    let prefix = format!("bl{tag}");
    let listeners = super::open_registered(&options.url, &prefix, options.sessions).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let mut tasks = Vec::new();
    for mut socket in listeners {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let received = Instant::now();
                // The bench names its decisions plainly, so a substring finds the name
                // without parsing every copy of the event.
                if let Message::Text(text) = frame
                    && text.contains(event::DECISION_MADE)
                    && let Some(name) = decision_name(&text)
                    && tx.send((name.to_owned(), received)).is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut voter = connect(&options.url).await?;
    let instance = format!("bf{tag}");
    register(&mut voter, &instance).await?;
    let mut last = histogram();
    let mut last_each = Vec::with_capacity(options.decisions);
    let mut each = histogram();
    let mut missed = 0u64;
    let mut progress = Progress::new("deciding", options.decisions as u64);
    let mut counted_from = None;
    // Decision 0 warms up (every session's first write allocates its buffers); it is
    // checked for misses but not timed.
    for n in 0..=options.decisions {
        let decision = format!("bf{tag}-{n}");
        let params = VoteParams {
            instance_id: &instance,
            decision: &decision,
            value: "go",
            total_instances: Some(1),
            close_after_ms: None,
        };
        let reply: VoteReply = call(&mut voter, n as u64 + 1, method::VOTE, &params).await?;
        let replied = Instant::now();
        if !reply.quorum_reached {
            return Err(BenchError::Refused(format!(
                "decision {decision} was not made: {}",
                reply.outcome()
            )));
        }
        let mut received = 0usize;
        let mut latest = Duration::ZERO;
        let wait_until = tokio::time::Instant::now() + FANOUT_WAIT;
        while received < options.sessions {
            match tokio::time::timeout_at(wait_until, rx.recv()).await {
                Ok(Some((name, at))) if name == decision => {
                    let delay = at.saturating_duration_since(replied);
                    if n > 0 {
                        let _ = each.record(delay.as_micros() as u64);
                    }
                    latest = latest.max(delay);
                    received += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missed += (options.sessions - received) as u64;
        if n > 0 {
            let _ = last.record(latest.as_micros() as u64);
            last_each.push(latest.as_micros() as u64);
        } else {
            counted_from = Counters::read();
        }
        progress.set(n as u64);
    }
    progress.finish();
    let kernel = counted_from.zip(Counters::read()).map(|(a, b)| a.until(b));
    for task in tasks {
        task.abort();
    }
    Ok(FanoutReport {
        sessions: options.sessions,
        decisions: options.decisions,
        last_delivery_us: Percentiles::of(&last),
        last_delivery_each_us: last_each,
        delivery_us: Percentiles::of(&each),
        missed,
        kernel,
    })
}

/// The `decision` of a decision event whose name needs no JSON escaping.
fn decision_name(text: &str) -> Option<&str> {
    let start = text.find("\"decision\":\"")? + "\"decision\":\"".len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The report's rows, for its own table and the suite's.
pub(super) fn rows(t: &mut Table, report: &FanoutReport) {
    t.row(
        format!(
            "fan-out to all of {} sessions, {} decisions (ms) p50/p99/max",
            report.sessions, report.decisions
        ),
        report.last_delivery_us.short_ms(),
    );
    t.row(
        "fan-out deliveries missed",
        format!(
            "{} of {}",
            report.missed,
            report.sessions * (report.decisions + 1)
        ),
    );
    if let Some(kernel) = report.kernel {
        losses_row(
            t,
            &format!("fan-out to {} sessions", report.sessions),
            kernel,
        );
    }
}

/// The kernel's drops and retransmissions over some fan-out runs, as one row.
pub(super) fn losses_row(t: &mut Table, runs: &str, kernel: Losses) {
    t.row(
        format!(
            "{runs}: packets the kernel dropped (backlog full) / TCP retransmits, machine-wide"
        ),
        format!("{} / {}", kernel.backlog_drops, kernel.tcp_retransmits),
    );
}
