//! Fan-out latency: many idle sessions, one voter making decisions, and the time until
//! each session (and the last one) has each decision; then how another session's calls
//! fare while decisions fan out.

use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::netstat::{Counters, Losses};
use super::{
    BenchError, DEFAULT_URL, Percentiles, Progress, Table, call, connect, decide_alone, histogram,
    register, run_tag,
};
use quorum_hub::protocol::peer::PeerSocket;
use quorum_hub::protocol::{StatusParams, event, method};

/// Calls the probing session makes, one after another, before its decisions: the
/// baseline for calls made while they fan out.
const PROBE_IDLE_CALLS: usize = 200;
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
    /// Decisions made after the timed ones while another session calls
    /// `system.quorum.status` over and over, to time calls during a fan-out (0: none).
    #[arg(long, default_value_t = 10)]
    pub call_probe_decisions: usize,
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
    /// Per timed decision: the deciding vote's round trip (sent to replied), which the
    /// fan-out figures start after.
    pub vote_us: Percentiles,
    /// Deliveries that never came, the warm-up decision and the call probe's included.
    pub missed: u64,
    /// What the kernel dropped and sent again over the timed decisions, machine-wide.
    pub kernel: Option<Losses>,
    /// How another session's calls fared during more decisions made after the timed ones.
    pub calls: Option<CallProbe>,
}

impl FanoutReport {
    /// The deliveries every decision made was due to make: each to every session.
    pub fn deliveries(&self) -> usize {
        let probed = self.calls.as_ref().map_or(0, |c| c.decisions);
        self.sessions * (self.decisions + 1 + probed)
    }
}

/// Round trips of `system.quorum.status` calls from one more session, made one after
/// another during decisions: those that overlapped a fan-out, and the rest.
#[derive(Debug, Clone, Serialize)]
pub struct CallProbe {
    /// Decisions made while the calls went on.
    pub decisions: usize,
    /// Calls that overlapped a fan-out, and their round trips.
    pub during_calls: usize,
    pub during_us: Percentiles,
    /// The other calls.
    pub idle_calls: usize,
    pub idle_us: Percentiles,
    /// Each call's round trip, in order: those that overlapped a fan-out, and the rest.
    #[serde(skip)]
    pub during_each_us: Vec<u64>,
    #[serde(skip)]
    pub idle_each_us: Vec<u64>,
}

impl CallProbe {
    /// Sorts calls, each `(sent, answered)`, by whether they overlapped one of `windows`.
    fn sort(
        decisions: usize,
        calls: &[(Instant, Instant)],
        windows: &[(Instant, Instant)],
    ) -> Self {
        let (mut during_each_us, mut idle_each_us) = (Vec::new(), Vec::new());
        for (sent, answered) in calls {
            let overlapped = windows
                .iter()
                .any(|(start, end)| sent <= end && answered >= start);
            let took = answered.saturating_duration_since(*sent).as_micros() as u64;
            if overlapped {
                during_each_us.push(took);
            } else {
                idle_each_us.push(took);
            }
        }
        Self {
            decisions,
            during_calls: during_each_us.len(),
            idle_calls: idle_each_us.len(),
            during_us: Percentiles::of_samples(&during_each_us),
            idle_us: Percentiles::of_samples(&idle_each_us),
            during_each_us,
            idle_each_us,
        }
    }
}

pub async fn run(options: &FanoutOptions) -> Result<FanoutReport, BenchError> {
    let tag = run_tag();
    // Registered, as agents are; the registration's round trip also proves the hub has the
    // session, so no decision precedes it.
    let prefix = format!("bl{tag}");
    let listeners = super::open_registered(&options.url, &prefix, options.sessions).await?;
    let (tx, rx) = mpsc::unbounded_channel::<(String, Instant)>();
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
    let mut deciding = Deciding {
        voter,
        instance,
        tag,
        deliveries: rx,
        sessions: options.sessions,
        missed: 0,
    };
    let mut last = histogram();
    let mut last_each = Vec::with_capacity(options.decisions);
    let mut each = histogram();
    let mut votes = histogram();
    let mut progress = Progress::new("deciding", options.decisions as u64);
    let mut counted_from = None;
    // Decision 0 warms up (every session's first write allocates its buffers); it is
    // checked for misses but not timed.
    for n in 0..=options.decisions {
        let decided = deciding.decide(n).await?;
        if n > 0 {
            for delay in &decided.deliveries {
                let _ = each.record(delay.as_micros() as u64);
            }
            let _ = last.record(decided.latest.as_micros() as u64);
            let vote = decided.replied.saturating_duration_since(decided.sent);
            let _ = votes.record(vote.as_micros() as u64);
            last_each.push(decided.latest.as_micros() as u64);
        } else {
            counted_from = Counters::read();
        }
        progress.set(n as u64);
    }
    progress.finish();
    let kernel = counted_from.zip(Counters::read()).map(|(a, b)| a.until(b));
    // After the timed decisions, so that the probe's calls do not weigh on them.
    let calls = match options.call_probe_decisions {
        0 => None,
        decisions => {
            let first = options.decisions + 1;
            Some(probe_calls(&options.url, &mut deciding, first..first + decisions).await?)
        }
    };
    for task in tasks {
        task.abort();
    }
    Ok(FanoutReport {
        sessions: options.sessions,
        decisions: options.decisions,
        last_delivery_us: Percentiles::of(&last),
        last_delivery_each_us: last_each,
        delivery_us: Percentiles::of(&each),
        vote_us: Percentiles::of(&votes),
        missed: deciding.missed,
        kernel,
        calls,
    })
}

