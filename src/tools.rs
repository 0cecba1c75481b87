//! The command-line tools built on the client and the load generator: `vote`, `watch`
//! and `bench`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::{self, ConnectionsOptions, FanoutOptions, VotesOptions};
use crate::client::{Client, ClientConfig, ClientError};
use crate::config::RateLimit;
use crate::store;

/// Registers (through the client) and casts one vote; returns the hub's result, or the
/// JSON-RPC error as JSON text.
pub async fn vote(
    config: ClientConfig,
    instance: &str,
    decision: &str,
    value: &str,
    total: Option<u64>,
) -> Result<Value, String> {
    let (client, _events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    match client.vote(instance, decision, value, total).await {
        Ok(result) => Ok(result),
        Err(ClientError::Rpc {
            code,
            message,
            data,
        }) => Err(json!({"code": code, "message": message, "data": data}).to_string()),
        Err(other) => Err(other.to_string()),
    }
}

/// Prints each decision event as one JSON line until interrupted.
pub async fn watch(config: ClientConfig, mut out: impl std::io::Write) -> Result<(), String> {
    let (_client, mut events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                let line = serde_json::to_string(&event).map_err(|e| e.to_string())?;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away (a closed pipe)
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Everything `bench suite` measures, for one table.
#[derive(Debug, serde::Serialize)]
pub struct Suite {
    pub votes_g60: bench::VotesReport,
    pub votes_g3: bench::VotesReport,
    pub votes_half_rate: bench::VotesReport,
    pub fanout: bench::FanoutReport,
    pub connections: bench::ConnectionsReport,
    pub redis_script_limit: Option<f64>,
    pub redis_script_limit_pipelined: Option<f64>,
}

/// Settings of `bench suite`.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub url: String,
    pub sessions: usize,
    pub duration: Duration,
    pub fanout_sessions: usize,
    pub fanout_decisions: usize,
    pub connections: usize,
    pub hub_pid: Option<u32>,
    /// Unix socket of the hub's Redis, for redis-benchmark.
    pub redis_socket: Option<String>,
}

pub async fn suite(options: &SuiteOptions) -> Result<Suite, String> {
    let votes = |group: usize, rate: Option<f64>| VotesOptions {
        url: options.url.clone(),
        sessions: options.sessions,
        group,
        duration: options.duration,
        max_votes: None,
        rate,
    };
    eprintln!(
        "votes, G=60, {} sessions, {:?}",
        options.sessions, options.duration
    );
    let votes_g60 = bench::votes(&votes(60, None))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("votes, G=3");
    let votes_g3 = bench::votes(&votes(3, None))
        .await
        .map_err(|e| e.to_string())?;
    let half = votes_g60.votes_per_second / 2.0 / options.sessions as f64;
    eprintln!(
        "votes, G=60 at half the maximum rate ({:.0} votes/s)",
        votes_g60.votes_per_second / 2.0
    );
    let votes_half_rate = bench::votes(&votes(60, Some(half)))
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("connections: {}", options.connections);
    let connections = bench::connections(&ConnectionsOptions {
        url: options.url.clone(),
        sessions: options.connections,
        hub_pid: options.hub_pid,
    })
    .await
    .map_err(|e| e.to_string())?;
    eprintln!(
        "fan-out: {} sessions, {} decisions",
        options.fanout_sessions, options.fanout_decisions
    );
    let fanout = bench::fanout(&FanoutOptions {
        url: options.url.clone(),
        sessions: options.fanout_sessions,
        decisions: options.fanout_decisions,
    })
    .await
    .map_err(|e| e.to_string())?;
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
        votes_half_rate,
        fanout,
        connections,
        redis_script_limit: limit,
        redis_script_limit_pipelined: pipelined,
    })
}

/// Runs `redis-benchmark` with EVALSHA of the vote script on random decisions and
/// instances, and returns its requests per second.
async fn redis_benchmark(
    socket: &str,
    clients: usize,
    pipeline: usize,
) -> Result<Option<f64>, String> {
    let url = format!("unix://{socket}");
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(store::VOTE_SCRIPT)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let requests = (100_000 * pipeline.min(4)).to_string();
    let mut command = tokio::process::Command::new("redis-benchmark");
    command
        .args(["-s", socket, "-q", "-r", "1000000", "-n", &requests])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(store::vote_benchmark_command(
            &sha,
            60,
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

/// The suite as one table.
pub fn suite_table(s: &Suite) -> String {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let mut t = String::new();
    let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
    row("measure", "value".into());
    row("---", "---".into());
    let v = &s.votes_g60;
    row(
        &format!("hub votes/s, G=60 ({} sessions)", v.sessions),
        format!("{:.0}", v.votes_per_second),
    );
    row(
        "hub votes/s, G=3",
        format!("{:.0}", s.votes_g3.votes_per_second),
    );
    if let Some(limit) = s.redis_script_limit {
        row(
            "redis-benchmark, vote script, no pipelining",
            format!("{limit:.0}"),
        );
        row(
            "hub G=60 / script limit",
            format!("{:.2}", v.votes_per_second / limit),
        );
    }
    if let Some(limit) = s.redis_script_limit_pipelined {
        row(
            "redis-benchmark, vote script, pipeline 16",
            format!("{limit:.0}"),
        );
        row(
            "hub G=60 / pipelined limit",
            format!("{:.2}", v.votes_per_second / limit),
        );
    }
    let l = &v.latency_us;
    row(
        "vote latency at full load, G=60 (ms) p50/p90/p99/p99.9/max",
        format!(
            "{}/{}/{}/{}/{}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        ),
    );
    let h = &s.votes_half_rate;
    let l = &h.latency_us;
    row(
        &format!(
            "vote latency at half rate ({:.0} votes/s) (ms) p50/p99/max",
            h.votes_per_second
        ),
        format!("{}/{}/{}", ms(l.p50), ms(l.p99), ms(l.max)),
    );
    let f = &s.fanout;
    let l = &f.last_delivery_us;
    row(
        &format!(
            "fan-out to all of {} sessions, {} decisions (ms) p50/p99/max",
            f.sessions, f.decisions
        ),
        format!("{}/{}/{}", ms(l.p50), ms(l.p99), ms(l.max)),
    );
    row(
        "fan-out deliveries missed",
        format!("{} of {}", f.missed, f.sessions * (f.decisions + 1)),
    );
    let c = &s.connections;
    row(
        &format!("connect + register {} sessions (s)", c.sessions),
        format!("{:.2}", c.connect_seconds),
    );
    if let Some(bytes) = c.bytes_per_session {
        row(
            "hub memory per idle registered session",
            format!("{:.1} KiB", bytes as f64 / 1024.0),
        );
    }
    t
}
