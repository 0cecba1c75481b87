//! `bench suite`: every scenario in turn, and `redis-benchmark` running the same vote
//! script on the hub's Redis, as one table.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::connections::{self, ConnectionsOptions, ConnectionsReport};
use super::fanout::{self, FanoutOptions, FanoutReport};
use super::redis_cost::{RedisCost, RedisSnapshot};
use super::storm::{self, StormOptions, StormReport};
use super::votes::{self, VotesOptions, VotesReport};
use super::webhooks::{self, WebhooksOptions, WebhooksReport};
use super::{BenchError, DEFAULT_URL};
use quorum_hub::bench_seams;
use quorum_hub::config::{RateLimit, parse_duration};

mod table;
pub use table::table;

/// Requests `redis-benchmark` sends without pipelining (more with it).
const REDIS_BENCHMARK_REQUESTS: usize = 100_000;
/// Decisions made while the storm's hub is down.
const STORM_DECISIONS: usize = 5;
/// Longest the storm's clients may take to come back.
const STORM_WAIT: Duration = Duration::from_secs(120);
/// Sessions per decision in the throughput runs (and in redis-benchmark's votes).
const GROUP: usize = 60;
/// Longest the webhook run waits, after its last decision, for every delivery.
const WEBHOOK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct SuiteOptions {
    /// The hub's WebSocket endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Voting sessions in the throughput runs.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Length of each throughput run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 10_000)]
    pub fanout_sessions: usize,
    #[arg(long, default_value_t = 50)]
    pub fanout_decisions: usize,
    /// Fan-out rounds: one run of the hub and one of the floor (with --floor-url) each, the
    /// hub first in odd rounds and the floor first in even ones (whichever runs second in a
    /// pair measured up to 10% faster, either way round).
    #[arg(long, default_value_t = 4)]
    pub fanout_rounds: usize,
    /// Decisions after each of the hub's fan-out rounds during which another session
    /// calls `system.quorum.status` over and over (0: none).
    #[arg(long, default_value_t = 10)]
    pub call_probe_decisions: usize,
    /// A fan-out floor (`quorum-hub-bench floor`) to compare the hub's fan-out with.
    #[arg(long)]
    pub floor_url: Option<String>,
    /// Webhook endpoints at the bench's own receiver, each getting every decision of the
    /// webhook run (the hub needs --webhook-allow-private).
    #[arg(long, default_value_t = 4)]
    pub webhook_endpoints: usize,
    /// Decisions of the webhook run (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub webhook_decisions: usize,
    /// Sessions of the large fan-out and memory runs (fewer when the file-descriptor limit
    /// of this process or the hub's is lower; 0 skips them).
    #[arg(long, default_value_t = 50_000)]
    pub large_sessions: usize,
    /// Agent clients in the reconnect storm (0 skips it; it needs --redis-url).
    #[arg(long, default_value_t = 10_000)]
    pub storm_clients: usize,
    /// Sessions opened to measure memory per session.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// The hub's process id (its memory is read from /proc).
    #[arg(long)]
    pub hub_pid: Option<u32>,
    /// Unix socket of the hub's Redis, for redis-benchmark.
    #[arg(long)]
    pub redis_socket: Option<String>,
    /// The hub's Redis (the URL it was given: one Redis, or `redis+cluster://` naming every
    /// node to count), to measure what Redis spends per vote (`INFO cpu` and `INFO
    /// commandstats` of each node named).
    #[arg(long)]
    pub redis_url: Option<String>,
    /// A hub of a previous build, on a Redis of its own, whose votes are measured beside
    /// this one's (G=60, G=3 and G=60 voting together, taking turns at going first).
    #[arg(long, requires = "baseline_redis_url")]
    pub baseline_url: Option<String>,
    /// The previous build's Redis, as --redis-url.
    #[arg(long)]
    pub baseline_redis_url: Option<String>,
    /// What the previous build is (a commit), for the table.
    #[arg(long, default_value = "previous build")]
    pub baseline_label: String,
}

