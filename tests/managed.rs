//! The binary in managed mode: it starts its own redis-server, keeps votes across a
//! restart, and stops cleanly on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{HubProcess, RedisServer, bin_path, rpc_call, short_tempdir, vote_params, wait_ready};
use serde_json::{Value, json};

fn redis_answers(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(data_dir.join("redis.sock")).is_ok()
}

/// The `system.quorum.status` result for `decision`.
async fn status_of(addr: SocketAddr, decision: &str) -> Value {
    rpc_call(addr, "system.quorum.status", json!({"decision": decision})).await["result"].clone()
}

/// Starts the binary on `listen` against a test Redis and returns the first log line
/// that contains `text`.
fn logged_line(listen: &str, text: &str) -> String {
    let redis = RedisServer::start();
    let hub = HubProcess::spawn(Command::new(bin_path()).args([
        "--listen",
        listen,
        "--redis-url",
        &redis.url(),
    ]));
    hub.wait_for_log(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_redis_keeps_votes_across_a_restart_and_stops_with_the_hub() {
    let data = short_tempdir();
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path()),
    );
    wait_ready(hub.addr).await;
    assert!(redis_answers(data.path()));
    for id in ["m1", "m2", "m3"] {
        rpc_call(hub.addr, "system.register", json!({"instanceId": id})).await;
    }
    for (id, value) in [("m1", "keep"), ("m2", "drop")] {
        let vote = vote_params(id, "persist", value, Some(3));
        let reply = rpc_call(hub.addr, "system.quorum.vote", vote).await;
        assert_eq!(reply["result"]["voted"], true, "{reply}");
    }
    let before = status_of(hub.addr, "persist").await;
    assert_eq!(before["finalDecision"], "keep");
    assert!(hub.terminate(), "hub exits 0 on SIGTERM");
    assert!(
        !redis_answers(data.path()),
        "managed redis-server still running after the hub stopped"
    );

    // Same data dir, settings from the environment this time.
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .env("QUORUM_LISTEN", "127.0.0.1:0")
            .env("QUORUM_DATA_DIR", data.path()),
    );
    wait_ready(hub.addr).await;
    let after = status_of(hub.addr, "persist").await;
    assert_eq!(after, before, "votes changed across the restart");
    rpc_call(hub.addr, "system.register", json!({"instanceId": "m1"})).await;
    let vote = vote_params("m1", "persist", "other", None);
    let retry = rpc_call(hub.addr, "system.quorum.vote", vote).await;
    assert_eq!(retry["result"]["reason"], "already_voted");
    assert_eq!(retry["result"]["recordedValue"], "keep");
    assert!(hub.terminate());
}

#[test]
fn without_redis_server_on_path_the_hub_says_how_to_get_it() {
    let data = short_tempdir();
    let empty_path = short_tempdir();
    let output = Command::new(bin_path())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("PATH", empty_path.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("redis-server was not found") && stderr.contains("--redis-url"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let output = Command::new(bin_path()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--listen", "QUORUM_LISTEN"),
        ("--redis-url", "QUORUM_REDIS_URL"),
        ("--data-dir", "QUORUM_DATA_DIR"),
        ("--web-dir", "QUORUM_WEB_DIR"),
        ("--instance-ttl", "QUORUM_INSTANCE_TTL"),
        ("--vote-rate-limit", "QUORUM_VOTE_RATE_LIMIT"),
        ("--vote-timeout", "QUORUM_VOTE_TIMEOUT"),
        ("--breaker-failures", "QUORUM_BREAKER_FAILURES"),
        ("--breaker-open", "QUORUM_BREAKER_OPEN"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from:\n{help}"
        );
    }
}

#[test]
fn a_redis_that_can_lose_acknowledged_votes_is_reported() {
    // The test Redis runs without an append-only file.
    let line = logged_line("127.0.0.1:0", "without append-only persistence");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn an_open_hub_on_a_network_address_warns() {
    let line = logged_line("0.0.0.0:0", "without --auth-secret");
    assert!(line.contains("WARN"), "{line}");
}
