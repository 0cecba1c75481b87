//! The agent client, the `vote`, `watch` and `bench` subcommands, and `/metrics`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{RedisServer, TestHub, bin_path, http};
use quorum_hub::client::{Client, ClientConfig};
use quorum_hub::config::{Config, RateLimit};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_survives_a_hub_restart_and_misses_nothing() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let addr = hub.addr;
    let other = TestHub::start(&redis).await;
    let mut config = ClientConfig::new(format!("ws://{addr}/ws"));
    config.instance = Some("survivor".into());
    let (client, mut events) = Client::connect(config).await.unwrap();
    let mut voter = other.client().await;
    voter.register("maker").await;

    voter.vote("maker", "before", "a", 1).await;
    assert_eq!(events.recv().await.unwrap().decision, "before");

    // The hub goes away; decisions are made elsewhere meanwhile.
    hub.stop().await;
    for n in 0..3 {
        voter
            .vote("maker", &format!("while-down-{n}"), "b", 1)
            .await;
    }
    let hub = TestHub::start_on(Config::with_redis(redis.url()), addr).await;

    // The client comes back by itself, gets exactly what it missed, then live events.
    for n in 0..3 {
        let event = tokio::time::timeout(common::DEADLINE, events.recv())
            .await
            .expect("missed event")
            .unwrap();
        assert_eq!(event.decision, format!("while-down-{n}"));
    }
    // It registered again: it can vote as its instance.
    let deadline = std::time::Instant::now() + common::DEADLINE;
    let reply = loop {
        match client.vote("survivor", "after", "c", Some(1)).await {
            Ok(reply) => break reply,
            Err(err) => assert!(
                std::time::Instant::now() < deadline,
                "never voted again: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(reply.voted, "{reply:?}");
    let event = tokio::time::timeout(common::DEADLINE, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.decision, "after");
    // Nothing arrives twice.
    voter.vote("maker", "last", "d", 1).await;
    let event = tokio::time::timeout(common::DEADLINE, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.decision, "last");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vote_and_watch_from_the_command_line() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let url = hub.ws_url();
    let mut watch = Command::new(bin_path())
        .args(["watch", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watcher is connected once the hub counts its session.
    common::eventually("watch connected", || async {
        let (_, body) = common::rpc(
            hub.addr,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "system.get_state"}),
        )
        .await;
        (body["result"]["hub"]["sessions"] == 1).then_some(())
    })
    .await;
    let vote = |instance: &str, value: &str| {
        Command::new(bin_path())
            .args([
                "vote",
                "--url",
                &url,
                "--instance",
                instance,
                "--decision",
                "cli",
                "--value",
                value,
                "--total",
                "3",
            ])
            .output()
            .unwrap()
    };
    let first = vote("cli-1", "ship");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let reply: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        reply,
        json!({"voted": true, "quorumReached": false, "voteCount": 1})
    );
    let second: Value = serde_json::from_slice(&vote("cli-2", "ship").stdout).unwrap();
    assert_eq!(second["finalDecision"], "ship");
    let refused = vote("bad id", "ship");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("whitespace"));

    let line = rx
        .recv_timeout(common::DEADLINE)
        .expect("watch printed the decision");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (event["decision"].as_str(), event["value"].as_str()),
        (Some("cli"), Some("ship"))
    );
    assert_eq!(event["voteCount"], 2);
    let _ = watch.kill();
    let _ = watch.wait();
}

/// Parses OpenMetrics text into (series, value) pairs, failing on malformed lines.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed line {line:?}"));
            let name_ok = series
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            assert!(
                name_ok && series.matches('{').count() == series.matches('}').count(),
                "malformed series {line:?}"
            );
            (
                series.to_owned(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_votes_a_client_made() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut c = hub.client().await;
    a.register("m-a").await;
    b.register("m-b").await;
    c.register("m-c").await;
    a.vote("m-a", "metered", "x", 3).await; // recorded
    b.vote("m-b", "metered", "x", 3).await; // recorded, decides
    a.vote("m-a", "metered", "y", 3).await; // already_voted
    c.vote("m-c", "metered", "y", 3).await; // decided
    c.error(
        "system.quorum.vote",
        json!({"instanceId": "m-a", "decision": "metered", "value": "z"}),
    )
    .await; // error

    let (status, text) = http(hub.addr, "GET", "/metrics", "").await.unwrap();
    assert_eq!(status, 200);
    let metrics = parse_metrics(&text);
    let value = |series: &str| {
        metrics
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert_eq!(value("quorum_votes_total{outcome=\"recorded\"}"), 2.0);
    assert_eq!(value("quorum_votes_total{outcome=\"already_voted\"}"), 1.0);
    assert_eq!(value("quorum_votes_total{outcome=\"decided\"}"), 1.0);
    assert_eq!(value("quorum_votes_total{outcome=\"error\"}"), 1.0);
    assert_eq!(value("quorum_decisions_made_total"), 1.0);
    assert_eq!(value("quorum_registrations_total"), 3.0);
    assert_eq!(value("quorum_sessions_open"), 3.0);
    assert_eq!(value("quorum_vote_latency_seconds_count"), 5.0);
    assert_eq!(value("quorum_breaker_state"), 0.0);
    assert!(value("quorum_events_delivered_total") >= 3.0);
}

fn bench(args: &[&str]) -> Value {
    let output = Command::new(bin_path())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_a_tiny_scenario_of_each_kind() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.vote_rate_limit = "1000000/60s".parse::<RateLimit>().unwrap();
    config.session_rate_limit = RateLimit::OFF;
    let hub = TestHub::start_with(config).await;
    let url = hub.ws_url();
    let votes = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            bench(&[
                "votes",
                "--url",
                &url,
                "--sessions",
                "12",
                "--group",
                "3",
                "--votes",
                "300",
                "--duration",
                "60s",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(votes["votes"], 300, "{votes}");
    let outcomes = votes["outcomes"].as_object().unwrap();
    assert_eq!(
        outcomes.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        300,
        "{votes}"
    );
    for outcome in outcomes.keys() {
        assert!(
            ["recorded", "decided_now", "decided", "already_voted"].contains(&outcome.as_str()),
            "{votes}"
        );
    }
    assert!(votes["latency_us"]["p50"].as_u64().unwrap() > 0);

    let fanout = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            bench(&[
                "fanout",
                "--url",
                &url,
                "--sessions",
                "40",
                "--decisions",
                "5",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(fanout["missed"], 0, "{fanout}");

    let pid = std::process::id().to_string();
    let connections = tokio::task::spawn_blocking(move || {
        bench(&[
            "connections",
            "--url",
            &url,
            "--sessions",
            "40",
            "--hub-pid",
            &pid,
        ])
    })
    .await
    .unwrap();
    assert_eq!(connections["sessions"], 40);
    assert!(
        connections["hub_rss_after_kib"].as_u64().is_some(),
        "{connections}"
    );
}
