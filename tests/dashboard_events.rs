//! Dashboard events under load: with thousands of sessions and a steady vote rate, one
//! `quorum.vote.recorded` subscriber does not delay decisions (they never wait behind
//! dashboard events, whose subscribers are found without walking every session), and the
//! hub's memory stays bounded (dashboard events it cannot pass on are dropped and counted).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    DEADLINE, HubProcess, RedisServer, TestHub, WsClient, bin_path, metric, request, vote_params,
    without_rate_limits,
};
use futures::future::join_all;
use serde_json::{Value, json};

/// Sessions open on the hub: every decision event is written to each of them.
const SESSIONS: usize = 2_000;
/// Sessions voting as fast as the hub answers, each with its own instance.
const VOTERS: usize = 6;
/// Votes per batch a voter sends (each on a decision of its own that stays open, so that
/// every vote publishes a dashboard event and none a decision).
const BATCH: usize = 25;
/// How long each phase (without, then with the subscriber) runs its votes.
const PHASE: Duration = Duration::from_secs(6);
/// Pause between two probe decisions.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Latencies below this count as this much when phases are compared: a ratio of two
/// latencies of a few milliseconds says nothing on a shared machine.
const LATENCY_FLOOR: Duration = Duration::from_millis(25);
/// How much more the hub may hold at the end of the phase with the subscriber than at the
/// end of the phase without it.
const MEMORY_ALLOWANCE_KIB: u64 = 48 * 1024;

/// What one phase measured.
struct Phase {
    /// Time from sending a deciding vote to receiving its decision event, per probe.
    latencies: Vec<Duration>,
    /// Votes answered during the phase.
    votes: u64,
    /// Dashboard events the subscriber received (0 without one).
    dashboard_events: u64,
}