/// Everything `bench suite` measures, for one table.
#[derive(Debug, Serialize)]
pub struct Suite {
    pub votes_g60: VotesReport,
    pub votes_g3: VotesReport,
    /// G=60 with each group voting on each decision at once (`votes --together`).
    pub votes_g60_together: VotesReport,
    pub votes_half_rate: VotesReport,
    /// The hub's fan-out runs at `fanout_sessions`.
    pub fanout: Vec<FanoutReport>,
    /// The floor's, alternating with the hub's.
    pub floor: Vec<FanoutReport>,
    pub connections: ConnectionsReport,
    /// Decisions delivered to webhook endpoints, beside the same over the WebSocket.
    pub webhooks: Option<WebhooksReport>,
    /// The fan-out and memory runs at `large_sessions` (or as many as the limits allow).
    pub large: Option<Large>,
    /// A hub of the bench's own restarted under `storm_clients` agent clients.
    pub storm: Option<StormReport>,
    pub redis_script_limit: Option<f64>,
    pub redis_script_limit_pipelined: Option<f64>,
    /// What all Redis nodes spent per vote in the G=60 run, the G=3 run and the G=60 run
    /// voting together.
    pub redis_cost_g60: Option<RedisCost>,
    pub redis_cost_g3: Option<RedisCost>,
    pub redis_cost_g60_together: Option<RedisCost>,
    /// Redis nodes the figures were summed over (every node the URL names).
    pub redis_nodes: usize,
    /// The same votes on a previous build.
    pub baseline: Option<Baseline>,
}

/// The vote runs on a previous build, beside this one's.
#[derive(Debug, Serialize)]
pub struct Baseline {
    pub label: String,
    pub votes_g60: VotesReport,
    pub votes_g3: VotesReport,
    pub votes_g60_together: VotesReport,
    pub redis_cost_g60: Option<RedisCost>,
    pub redis_cost_g3: Option<RedisCost>,
    pub redis_cost_g60_together: Option<RedisCost>,
}

/// The large runs, and why they have fewer sessions than asked for when they do.
#[derive(Debug, Serialize)]
pub struct Large {
    pub asked: usize,
    pub limited_by: Option<String>,
    pub fanout: FanoutReport,
    pub connections: ConnectionsReport,
}

