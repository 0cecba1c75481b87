//! The load generator behind `quorum-hub bench`: vote throughput and latency, fan-out
//! latency to many idle sessions, and memory per session, against a running hub.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sessions opened at once while setting up a scenario.
const CONNECT_CONCURRENCY: usize = 200;
/// Longest a fan-out scenario waits for one decision to reach every session.
const FANOUT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connecting to {0}: {1}")]
    Connect(String, String),
    #[error("the hub refused a call: {0}")]
    Refused(String),
    #[error("the hub closed a session")]
    Closed,
    #[error("{0}")]
    Other(String),
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// A short random tag so that repeated runs use fresh instances and decisions.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", nanos, std::process::id() & 0xfff)
}

async fn connect(url: &str) -> Result<Socket, BenchError> {
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| BenchError::Connect(url.to_owned(), e.to_string()))
}

/// Sends one request and waits for its reply, skipping notifications.
async fn call(
    socket: &mut Socket,
    id: u64,
    method: &str,
    params: Value,
) -> Result<Value, BenchError> {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    socket
        .send(Message::text(request.to_string()))
        .await
        .map_err(|_| BenchError::Closed)?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value =
                    serde_json::from_str(&text).map_err(|e| BenchError::Other(e.to_string()))?;
                if reply.get("method").is_none() && reply["id"] == json!(id) {
                    return Ok(reply);
                }
            }
            Some(Ok(_)) => {}
            _ => return Err(BenchError::Closed),
        }
    }
}

async fn register(socket: &mut Socket, instance: &str) -> Result<(), BenchError> {
    let reply = call(
        socket,
        0,
        "system.register",
        json!({"instanceId": instance}),
    )
    .await?;
    match reply.get("error") {
        Some(error) => Err(BenchError::Refused(error.to_string())),
        None => Ok(()),
    }
}