impl Phase {
    fn median(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted[sorted.len() / 2].max(LATENCY_FLOOR)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dashboard_subscriber_neither_delays_decisions_nor_grows_memory() {
    let redis = RedisServer::start_single();
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-url", &redis.url()])
            .args(["--session-rate-limit", "off", "--vote-rate-limit", "off"])
            .args(["--max-sessions", "10000"]),
    );
    let url = hub.ws_url();
    let mut idle = Vec::with_capacity(SESSIONS);
    while idle.len() < SESSIONS {
        let batch = (SESSIONS - idle.len()).min(100);
        idle.extend(join_all((0..batch).map(|_| WsClient::connect(&url))).await);
    }
    // Every idle session is known to the hub once one call on it is answered.
    for session in &mut idle {
        session.result("system.unsubscribe", json!({})).await;
    }
    let mut prober = WsClient::connect(&url).await;
    prober.register("prober").await;

    let without = run_phase(&url, &mut prober, "without", false).await;
    let rss_without = hub.rss_kib();
    let with = run_phase(&url, &mut prober, "with", true).await;
    let rss_with = hub.rss_kib();

    let dropped = metric(hub.addr, DROPPED).await;
    eprintln!(
        "without a subscriber: {} votes, median decision {:?}; with one: {} votes, median {:?}, \
         {} dashboard events received, {dropped} dropped; RSS {rss_without} KiB -> {rss_with} KiB",
        without.votes,
        without.median(),
        with.votes,
        with.median(),
        with.dashboard_events,
    );
    assert!(
        with.dashboard_events > 0,
        "the subscriber received no dashboard event"
    );
    assert!(
        with.median() <= without.median() * 2,
        "decisions slowed by the subscriber: median {:?} against {:?} without it",
        with.median(),
        without.median()
    );
    assert!(
        rss_with <= rss_without + MEMORY_ALLOWANCE_KIB,
        "the hub grew from {rss_without} KiB to {rss_with} KiB with the subscriber"
    );
    assert!(hub.panics().is_empty(), "{:?}", hub.panics());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_that_stops_reading_loses_dashboard_events_counted_never_its_session() {
    const VOTES: usize = 3_000;
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.session_queue = 64;
    config.session_queue_bytes = 64 * 1024;
    let hub = TestHub::start_with(config).await;
    let mut dashboard = WsClient::connect_small_buffer(hub.addr).await;
    dashboard
        .result(
            "system.subscribe",
            json!({"events": ["quorum.vote.recorded"]}),
        )
        .await;
    // The dashboard stops reading while far more votes are recorded than its socket and
    // half its queue hold.
    let mut voter = hub.client_as("flood").await;
    for first in (0..VOTES).step_by(BATCH) {
        let batch: Vec<Value> = (first..first + BATCH)
            .map(|n| {
                let params = vote_params("flood", &format!("flood-{n}"), "y", Some(1000));
                request(n, "system.quorum.vote", params)
            })
            .collect();
        voter.send_text(&Value::Array(batch).to_string()).await;
        assert!(voter.recv_value().await.is_array());
    }
    voter.vote("flood", "after-flood", "go", 1).await;
    // Reading again, it gets the decision (decisions always find room), and every dashboard
    // event (one per vote, the deciding one too) is either received or counted as dropped,
    // each once.
    let events = VOTES as u64 + 1;
    let deadline = Instant::now() + DEADLINE;
    let (mut recorded, mut decided) = (0, false);
    loop {
        match tokio::time::timeout(Duration::from_millis(200), dashboard.recv_value()).await {
            Ok(value) if value["method"] == "quorum.vote.recorded" => recorded += 1,
            Ok(value) => {
                assert_eq!(value["method"], "quorum.decision.made", "{value}");
                assert_eq!(value["params"]["decision"], "after-flood", "{value}");
                decided = true;
            }
            Err(_) => {
                let dropped = metric(hub.addr, DROPPED).await;
                if decided && recorded + dropped == events {
                    assert!(
                        recorded > 0 && dropped > 0,
                        "{recorded} received, {dropped} dropped"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "decided: {decided}; {recorded} received and {dropped} dropped of {events}"
                );
            }
        }
    }
    // Its session is still open, and it was never counted as a slow consumer.
    let status = dashboard
        .result("system.quorum.status", json!({"decision": "after-flood"}))
        .await;
    assert_eq!(status["finalDecision"], "go", "{status}");
    assert_eq!(
        metric(hub.addr, "quorum_slow_consumer_closes_total").await,
        0
    );
}

/// The hub's counter of dashboard events it dropped.
const DROPPED: &str = "quorum_dashboard_events_dropped_total";

/// Runs [`VOTERS`] voters for [`PHASE`] (with a `quorum.vote.recorded` subscriber if
/// `subscriber`), and meanwhile times probe decisions from `prober`.
async fn run_phase(url: &str, prober: &mut WsClient, name: &str, subscriber: bool) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let votes = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let watching = if subscriber {
        let mut watcher = WsClient::connect(url).await;
        watcher
            .result(
                "system.subscribe",
                json!({"events": ["quorum.vote.recorded"]}),
            )
            .await;
        let (stop, received) = (stop.clone(), received.clone());
        Some(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let value = watcher.recv_value().await;
                if value["method"] == "quorum.vote.recorded" {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }))
    } else {
        None
    };
    let mut voters = Vec::new();
    for n in 0..VOTERS {
        let mut voter = WsClient::connect(url).await;
        let instance = format!("{name}-voter-{n}");
        voter.register(&instance).await;
        let (stop, votes) = (stop.clone(), votes.clone());
        voters.push(tokio::spawn(async move {
            let mut next = 0;
            while !stop.load(Ordering::Acquire) {
                let batch: Vec<Value> = (0..BATCH)
                    .map(|k| {
                        let decision = format!("{instance}-{}", next + k);
                        let params = vote_params(&instance, &decision, "y", Some(1000));
                        request(next + k, "system.quorum.vote", params)
                    })
                    .collect();
                next += BATCH;
                voter.send_text(&Value::Array(batch).to_string()).await;
                // The batch's replies come as one array; decision events may come first.
                let replies = loop {
                    if let Value::Array(replies) = voter.recv_value().await {
                        break replies;
                    }
                };
                assert_eq!(replies.len(), BATCH);
                for reply in &replies {
                    assert_eq!(reply["result"]["voted"], true, "{reply}");
                }
                votes.fetch_add(BATCH as u64, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut probe = 0;
    while started.elapsed() < PHASE {
        let decision = format!("probe-{name}-{probe}");
        probe += 1;
        let params = vote_params("prober", &decision, "go", Some(1));
        let sent = Instant::now();
        prober
            .send_text(&request(probe, "system.quorum.vote", params).to_string())
            .await;
        loop {
            let value = prober.recv_value().await;
            if value["method"] == "quorum.decision.made" && value["params"]["decision"] == decision
            {
                latencies.push(sent.elapsed());
                break;
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    stop.store(true, Ordering::Release);
    for voter in voters {
        voter.await.unwrap();
    }
    if let Some(watching) = watching {
        watching.abort();
    }
    Phase {
        latencies,
        votes: votes.load(Ordering::Relaxed),
        dashboard_events: received.load(Ordering::Relaxed),
    }
}
