//! Memory per session: open and register many sessions, and read the hub's resident
//! memory before and after.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::{BenchError, DEFAULT_URL, Table, call, connect, rss_kib, run_tag};
use quorum_hub::protocol::{NoParams, State, method};

/// Longest the scenario waits for the hub to release the sessions it opened.
const RELEASE_WAIT: Duration = Duration::from_secs(60);
/// Pause between two looks at the hub's session count.
const POLL_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Args)]
pub struct ConnectionsOptions {
    /// The hub's WebSocket endpoint.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    #[arg(long, default_value_t = 10_000)]
    pub sessions: usize,
    /// The hub's process id (its memory is read from /proc).
    #[arg(long)]
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

pub async fn run(options: &ConnectionsOptions) -> Result<ConnectionsReport, BenchError> {
    let before = options.hub_pid.and_then(rss_kib);
    let started = Instant::now();
    let prefix = format!("bc{}", run_tag());
    let sessions = super::open_registered(&options.url, &prefix, options.sessions).await?;
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

/// Polls the hub until only the polling session is left, so that the next scenario does
/// not overlap with the release of these sessions' instances.
pub(super) async fn wait_for_sessions_closed(url: &str) -> Result<(), BenchError> {
    let mut socket = connect(url).await?;
    let deadline = Instant::now() + RELEASE_WAIT;
    for id in 1.. {
        let state: State = call(&mut socket, id, method::GET_STATE, &NoParams {}).await?;
        if state.hub.sessions <= 1 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    let _ = socket.close(None).await;
    Ok(())
}

/// The report's rows, for its own table and the suite's.
pub(super) fn rows(t: &mut Table, report: &ConnectionsReport) {
    t.row(
        format!("connect + register {} sessions (s)", report.sessions),
        format!("{:.2}", report.connect_seconds),
    );
    if let Some(bytes) = report.bytes_per_session {
        t.row(
            "hub memory per idle registered session",
            format!("{:.1} KiB", bytes as f64 / 1024.0),
        );
    }
}
