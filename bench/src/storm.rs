//! Reconnect storm: many agent clients on a hub of the bench's own, that hub restarted
//! while decisions are made through another hub on the same Redis, and the time until
//! every client is back, registered and has each missed decision exactly once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::{
    BenchError, CONNECT_CONCURRENCY, DEFAULT_URL, Percentiles, Progress, Table, call, connect,
    histogram, register, run_tag,
};
use quorum_hub::client::{Client, ClientConfig, Link};
use quorum_hub::config::parse_duration;
use quorum_hub::protocol::{Notification, VoteParams, VoteReply, method};

mod hub;
use hub::OwnHub;

/// Longest the warm-up decision may take to reach every client.
const WARM_UP_WAIT: Duration = Duration::from_secs(30);
/// The windows over which the peak session-open rate is measured.
const RATE_WINDOWS: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

#[derive(Debug, Clone, Args)]
pub struct StormOptions {
    /// The main hub's WebSocket endpoint: decisions are made through it while the bench's
    /// own hub is down.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// The main hub's Redis (its --redis-url), which the bench's own hub shares.
    #[arg(long)]
    pub redis_url: String,
    /// Agent clients (`quorum_hub::client`) on the bench's own hub, each its own instance.
    #[arg(long, default_value_t = 10_000)]
    pub clients: usize,
    /// Decisions made while the hub is down, which every client must then resume.
    #[arg(long, default_value_t = 5)]
    pub decisions: usize,
    /// Longest the clients may take to come back and resume after the restart.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub wait: Duration,
    /// The `quorum-hub` binary the bench's own hub runs; by default the one beside this
    /// executable (cargo builds both into the same directory).
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub clients: usize,
    pub decisions: usize,
    /// Connecting and registering every client before the storm.
    pub connect_seconds: f64,
    /// From SIGTERM to the exit of the hub (it closes and releases every session).
    pub stop_seconds: f64,
    /// From spawning the hub again to its logging that it listens.
    pub listening_ms: f64,
    /// From spawning the hub again until every client was back: reconnected and
    /// registered (`None`: some were not within --wait).
    pub all_back_seconds: Option<f64>,
    /// From spawning the hub again until every client was back and had every decision
    /// made while it was down.
    pub all_resumed_seconds: Option<f64>,
    /// Per client, from spawning the hub again to being back.
    pub back_us: Percentiles,
    /// Clients back within --wait.
    pub clients_back: usize,
    /// The most sessions the restarted hub opened (reconnected and registered, as the
    /// clients saw it) within 100 ms, per second.
    pub peak_open_rate_100ms: f64,
    /// The same within 1 s.
    pub peak_open_rate_1s: f64,
    /// Reconnection attempts that failed, for any reason.
    pub failed_attempts: u64,
    /// Of those, attempts that found no hub listening (expected while it is down: the
    /// clients back off).
    pub unreachable_attempts: u64,
    /// Of those, attempts the restarted hub answered with an HTTP refusal (503 at its
    /// session cap, ...), as reported after it was spawned.
    pub refused_attempts: u64,
    /// Attempts refused (HTTP) before that: by the stopping hub, while it shut down.
    pub refused_before_restart: u64,
    /// The other failed attempts: the connection dropped during the upgrade or the
    /// registration, or the registration was refused.
    pub other_failures: u64,
    /// SYNs dropped at listening sockets during the storm, machine-wide (`ListenDrops`
    /// of /proc/net/netstat: a full accept queue or SYN queue), if readable.
    pub listen_drops: Option<u64>,
    /// Reconnections beyond each client's one after the restart (a session dropped again).
    pub extra_reconnections: u64,
    /// Decisions (the warm-up and those made while the hub was down) a client never had.
    pub missed: u64,
    /// Decisions a client had more than once (each extra copy counts).
    pub duplicated: u64,
}

