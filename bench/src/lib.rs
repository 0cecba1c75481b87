//! The load generator behind `quorum-hub-bench`, against a running hub.
//!
//! - [`votes`]: vote throughput and latency.
//! - [`fanout`]: time until every idle session has a decision.
//! - [`connections`]: memory per registered session.
//! - [`floor`]: a bare broadcaster that the hub's fan-out is compared with.
//! - [`netstat`]: what the kernel dropped and sent again while a scenario ran.
//! - [`redis_cost`]: what Redis spends per vote, in CPU time and per command.
//! - [`storm`]: a reconnect storm: a hub of its own restarted under many agent clients.
//! - [`webhooks`]: decisions delivered to webhook endpoints at a receiver of its own.
//! - [`suite`]: all of them plus `redis-benchmark` on the vote script, as one table.

pub mod connections;
pub mod fanout;
pub mod floor;
pub mod netstat;
pub mod redis_cost;
pub mod storm;
pub mod suite;
pub mod votes;
pub mod webhooks;

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;

use quorum_hub::protocol::peer::{self, CallError, PeerSocket};
use quorum_hub::protocol::{RegisterParams, Registered, method};

/// Sessions opened at once while setting up a scenario.
const CONNECT_CONCURRENCY: usize = 200;
/// Sessions opened from one loopback source address before the next is used.
const SESSIONS_PER_SOURCE: usize = 16_000;
/// The hub `bench` talks to unless told otherwise.
const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws";

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

impl From<CallError> for BenchError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Rpc(err) => BenchError::Refused(err.to_string()),
            CallError::Closed => BenchError::Closed,
            CallError::Malformed(why) => BenchError::Other(why),
        }
    }
}