/// The voter and what it needs to make decisions and wait for every session to have each.
struct Deciding {
    voter: PeerSocket,
    instance: String,
    tag: String,
    /// Each decision event a listener received: its decision, and when.
    deliveries: mpsc::UnboundedReceiver<(String, Instant)>,
    sessions: usize,
    /// Deliveries that never came, over every decision made so far.
    missed: u64,
}

/// One decision, as the listeners received it.
struct Decided {
    /// When its deciding vote was sent, and when the reply came.
    sent: Instant,
    replied: Instant,
    /// From the deciding vote's reply to each session's receiving it.
    deliveries: Vec<Duration>,
    /// The longest of those: to the last session.
    latest: Duration,
}

impl Deciding {
    /// Makes decision `n` (alone, with `totalInstances` 1) and waits until every session
    /// has it, or [`FANOUT_WAIT`].
    async fn decide(&mut self, n: usize) -> Result<Decided, BenchError> {
        let decision = format!("bf{}-{n}", self.tag);
        let (sent, replied) =
            decide_alone(&mut self.voter, n as u64 + 1, &self.instance, &decision).await?;
        let mut deliveries = Vec::with_capacity(self.sessions);
        let wait_until = tokio::time::Instant::now() + FANOUT_WAIT;
        while deliveries.len() < self.sessions {
            match tokio::time::timeout_at(wait_until, self.deliveries.recv()).await {
                Ok(Some((name, at))) if name == decision => {
                    deliveries.push(at.saturating_duration_since(replied));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.missed += (self.sessions - deliveries.len()) as u64;
        let latest = deliveries.iter().copied().max().unwrap_or_default();
        Ok(Decided {
            sent,
            deliveries,
            replied,
            latest,
        })
    }
}

/// Has one more session call `system.quorum.status` [`PROBE_IDLE_CALLS`] times, then over
/// and over (one call at a time) while the decisions numbered `decisions` are made, and
/// sorts the calls' round trips by whether they overlapped a decision being made and
/// fanned out (from its deciding vote being sent to the last session having it) or not.
async fn probe_calls(
    url: &str,
    deciding: &mut Deciding,
    decisions: std::ops::Range<usize>,
) -> Result<CallProbe, BenchError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (ready, baseline_done) = tokio::sync::oneshot::channel();
    let (url, decision) = (url.to_owned(), format!("bf{}-0", deciding.tag));
    // On a thread and runtime of its own: on this one its calls would wait behind the
    // listeners' tasks, which take in every session's copy of each decision.
    let prober = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::Other(format!("the call probe's runtime: {e}")))?
            .block_on(call_over_and_over(&url, &decision, ready, stopped))
    });
    let mut windows = Vec::with_capacity(decisions.len());
    // Without a baseline (the prober failed), its error is reported below.
    if baseline_done.await.is_ok() {
        for n in decisions.clone() {
            let decided = deciding.decide(n).await?;
            windows.push((decided.sent, decided.replied + decided.latest));
        }
    }
    let _ = stop.send(true);
    let calls = tokio::task::spawn_blocking(move || prober.join())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| BenchError::Other("the call probe's thread failed".into()))??;
    Ok(CallProbe::sort(decisions.len(), &calls, &windows))
}

/// Calls `system.quorum.status` on `decision` one call after another: [`PROBE_IDLE_CALLS`]
/// calls, then says so on `baseline_done`, then more until told to stop. Returns when each
/// call was sent and answered.
async fn call_over_and_over(
    url: &str,
    decision: &str,
    baseline_done: tokio::sync::oneshot::Sender<()>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<(Instant, Instant)>, BenchError> {
    let mut prober = connect(url).await?;
    let params = StatusParams { decision };
    let mut calls = Vec::new();
    let mut baseline_done = Some(baseline_done);
    for id in 0.. {
        if id == PROBE_IDLE_CALLS as u64
            && let Some(done) = baseline_done.take()
        {
            let _ = done.send(());
        }
        let sent = Instant::now();
        tokio::select! {
            answer = call::<serde_json::Value>(&mut prober, id, method::STATUS, &params) => answer?,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        calls.push((sent, Instant::now()));
    }
    Ok(calls)
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
        "the deciding vote's round trip, before those (ms) p50/p99/max",
        report.vote_us.short_ms(),
    );
    t.row(
        "fan-out deliveries missed",
        format!("{} of {}", report.missed, report.deliveries()),
    );
    if let Some(calls) = &report.calls {
        call_rows(t, "", calls.during_calls, &calls.during_us, &calls.idle_us);
    }
    if let Some(kernel) = report.kernel {
        losses_row(
            t,
            &format!("fan-out to {} sessions", report.sessions),
            kernel,
        );
    }
}

/// How another session's calls fared, `during` a fan-out and otherwise (`idle`), as rows.
pub(super) fn call_rows(
    t: &mut Table,
    runs: &str,
    during_calls: usize,
    during: &Percentiles,
    idle: &Percentiles,
) {
    t.row(
        format!(
            "{runs}another session's status call while a decision is made and fans out, {during_calls} \
             calls (ms) p50/p99/max"
        ),
        during.short_ms(),
    );
    t.row(
        format!("{runs}the same call otherwise (ms) p50/p99/max"),
        idle.short_ms(),
    );
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
