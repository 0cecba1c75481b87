//! The binary in managed mode: it starts its own redis-server, keeps votes across a
//! restart, and stops cleanly on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{
    HubProcess, RedisServer, bin_path, eventually, rpc_call, short_tempdir, vote_params, wait_ready,
};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_and_held_by_one_hub() {
    use std::os::unix::fs::PermissionsExt;
    let parent = short_tempdir();
    let data = parent.path().join("data");
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data),
    );
    wait_ready(hub.addr).await;
    let vote = vote_params("p1", "private", "yes", Some(1));
    rpc_call(hub.addr, "system.register", json!({"instanceId": "p1"})).await;
    rpc_call(hub.addr, "system.quorum.vote", vote).await;
    // Votes, the log and the socket are the hub's alone: nothing readable by others.
    let mut seen = 0;
    let mut pending = vec![data.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        seen += 1;
    }
    assert!(
        seen >= 4,
        "data dir, socket, log and append-only files: saw {seen}"
    );

    // A second hub on the same data dir refuses to start, and says why.
    let second = Command::new(bin_path())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another hub") && stderr.contains("--data-dir"),
        "{stderr}"
    );
    // The first one is unaffected.
    let status = status_of(hub.addr, "private").await;
    assert_eq!(status["finalDecision"], "yes");
    assert!(hub.terminate());
}

/// Writes an append-only file of `keys` plain SET commands into `dir` (no RDB preamble,
/// so loading it replays every command), with a redis-server of its own.
async fn write_large_aof(dir: &Path, keys: u32) {
    let socket = dir.join("redis.sock");
    /// Kills the seeding server if the test fails half-way.
    struct Seeder(std::process::Child);
    impl Drop for Seeder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Seeder(
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "yes"])
            .args([
                "--aof-use-rdb-preamble",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually("the seeding redis-server", async || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    })
    .await;
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    // Populating and rewriting take a while on a busy machine: no response timeout.
    let unbounded = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&unbounded)
        .await
        .unwrap();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("BGREWRITEAOF")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually("the AOF rewrite", async || {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut conn)
            .await
            .ok()?;
        (info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0"))
            .then_some(())
    })
    .await;
    let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
    server.0.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_redis_loading_a_large_file_is_waited_for_not_restarted() {
    let data = short_tempdir();
    write_large_aof(data.path(), 1_000_000).await;
    // Loading a million commands takes far longer than this start timeout: only the
    // loading itself keeps the hub waiting.
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-start-timeout", "50ms"])
            .arg("--data-dir")
            .arg(data.path()),
    );
    hub.wait_for_log("loading its data");
    wait_ready(hub.addr).await;
    assert!(hub.panics().is_empty());
    let restarted = hub.logged("restarting it");
    assert!(restarted.is_empty(), "{restarted:?}");
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