/// `quorum-hub-bench` and its scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Vote throughput and latency: S sessions, G to a decision, one vote in flight each.
    Votes {
        #[command(flatten)]
        options: votes::VotesOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Fan-out latency: K idle sessions and a voter making decisions.
    Fanout {
        #[command(flatten)]
        options: fanout::FanoutOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Memory per session: open and register K sessions, read the hub's resident memory.
    Connections {
        #[command(flatten)]
        options: connections::ConnectionsOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Serve the fan-out floor: a bare broadcaster for `bench fanout` to measure, beside
    /// the hub (until stopped).
    Floor {
        #[command(flatten)]
        options: floor::FloorOptions,
    },
    /// Reconnect storm: restart a hub of the bench's own under N agent clients while
    /// decisions are made through --url; time until every client is back and resumed.
    Storm {
        #[command(flatten)]
        options: storm::StormOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Webhook delivery: E endpoints at a receiver in the bench, a voter making decisions;
    /// deliveries per second and decision-to-receiver latency beside the WebSocket's.
    Webhooks {
        #[command(flatten)]
        options: webhooks::WebhooksOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Everything above plus redis-benchmark on the vote script, as one table.
    Suite {
        #[command(flatten)]
        options: suite::SuiteOptions,
        #[command(flatten)]
        output: Output,
    },
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Output {
    fn render<T: Serialize>(self, report: &T, table: impl FnOnce(&T) -> String) -> String {
        if self.json {
            serde_json::to_string_pretty(report).unwrap_or_default()
        } else {
            table(report)
        }
    }
}

/// Runs one bench command and returns what to print.
pub async fn run(command: BenchCommand) -> Result<String, BenchError> {
    Ok(match command {
        BenchCommand::Votes { options, output } => {
            output.render(&votes::run(&options).await?, votes::table)
        }
        BenchCommand::Fanout { options, output } => output
            .render(&fanout::run(&options).await?, |r| {
                Table::of(r, fanout::rows)
            }),
        BenchCommand::Connections { options, output } => {
            let report = connections::run(&options).await?;
            output.render(&report, |r| Table::of(r, connections::rows))
        }
        BenchCommand::Floor { options } => floor::serve(&options).await?,
        BenchCommand::Storm { options, output } => {
            let report = storm::run(&options).await?;
            output.render(&report, |r| Table::of(r, storm::rows))
        }
        BenchCommand::Webhooks { options, output } => {
            let report = webhooks::run(&options).await?;
            output.render(&report, |r| Table::of(r, webhooks::rows))
        }
        BenchCommand::Suite { options, output } => {
            output.render(&suite::run(&options).await?, suite::table)
        }
    })
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

    /// The percentiles of some samples in microseconds.
    fn of_samples<'a>(samples: impl IntoIterator<Item = &'a u64>) -> Self {
        let mut h = histogram();
        for &us in samples {
            let _ = h.record(us);
        }
        Self::of(&h)
    }

    /// `p50/p99/max` in milliseconds.
    fn short_ms(&self) -> String {
        format!("{}/{}/{}", ms(self.p50), ms(self.p99), ms(self.max))
    }

    /// `p50/p90/p99/p99.9/max` in milliseconds.
    fn long_ms(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// Microseconds as milliseconds with two decimals.
fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// A two-column Markdown table, built row by row.
struct Table(String);

impl Table {
    fn new() -> Self {
        Self("| measure | value |\n| --- | --- |\n".to_owned())
    }

    /// A table of one report's rows.
    fn of<R>(report: &R, rows: fn(&mut Table, &R)) -> String {
        let mut t = Table::new();
        rows(&mut t, report);
        t.0
    }

    fn row(&mut self, measure: impl std::fmt::Display, value: impl std::fmt::Display) {
        self.0.push_str(&format!("| {measure} | {value} |\n"));
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

async fn connect(url: &str) -> Result<PeerSocket, BenchError> {
    connect_nth(url, 0).await
}

/// Opens the `n`th session of a scenario. To a hub on 127.0.0.1, sessions come from
/// 127.0.0.1, then 127.0.0.2, ... in turns of [`SESSIONS_PER_SOURCE`]: one source address
/// has about 28,000 ephemeral ports, fewer than a 50,000-session scenario needs.
async fn connect_nth(url: &str, n: usize) -> Result<PeerSocket, BenchError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let failed = |e: &dyn std::fmt::Display| BenchError::Connect(url.to_owned(), e.to_string());
    let request = url.into_client_request().map_err(|e| failed(&e))?;
    let host = request.uri().host().unwrap_or_default().to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| failed(&e))?
        .next()
        .ok_or_else(|| failed(&"no address"))?;
    let socket = match target {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| failed(&e))?;
    let turn = (n / SESSIONS_PER_SOURCE).min(250) as u8;
    if turn > 0
        && let std::net::IpAddr::V4(ip) = target.ip()
        && ip == std::net::Ipv4Addr::LOCALHOST
    {
        // A port bound before connecting is not shared with other destinations, and the
        // previous run's ports may still be in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(|e| failed(&e))?;
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + turn);
        socket.bind((source, 0).into()).map_err(|e| failed(&e))?;
    }
    let stream = socket.connect(target).await.map_err(|e| failed(&e))?;
    // A small first read buffer, as the client's: tungstenite's default of 128 KiB, zeroed
    // on first use, would cost 6 GiB and most of the connecting time at 50,000 sessions.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(quorum_hub::client::READ_BUFFER_BYTES);
    tokio_tungstenite::client_async_with_config(
        request,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(config),
    )
    .await
    .map(|(socket, _)| socket)
    .map_err(|e| failed(&e))
}

/// One request on a bench socket; notifications that arrive first are skipped.
async fn call<R: serde::de::DeserializeOwned>(
    socket: &mut PeerSocket,
    id: u64,
    method: &str,
    params: &impl Serialize,
) -> Result<R, CallError> {
    peer::call(socket, id, method, params, |_| {}).await
}

/// Has `instance` make `decision` alone (`totalInstances` 1) as call `id`; returns when the
/// vote was sent and when its reply came, or why the decision was not made.
async fn decide_alone(
    voter: &mut PeerSocket,
    id: u64,
    instance: &str,
    decision: &str,
) -> Result<(std::time::Instant, std::time::Instant), BenchError> {
    let params = quorum_hub::protocol::VoteParams {
        instance_id: instance,
        decision,
        value: "go",
        total_instances: Some(1),
        close_after_ms: None,
    };
    let sent = std::time::Instant::now();
    let reply: quorum_hub::protocol::VoteReply = call(voter, id, method::VOTE, &params).await?;
    let replied = std::time::Instant::now();
    if !reply.quorum_reached {
        return Err(BenchError::Refused(format!(
            "decision {decision} was not made: {}",
            reply.outcome()
        )));
    }
    Ok((sent, replied))
}

async fn register(socket: &mut PeerSocket, instance: &str) -> Result<(), BenchError> {
    let params = RegisterParams {
        instance_id: instance,
        roles: &[],
        metadata: None,
    };
    call::<Registered>(socket, 0, method::REGISTER, &params).await?;
    Ok(())
}

/// Opens `count` sessions a few at a time, each prepared by `prepare(socket, i)`.
async fn open_sessions<F, Fut>(
    url: &str,
    count: usize,
    prepare: F,
) -> Result<Vec<PeerSocket>, BenchError>
where
    F: Fn(PeerSocket, usize) -> Fut,
    Fut: Future<Output = Result<PeerSocket, BenchError>>,
{
    let mut sessions = Vec::with_capacity(count);
    let mut progress = Progress::new("connecting", count as u64);
    for chunk_start in (0..count).step_by(CONNECT_CONCURRENCY) {
        let chunk = chunk_start..(chunk_start + CONNECT_CONCURRENCY).min(count);
        let opened = futures::future::join_all(chunk.map(|i| {
            let prepare = &prepare;
            async move { prepare(connect_nth(url, i).await?, i).await }
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

/// Opens `count` registered sessions (instances `{prefix}-{i}`), a few at a time.
async fn open_registered(
    url: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<PeerSocket>, BenchError> {
    open_sessions(url, count, |mut socket, i| async move {
        register(&mut socket, &format!("{prefix}-{i}")).await?;
        Ok(socket)
    })
    .await
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

/// Raises this process's soft limit on open files to its hard limit, for scenarios that
/// hold more sockets than the usual soft limit (often 1,024) allows; a hub it starts
/// inherits the limit. Returns the soft limit now in force (`None`: unlimited or unknown).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            limit.current = limit.maximum;
            if let Err(err) = setrlimit(Resource::Nofile, limit) {
                eprintln!("could not raise the open-files limit: {err}");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
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