/// Runs the storm. Its own hub is a `quorum-hub` process (see [`StormOptions::hub_bin`])
/// started with `--listen`, `--redis-url` and raised limits.
pub async fn run(options: &StormOptions) -> Result<StormReport, BenchError> {
    super::raise_open_files_limit();
    let tag = run_tag();
    let prefix = format!("bs{tag}");
    let mut hub = OwnHub::spawn(options, "127.0.0.1:0".parse().expect("an address")).await?;
    let addr = hub.listening().await?.0;
    hub.ready().await?;
    let url = format!("ws://{addr}/ws");

    let started = Instant::now();
    let (clients, mut seen) = connect_clients(&url, &prefix, options.clients).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    let mut tally = Tally::new(options.clients, options.decisions);

    // Every client first has one decision, so that each holds a cursor to resume from.
    let mut voter = connect(&options.url).await?;
    let voter_instance = format!("{prefix}-voter");
    register(&mut voter, &voter_instance).await?;
    let mut decide = async |n: usize| -> Result<(), BenchError> {
        let decision = format!("{prefix}-d{n}");
        let params = VoteParams {
            instance_id: &voter_instance,
            decision: &decision,
            value: "go",
            total_instances: Some(1),
            close_after_ms: None,
        };
        let reply: VoteReply = call(&mut voter, n as u64 + 1, method::VOTE, &params).await?;
        if reply.quorum_reached {
            Ok(())
        } else {
            Err(BenchError::Refused(format!(
                "decision {decision} was not made: {}",
                reply.outcome()
            )))
        }
    };
    decide(0).await?;
    let warm_by = Instant::now() + WARM_UP_WAIT;
    if !tally
        .collect(&mut seen, "warm-up", warm_by, |t| t.warm)
        .await
    {
        return Err(BenchError::Other(format!(
            "{} of {} clients had the warm-up decision made through {} after {WARM_UP_WAIT:?}: \
             does the bench's hub share its Redis (--redis-url)?",
            tally.warm, options.clients, options.url
        )));
    }

    eprintln!("restarting the hub under {} clients", options.clients);
    let stop_seconds = hub.stop().await?.as_secs_f64();
    for n in 1..=options.decisions {
        decide(n).await?;
    }
    let drops_before = listen_drops();
    let mut hub = OwnHub::spawn(options, addr).await?;
    let spawned = hub.spawned;
    let (_, listening_at) = hub.listening().await?;
    let resumed_by = Instant::now() + options.wait;
    tally
        .collect(&mut seen, "resuming", resumed_by, |t| t.resumed)
        .await;
    // Copies already on their way count too (as duplicates).
    while let Ok(report) = seen.try_recv() {
        tally.note(report);
    }
    let drops = listen_drops()
        .zip(drops_before)
        .map(|(after, before)| after.saturating_sub(before));

    drop(clients);
    hub.stop().await?;
    let _ = voter.close(None).await;
    Ok(tally.report(
        options,
        Timing {
            spawned,
            listening_at,
            connect_seconds,
            stop_seconds,
            listen_drops: drops,
        },
    ))
}

/// What a client's follower tells the bench.
enum Seen {
    /// It had the bench's decision `n` (0 is the warm-up).
    Decision {
        client: usize,
        n: usize,
        at: Instant,
    },
    /// Its connection changed (a reconnection, or a failed attempt).
    Link {
        client: usize,
        link: Link,
        at: Instant,
    },
}

/// Connects and registers `count` clients, a few at a time, and starts a task per client
/// that reports what it sees.
async fn connect_clients(
    url: &str,
    prefix: &str,
    count: usize,
) -> Result<(Vec<Client>, mpsc::UnboundedReceiver<Seen>), BenchError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let decision_prefix: Arc<str> = format!("{prefix}-d").into();
    let mut clients = Vec::with_capacity(count);
    let mut progress = Progress::new("connecting", count as u64);
    for chunk_start in (0..count).step_by(CONNECT_CONCURRENCY) {
        let chunk = chunk_start..(chunk_start + CONNECT_CONCURRENCY).min(count);
        let connected = futures::future::join_all(chunk.map(|i| {
            let mut config = ClientConfig::new(url);
            config.instance = Some(format!("{prefix}-{i}"));
            Client::connect(config)
        }))
        .await;
        for connection in connected {
            let (client, events) =
                connection.map_err(|e| BenchError::Connect(url.to_owned(), e.to_string()))?;
            let index = clients.len();
            tokio::spawn(follow(
                index,
                events,
                client.link(),
                decision_prefix.clone(),
                tx.clone(),
            ));
            clients.push(client);
        }
        progress.set(clients.len() as u64);
    }
    progress.finish();
    Ok((clients, rx))
}

