//! Memory per session: open and register many sessions, and read the hub's resident
//! memory before and after; then the parts of a session as the hub's own build lays them
//! out (`quorum_session_footprint_bytes` in its metrics), and what the parts leave of the
//! measured memory.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BenchError, DEFAULT_URL, Table, call, connect, rss_kib, run_tag};
use quorum_hub::protocol::{NoParams, State, method};

/// Longest the scenario waits for the hub to release the sessions it opened.
const RELEASE_WAIT: Duration = Duration::from_secs(60);
/// Pause between two looks at the hub's session count.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Longest the scenario waits for the hub's metrics.
const METRICS_WAIT: Duration = Duration::from_secs(10);
/// The metric in which a hub reports the parts of one idle session.
const FOOTPRINT_METRIC: &str = "quorum_session_footprint_bytes";
/// The parts a hub reports, in the order they are shown, with what they are.
const PARTS: [(&str, &str); 7] = [
    (
        "task",
        "the session's task (its future; tokio adds a task header)",
    ),
    ("session", "the session's handle (SessionHandle)"),
    ("queue", "its outbound queue"),
    ("socket", "its WebSocket stream"),
    ("read_buffer", "the WebSocket's read buffer"),
    ("ping_timer", "its ping timer"),
    ("map_entry", "its entry in the hub's map of sessions"),
];

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
    /// The parts of one idle session, in bytes, as the hub reports them (none when its
    /// metrics are not served at the WebSocket's address).
    pub parts: Vec<SessionPart>,
}

/// One part of an idle session, as the hub's build lays it out.
#[derive(Debug, Clone, Serialize)]
pub struct SessionPart {
    pub part: String,
    pub bytes: u64,
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
    // Read while the sessions are open (the hub reports the parts once one has opened),
    // after the memory, so that the read does not count in it.
    let parts = match session_parts(&options.url).await {
        Ok(parts) => parts,
        Err(err) => {
            eprintln!("connections: no parts of a session from the hub's metrics ({err})");
            Vec::new()
        }
    };
    drop(sessions);
    wait_for_sessions_closed(&options.url).await?;
    Ok(ConnectionsReport {
        sessions: options.sessions,
        connect_seconds,
        hub_rss_before_kib: before,
        hub_rss_after_kib: after,
        bytes_per_session: per_session,
        parts,
    })
}

/// The parts of one idle session, from the metrics of the hub behind the WebSocket URL
/// `ws_url` (`GET /metrics` at its address).
async fn session_parts(ws_url: &str) -> Result<Vec<SessionPart>, BenchError> {
    let address = ws_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| BenchError::Other(format!("{ws_url} is not a ws:// URL")))?;
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(METRICS_WAIT, get)
        .await
        .map_err(|_| BenchError::Other(format!("no metrics from {address} in {METRICS_WAIT:?}")))?
        .map_err(|err| BenchError::Other(format!("reading {address}/metrics: {err}")))?;
    Ok(parse_parts(&response))
}

/// The parts in a metrics text, in the order of [`PARTS`], then any others the hub
/// reports.
fn parse_parts(text: &str) -> Vec<SessionPart> {
    let prefix = format!("{FOOTPRINT_METRIC}{{part=\"");
    let reported: Vec<(&str, u64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (part, value) = rest.split_once("\"} ")?;
            Some((part, value.trim().parse().ok()?))
        })
        .collect();
    let order = |part: &str| PARTS.iter().position(|(p, _)| *p == part);
    let mut parts: Vec<SessionPart> = reported
        .into_iter()
        .map(|(part, bytes)| SessionPart {
            part: part.to_owned(),
            bytes,
        })
        .collect();
    parts.sort_by_key(|p| order(&p.part).unwrap_or(PARTS.len()));
    parts
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
    for part in &report.parts {
        let what = PARTS
            .iter()
            .find(|(name, _)| *name == part.part)
            .map_or(part.part.as_str(), |(_, what)| what);
        t.row(format!("- of which {what} (B)"), part.bytes);
    }
    if let (Some(bytes), false) = (report.bytes_per_session, report.parts.is_empty()) {
        let known: u64 = report.parts.iter().map(|p| p.bytes).sum();
        t.row(
            "- of which the rest: allocations the parts make, the allocator's rounding (B)",
            bytes as i64 - known as i64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_are_read_from_the_metrics_in_their_order() {
        let text = "# TYPE quorum_session_footprint_bytes gauge\n\
            quorum_session_footprint_bytes{part=\"queue\"} 136\n\
            quorum_session_footprint_bytes{part=\"task\"} 1500\n\
            quorum_sessions_open 3\n\
            quorum_session_footprint_bytes{part=\"unknown\"} 9\n";
        let parts: Vec<(String, u64)> = parse_parts(text)
            .into_iter()
            .map(|p| (p.part, p.bytes))
            .collect();
        assert_eq!(
            parts,
            [
                ("task".to_owned(), 1500),
                ("queue".to_owned(), 136),
                ("unknown".to_owned(), 9)
            ]
        );
    }
}