/// Opens `count` registered sessions (instances `{prefix}-{i}`), a few at a time.
async fn open_sessions(url: &str, prefix: &str, count: usize) -> Result<Vec<Socket>, BenchError> {
    let mut sessions = Vec::with_capacity(count);
    let mut progress = Progress::new("connecting", count as u64);
    for chunk_start in (0..count).step_by(CONNECT_CONCURRENCY) {
        let chunk = chunk_start..(chunk_start + CONNECT_CONCURRENCY).min(count);
        let opened = futures::future::join_all(chunk.map(|i| async move {
            let mut socket = connect(url).await?;
            register(&mut socket, &format!("{prefix}-{i}")).await?;
            Ok::<_, BenchError>(socket)
        }))
        .await;
        for socket in opened {
            sessions.push(socket?);
        }
        progress.set(sessions.len() as u64);
    }
    progress.finish();
    Ok(sessions)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    label: &'static str,
    total: u64,
    shown: bool,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        Self {
            label,
            total: total.max(1),
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn set(&mut self, done: u64) {
        if self.shown {
            let width = 30;
            let filled = (done.min(self.total) * width / self.total) as usize;
            eprint!(
                "\r{:<12} [{}{}] {done}/{}",
                self.label,
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                self.total
            );
        }
    }

    fn finish(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

// ---- votes ----

#[derive(Debug, Clone)]
pub struct VotesOptions {
    pub url: String,
    /// Sessions, each its own instance, each with one vote in flight.
    pub sessions: usize,
    /// Sessions per decision (`totalInstances`).
    pub group: usize,
    pub duration: Duration,
    /// Stop after this many votes, if sooner.
    pub max_votes: Option<u64>,
    /// Votes per second per session (`None`: as fast as replies come).
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VotesReport {
    pub sessions: usize,
    pub group: usize,
    pub votes: u64,
    pub seconds: f64,
    pub votes_per_second: f64,
    pub latency_us: Percentiles,
    /// Replies by outcome: recorded, decided_now, already_voted, decided, or the error code.
    pub outcomes: BTreeMap<String, u64>,
}

pub async fn votes(options: &VotesOptions) -> Result<VotesReport, BenchError> {
    let tag = run_tag();
    let prefix = format!("bv{tag}");
    let sessions = open_sessions(&options.url, &prefix, options.sessions).await?;
    let group = options.group.max(1);
    let cast = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut tasks = Vec::new();
    for (i, mut socket) in sessions.into_iter().enumerate() {
        let (cast, stop, options, prefix) =
            (cast.clone(), stop.clone(), options.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let instance = format!("{prefix}-{i}");
            let pace = options.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
            let mut next_at = Instant::now();
            for round in 0u64.. {
                if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
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
                let value = if round % 2 == 0 { "yes" } else { "no" };
                let params = json!({"instanceId": instance, "decision": decision, "value": value, "totalInstances": group});
                let sent = Instant::now();
                let Ok(reply) = call(&mut socket, round + 1, "system.quorum.vote", params).await else {
                    *outcomes.entry("closed".into()).or_default() += 1;
                    break;
                };
                let _ = latency.record(sent.elapsed().as_micros() as u64);
                let outcome = if let Some(code) = reply["error"]["code"].as_i64() {
                    code.to_string()
                } else if reply["result"]["voted"] == true {
                    if reply["result"]["quorumReached"] == true { "decided_now".into() } else { "recorded".into() }
                } else {
                    reply["result"]["reason"].as_str().unwrap_or("other").to_owned()
                };
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress.finish();
    stop.store(true, Ordering::Relaxed);
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

// ---- fan-out ----

#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub url: String,
    /// Idle sessions that only listen.
    pub sessions: usize,
    pub decisions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub sessions: usize,
    pub decisions: usize,
    /// Per decision: from the deciding vote's reply to the last session receiving it.
    pub last_delivery_us: Percentiles,
    /// Every delivery: from the deciding vote's reply to one session receiving it.
    pub delivery_us: Percentiles,
    /// Deliveries that never came, the warm-up decision included.
    pub missed: u64,
}

pub async fn fanout(options: &FanoutOptions) -> Result<FanoutReport, BenchError> {
    let tag = run_tag();
    let mut listeners = Vec::with_capacity(options.sessions);
    let mut progress = Progress::new("connecting", options.sessions as u64);
    for start in (0..options.sessions).step_by(CONNECT_CONCURRENCY) {
        let chunk = start..(start + CONNECT_CONCURRENCY).min(options.sessions);
        let opened = futures::future::join_all(chunk.map(|_| async {
            let mut socket = connect(&options.url).await?;
            // One round trip proves the hub has the session, so no decision precedes it.
            call(&mut socket, 1, "system.unsubscribe", json!({"events": []})).await?;
            Ok::<_, BenchError>(socket)
        }))
        .await;
        for socket in opened {
            listeners.push(socket?);
        }
        progress.set(listeners.len() as u64);
    }
    progress.finish();
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
                    && text.contains(crate::rpc::DECISION_MADE)
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
    let mut each = histogram();
    let mut missed = 0u64;
    let mut progress = Progress::new("deciding", options.decisions as u64);
    // Decision 0 warms up (every session's first write allocates its buffers); it is
    // checked for misses but not timed.
    for n in 0..=options.decisions {
        let decision = format!("bf{tag}-{n}");
        let params = json!({"instanceId": instance, "decision": decision, "value": "go", "totalInstances": 1});
        let reply = call(&mut voter, n as u64 + 1, "system.quorum.vote", params).await?;
        let replied = Instant::now();
        if reply["result"]["quorumReached"] != true {
            return Err(BenchError::Refused(reply.to_string()));
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
        }
        progress.set(n as u64);
    }
    progress.finish();
    for task in tasks {
        task.abort();
    }
    Ok(FanoutReport {
        sessions: options.sessions,
        decisions: options.decisions,
        last_delivery_us: Percentiles::of(&last),
        delivery_us: Percentiles::of(&each),
        missed,
    })
}

/// The `decision` of a decision event whose name needs no JSON escaping.
fn decision_name(text: &str) -> Option<&str> {
    let start = text.find("\"decision\":\"")? + "\"decision\":\"".len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

// ---- connections ----

#[derive(Debug, Clone)]
pub struct ConnectionsOptions {
    pub url: String,
    pub sessions: usize,
    /// The hub's process id, to read its resident memory.
    pub hub_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    pub sessions: usize,
    pub connect_seconds: f64,
    pub hub_rss_before_kib: Option<u64>,
    pub hub_rss_after_kib: Option<u64>,
    pub bytes_per_session: Option<u64>,
}

/// Polls the hub until only the polling session is left, so that the next scenario does
/// not overlap with the release of these sessions' instances.
async fn wait_for_sessions_closed(url: &str) -> Result<(), BenchError> {
    let mut socket = connect(url).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in 1.. {
        let state = call(&mut socket, id, "system.get_state", json!({})).await?;
        if state["result"]["hub"]["sessions"]
            .as_u64()
            .is_some_and(|n| n <= 1)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = socket.close(None).await;
    Ok(())
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

pub async fn connections(options: &ConnectionsOptions) -> Result<ConnectionsReport, BenchError> {
    let before = options.hub_pid.and_then(rss_kib);
    let started = Instant::now();
    let sessions =
        open_sessions(&options.url, &format!("bc{}", run_tag()), options.sessions).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    // Every registration was acknowledged: the hub holds all the sessions now.
    let after = options.hub_pid.and_then(rss_kib);
    let per_session = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) * 1024 / options.sessions.max(1) as u64),
        _ => None,
    };
    drop(sessions);
    wait_for_sessions_closed(&options.url).await?;
    Ok(ConnectionsReport {
        sessions: options.sessions,
        connect_seconds,
        hub_rss_before_kib: before,
        hub_rss_after_kib: after,
        bytes_per_session: per_session,
    })
}