pub async fn run(options: &SuiteOptions) -> Result<Suite, BenchError> {
    super::raise_open_files_limit();
    let votes_at = |url: &str, group: usize, rate: Option<f64>| VotesOptions {
        url: url.to_owned(),
        sessions: options.sessions,
        group,
        duration: options.duration,
        max_votes: None,
        rate,
        together: false,
    };
    let votes = |url: &str, group: usize| votes_at(url, group, None);
    let together = |url: &str| VotesOptions {
        together: true,
        ..votes(url, GROUP)
    };
    eprintln!(
        "votes, G={GROUP}, {} sessions, {:?}",
        options.sessions, options.duration
    );
    let nodes = options
        .redis_url
        .as_deref()
        .map(redis_nodes)
        .unwrap_or_default();
    let baseline_nodes = options
        .baseline_redis_url
        .as_deref()
        .map(redis_nodes)
        .unwrap_or_default();
    let (votes_g60, redis_cost_g60) = measured_votes(&votes(&options.url, GROUP), &nodes).await?;
    let mut baseline_g60 = None;
    if let Some(url) = &options.baseline_url {
        eprintln!("votes, G={GROUP}, on the {}", options.baseline_label);
        baseline_g60 = Some(measured_votes(&votes(url, GROUP), &baseline_nodes).await?);
    }
    // The previous build goes first at G=3, as this one did at G=60.
    let mut baseline_g3 = None;
    if let Some(url) = &options.baseline_url {
        eprintln!("votes, G=3, on the {}", options.baseline_label);
        baseline_g3 = Some(measured_votes(&votes(url, 3), &baseline_nodes).await?);
    }
    eprintln!("votes, G=3");
    let (votes_g3, redis_cost_g3) = measured_votes(&votes(&options.url, 3), &nodes).await?;
    // Each group answering one question at once: this build first again.
    eprintln!("votes, G={GROUP}, each group together");
    let (votes_g60_together, redis_cost_g60_together) =
        measured_votes(&together(&options.url), &nodes).await?;
    let mut baseline_together = None;
    if let Some(url) = &options.baseline_url {
        eprintln!(
            "votes, G={GROUP}, each group together, on the {}",
            options.baseline_label
        );
        baseline_together = Some(measured_votes(&together(url), &baseline_nodes).await?);
    }
    let baseline = match (baseline_g60, baseline_g3, baseline_together) {
        (
            Some((votes_g60, redis_cost_g60)),
            Some((votes_g3, redis_cost_g3)),
            Some((votes_g60_together, redis_cost_g60_together)),
        ) => Some(Baseline {
            label: options.baseline_label.clone(),
            votes_g60,
            votes_g3,
            votes_g60_together,
            redis_cost_g60,
            redis_cost_g3,
            redis_cost_g60_together,
        }),
        _ => None,
    };
    let half = votes_g60.votes_per_second / 2.0 / options.sessions as f64;
    eprintln!(
        "votes, G={GROUP} at half the maximum rate ({:.0} votes/s)",
        votes_g60.votes_per_second / 2.0
    );
    let votes_half_rate = votes::run(&votes_at(&options.url, GROUP, Some(half))).await?;
    eprintln!("connections: {}", options.connections);
    let connections = connections::run(&ConnectionsOptions {
        url: options.url.clone(),
        sessions: options.connections,
        hub_pid: options.hub_pid,
    })
    .await?;
    let (fanout, floor) = fanout_rounds(options).await?;
    let webhooks = match options.webhook_decisions {
        0 => None,
        decisions => {
            eprintln!(
                "webhooks: {} endpoints, {decisions} decisions",
                options.webhook_endpoints
            );
            Some(
                webhooks::run(&WebhooksOptions {
                    url: options.url.clone(),
                    endpoints: options.webhook_endpoints,
                    decisions,
                    wait: WEBHOOK_WAIT,
                    pause: None,
                })
                .await?,
            )
        }
    };
    let large = large_runs(options).await?;
    let storm = match &options.redis_url {
        Some(redis_url) if options.storm_clients > 0 => {
            eprintln!("reconnect storm: {} clients", options.storm_clients);
            Some(
                storm::run(&StormOptions {
                    url: options.url.clone(),
                    redis_url: redis_url.clone(),
                    clients: options.storm_clients,
                    decisions: STORM_DECISIONS,
                    wait: STORM_WAIT,
                    hub_bin: None,
                })
                .await?,
            )
        }
        _ => None,
    };
    let (limit, pipelined) = match &options.redis_socket {
        Some(socket) => {
            eprintln!("redis-benchmark: the vote script without and with pipelining");
            (
                redis_benchmark(socket, options.sessions, 1).await?,
                redis_benchmark(socket, options.sessions, 16).await?,
            )
        }
        None => (None, None),
    };
    Ok(Suite {
        votes_g60,
        votes_g3,
        votes_g60_together,
        votes_half_rate,
        fanout,
        floor,
        connections,
        webhooks,
        large,
        storm,
        redis_script_limit: limit,
        redis_script_limit_pipelined: pipelined,
        redis_cost_g60,
        redis_cost_g3,
        redis_cost_g60_together,
        redis_nodes: nodes.len(),
        baseline,
    })
}

/// The hub's fan-out runs and the floor's, taking turns at going first.
async fn fanout_rounds(
    options: &SuiteOptions,
) -> Result<(Vec<FanoutReport>, Vec<FanoutReport>), BenchError> {
    // The floor answers no status call: its runs have no probe.
    let fanout = |url: &str, call_probe_decisions| FanoutOptions {
        url: url.to_owned(),
        sessions: options.fanout_sessions,
        decisions: options.fanout_decisions,
        call_probe_decisions,
    };
    let rounds = options.fanout_rounds;
    let (mut hub, mut floor) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let floor_first = round % 2 == 0;
        for floor_now in [floor_first, !floor_first] {
            if floor_now {
                if let Some(url) = &options.floor_url {
                    eprintln!("fan-out {round}/{rounds}: the floor");
                    floor.push(fanout::run(&fanout(url, 0)).await?);
                }
            } else {
                eprintln!(
                    "fan-out {round}/{rounds}: {} sessions, {} decisions",
                    options.fanout_sessions, options.fanout_decisions
                );
                let probe = options.call_probe_decisions;
                hub.push(fanout::run(&fanout(&options.url, probe)).await?);
                connections::wait_for_sessions_closed(&options.url).await?;
            }
        }
    }
    Ok((hub, floor))
}