/// Passes on a client's decisions of this run and its connection changes, until the
/// client is gone.
async fn follow(
    client: usize,
    mut events: mpsc::Receiver<Notification>,
    mut link: watch::Receiver<Link>,
    decision_prefix: Arc<str>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    loop {
        let report = tokio::select! {
            notification = events.recv() => match notification {
                None => return,
                Some(Notification::DecisionMade(event)) => {
                    let Some(n) = event
                        .decision
                        .strip_prefix(&*decision_prefix)
                        .and_then(|n| n.parse().ok())
                    else {
                        continue;
                    };
                    Seen::Decision { client, n, at: Instant::now() }
                }
                Some(_) => continue,
            },
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *link.borrow_and_update();
                Seen::Link { client, link: now, at: Instant::now() }
            }
        };
        if seen.send(report).is_err() {
            return;
        }
    }
}

/// Everything the clients reported, per client, with running counts.
struct Tally {
    decisions: usize,
    /// Per client and decision (0 the warm-up, then 1..=decisions): copies received.
    counts: Vec<u32>,
    links: Vec<Link>,
    /// When each client first reconnected after the restart.
    back_at: Vec<Option<Instant>>,
    /// When each client was back and had every decision made while the hub was down.
    resumed_at: Vec<Option<Instant>>,
    /// When each attempt a hub refused (HTTP) was reported.
    refusals: Vec<Instant>,
    /// Clients that have the warm-up decision.
    warm: usize,
    resumed: usize,
}

/// When things happened around the restart.
struct Timing {
    spawned: Instant,
    listening_at: Instant,
    connect_seconds: f64,
    stop_seconds: f64,
    listen_drops: Option<u64>,
}

impl Tally {
    fn new(clients: usize, decisions: usize) -> Self {
        Self {
            decisions,
            counts: vec![0; clients * (decisions + 1)],
            links: vec![Link::default(); clients],
            back_at: vec![None; clients],
            resumed_at: vec![None; clients],
            refusals: Vec::new(),
            warm: 0,
            resumed: 0,
        }
    }

    fn clients(&self) -> usize {
        self.links.len()
    }

    fn counts_of(&self, client: usize) -> &[u32] {
        let per = self.decisions + 1;
        &self.counts[client * per..(client + 1) * per]
    }

    /// Takes reports until `count` reaches every client, or until `deadline`; returns
    /// whether it did.
    async fn collect(
        &mut self,
        seen: &mut mpsc::UnboundedReceiver<Seen>,
        label: &'static str,
        deadline: Instant,
        count: impl Fn(&Self) -> usize,
    ) -> bool {
        let mut progress = Progress::new(label, self.clients() as u64);
        let mut shown = 0;
        while count(self) < self.clients() {
            match tokio::time::timeout_at(deadline.into(), seen.recv()).await {
                Ok(Some(report)) => self.note(report),
                Ok(None) | Err(_) => break,
            }
            if count(self) >= shown + 100 {
                shown = count(self);
                progress.set(shown as u64);
            }
        }
        progress.finish();
        count(self) == self.clients()
    }

    fn note(&mut self, report: Seen) {
        let (client, at) = match report {
            Seen::Decision { client, n, at } => {
                if n > self.decisions {
                    return;
                }
                let count = &mut self.counts[client * (self.decisions + 1) + n];
                *count += 1;
                if n == 0 && *count == 1 {
                    self.warm += 1;
                }
                (client, at)
            }
            Seen::Link { client, link, at } => {
                let before = std::mem::replace(&mut self.links[client], link);
                let refused = link
                    .refused_attempts
                    .saturating_sub(before.refused_attempts);
                self.refusals.extend((0..refused).map(|_| at));
                if link.connections >= 2 && self.back_at[client].is_none() {
                    self.back_at[client] = Some(at);
                }
                (client, at)
            }
        };
        if self.resumed_at[client].is_none()
            && self.back_at[client].is_some()
            && self.counts_of(client)[1..].iter().all(|&c| c > 0)
        {
            self.resumed_at[client] = Some(at);
            self.resumed += 1;
        }
    }

    fn report(&self, options: &StormOptions, timing: Timing) -> StormReport {
        let since_spawn = |at: &Instant| at.saturating_duration_since(timing.spawned);
        let mut back: Vec<Duration> = self.back_at.iter().flatten().map(since_spawn).collect();
        back.sort();
        let mut back_hist = histogram();
        for d in &back {
            let _ = back_hist.record(d.as_micros() as u64);
        }
        let all = |times: &[Option<Instant>]| -> Option<f64> {
            let times: Option<Vec<Duration>> =
                times.iter().map(|t| t.as_ref().map(since_spawn)).collect();
            times.map(|t| t.into_iter().max().unwrap_or_default().as_secs_f64())
        };
        let [rate_100ms, rate_1s] = RATE_WINDOWS.map(|window| peak_rate(&back, window));
        let refused = self
            .refusals
            .iter()
            .filter(|at| **at >= timing.spawned)
            .count() as u64;
        let sum = |count: fn(&Link) -> u64| self.links.iter().map(count).sum::<u64>();
        let failed = sum(|l| l.failed_attempts);
        let unreachable = sum(|l| l.unreachable_attempts);
        let (mut missed, mut duplicated) = (0u64, 0u64);
        for client in 0..self.clients() {
            for &count in self.counts_of(client) {
                missed += u64::from(count == 0);
                duplicated += u64::from(count.saturating_sub(1));
            }
        }
        StormReport {
            clients: options.clients,
            decisions: options.decisions,
            connect_seconds: timing.connect_seconds,
            stop_seconds: timing.stop_seconds,
            listening_ms: since_spawn(&timing.listening_at).as_secs_f64() * 1000.0,
            all_back_seconds: all(&self.back_at),
            all_resumed_seconds: all(&self.resumed_at),
            back_us: Percentiles::of(&back_hist),
            clients_back: back.len(),
            peak_open_rate_100ms: rate_100ms,
            peak_open_rate_1s: rate_1s,
            failed_attempts: failed,
            unreachable_attempts: unreachable,
            refused_attempts: refused,
            refused_before_restart: self.refusals.len() as u64 - refused,
            other_failures: failed - unreachable - self.refusals.len() as u64,
            listen_drops: timing.listen_drops,
            extra_reconnections: self
                .links
                .iter()
                .map(|l| l.connections.saturating_sub(2))
                .sum(),
            missed,
            duplicated,
        }
    }
}

/// The most of `sorted` times within any `window`, per second.
fn peak_rate(sorted: &[Duration], window: Duration) -> f64 {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as f64 / window.as_secs_f64()
}

/// `ListenDrops` of the kernel's TCP counters (every network namespace's listening
/// sockets together).
fn listen_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names.split_whitespace().position(|n| n == "ListenDrops")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The report's rows, for its own table and the suite's.
pub(super) fn rows(t: &mut Table, report: &StormReport) {
    let seconds = |s: Option<f64>| match s {
        Some(s) => format!("{s:.2}"),
        None => format!("not all within the wait ({} back)", report.clients_back),
    };
    t.row(
        format!(
            "reconnect storm, {} clients: hub restart to all back and registered (s)",
            report.clients
        ),
        seconds(report.all_back_seconds),
    );
    t.row(
        format!(
            "reconnect storm: to all resumed with the {} decisions made while down (s)",
            report.decisions
        ),
        seconds(report.all_resumed_seconds),
    );
    t.row(
        "reconnect storm: per client back (ms) p50/p99/max",
        report.back_us.short_ms(),
    );
    t.row(
        "reconnect storm: peak session-open rate (/s, best 100 ms / best 1 s)",
        format!(
            "{:.0} / {:.0}",
            report.peak_open_rate_100ms, report.peak_open_rate_1s
        ),
    );
    t.row(
        "reconnect storm: hub stop, SIGTERM to exit (s) / attempts that found it down",
        format!(
            "{:.2} / {} of {} failed",
            report.stop_seconds, report.unreachable_attempts, report.failed_attempts
        ),
    );
    t.row(
        "reconnect storm: attempts refused (HTTP) / other failures / listen drops",
        format!(
            "{} / {} / {}",
            report.refused_attempts,
            report.other_failures,
            report
                .listen_drops
                .map_or_else(|| "?".to_owned(), |d| d.to_string())
        ),
    );
    t.row(
        "reconnect storm: decisions missed / duplicated",
        format!(
            "{} / {} of {}",
            report.missed,
            report.duplicated,
            report.clients * (report.decisions + 1)
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rate_is_the_busiest_window() {
        let ms = |ms: u64| Duration::from_millis(ms);
        // 3 within 100 ms (50, 120, 149), 5 within 1 s (0 to 900).
        let times = [0, 50, 120, 149, 900, 1_500].map(ms);
        assert_eq!(peak_rate(&times, ms(100)), 30.0);
        assert_eq!(peak_rate(&times, ms(1_000)), 5.0);
        // A window is half-open: times exactly one window apart do not share it.
        assert_eq!(peak_rate(&[ms(0), ms(100)], ms(100)), 10.0);
        assert_eq!(peak_rate(&[], ms(100)), 0.0);
    }
}