/// File descriptors a process may open (its soft limit), from /proc.
fn open_files_limit(pid: Option<u32>) -> Option<usize> {
    let path = pid.map_or_else(
        || "/proc/self/limits".to_owned(),
        |p| format!("/proc/{p}/limits"),
    );
    let limits = std::fs::read_to_string(path).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors kept free of sessions in each process (Redis connections, files, the
/// voter).
const SPARE_DESCRIPTORS: usize = 200;

/// The fan-out and memory runs at `large_sessions`, with as many sessions as both this
/// process's descriptor limit and the hub's allow.
async fn large_runs(options: &SuiteOptions) -> Result<Option<Large>, BenchError> {
    if options.large_sessions == 0 {
        return Ok(None);
    }
    let mut sessions = options.large_sessions;
    let mut limited_by = None;
    let limits = [
        ("this process", open_files_limit(None)),
        (
            "the hub",
            options.hub_pid.and_then(|pid| open_files_limit(Some(pid))),
        ),
    ];
    for (who, limit) in limits {
        if let Some(limit) = limit {
            let room = limit.saturating_sub(SPARE_DESCRIPTORS);
            if room < sessions {
                sessions = room;
                limited_by = Some(format!(
                    "the open-files limit of {who} ({limit}; raise it with `ulimit -n`, past \
                     the hard limit only with CAP_SYS_RESOURCE)"
                ));
            }
        }
    }
    if let Some(why) = &limited_by {
        eprintln!(
            "large runs: {sessions} sessions, not {}: {why}",
            options.large_sessions
        );
    }
    eprintln!("connections: {sessions}");
    let connections = connections::run(&ConnectionsOptions {
        url: options.url.clone(),
        sessions,
        hub_pid: options.hub_pid,
    })
    .await?;
    eprintln!(
        "fan-out: {sessions} sessions, {} decisions",
        options.fanout_decisions
    );
    let fanout = fanout::run(&FanoutOptions {
        url: options.url.clone(),
        sessions,
        decisions: options.fanout_decisions,
        call_probe_decisions: 0,
    })
    .await?;
    connections::wait_for_sessions_closed(&options.url).await?;
    Ok(Some(Large {
        asked: options.large_sessions,
        limited_by,
        fanout,
        connections,
    }))
}

/// Each node a hub's Redis URL names (every seed of a cluster, with its credentials).
fn redis_nodes(url: &str) -> Vec<redis::ConnectionInfo> {
    bench_seams::redis_nodes(url).unwrap_or_else(|reason| {
        eprintln!("{reason}; no Redis CPU figures");
        Vec::new()
    })
}

/// One vote run, and what Redis (`nodes`) spent per vote during it.
async fn measured_votes(
    options: &VotesOptions,
    nodes: &[redis::ConnectionInfo],
) -> Result<(VotesReport, Option<RedisCost>), BenchError> {
    let before = RedisSnapshot::take(nodes).await;
    let report = votes::run(options).await?;
    let after = RedisSnapshot::take(nodes).await;
    let cost = match (before, after) {
        (Some(before), Some(after)) => RedisCost::between(&before, &after, report.votes),
        _ => None,
    };
    Ok((report, cost))
}

/// Runs `redis-benchmark` with EVALSHA of the vote script on random decisions and
/// instances, and returns its requests per second.
async fn redis_benchmark(
    socket: &str,
    clients: usize,
    pipeline: usize,
) -> Result<Option<f64>, BenchError> {
    let other = |e: redis::RedisError| BenchError::Other(format!("redis-benchmark setup: {e}"));
    let client = redis::Client::open(format!("unix://{socket}").as_str()).map_err(other)?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(other)?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(bench_seams::VOTE_SCRIPT)
        .query_async(&mut conn)
        .await
        .map_err(other)?;
    let requests = (REDIS_BENCHMARK_REQUESTS * pipeline.min(4)).to_string();
    let mut command = tokio::process::Command::new("redis-benchmark");
    command
        .args(["-s", socket, "-q", "-r", "1000000", "-n", &requests])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(bench_seams::vote_benchmark_command(
            &sha,
            GROUP as u64,
            RateLimit {
                max: 1_000_000,
                window: Duration::from_secs(60),
            },
        ));
    let output = match command.output().await {
        Ok(output) => output,
        Err(err) => {
            eprintln!("redis-benchmark not available ({err}); skipping the script limit");
            return Ok(None);
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // "EVALSHA ...: 12345.67 requests per second, p50=..." (after progress lines ending in \r).
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|line| {
            line.split_once(" requests per second")
                .map(|(head, _)| head)
        })
        .filter_map(|head| head.rsplit(' ').next()?.parse::<f64>().ok())
        .next_back();
    Ok(rate)
}
