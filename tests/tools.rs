//! The agent client, the `vote` and `watch` subcommands, the load generator
//! (`quorum-hub-bench`), and `/metrics`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    DEADLINE, RedisServer, TestHub, bin_path, eventually, http, rpc_call, vote_params,
    without_rate_limits,
};
use quorum_hub::auth::Authority;
use quorum_hub::client::{Client, ClientConfig, TokenSource};
use quorum_hub::config::{Config, RateLimit};
use quorum_hub::protocol::{DecisionEvent, GapReason, Notification};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc::Receiver;

/// The client's next notification.
async fn next_notification(events: &mut Receiver<Notification>) -> Notification {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("timed out waiting for an event")
        .expect("the client's event stream ended")
}

/// The client's next notification, which must be a decision.
async fn next_event(events: &mut Receiver<Notification>) -> DecisionEvent {
    match next_notification(events).await {
        Notification::DecisionMade(event) => event,
        other => panic!("expected a decision, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_survives_a_hub_restart_and_misses_nothing() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let addr = hub.addr;
    let other = TestHub::start(&redis).await;
    let mut config = ClientConfig::new(format!("ws://{addr}/ws"));
    config.instance = Some("survivor".into());
    let (client, mut events) = Client::connect(config).await.unwrap();
    let mut voter = other.client_as("maker").await;

    voter.vote("maker", "before", "a", 1).await;
    assert_eq!(next_event(&mut events).await.decision, "before");

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
        let event = next_event(&mut events).await;
        assert_eq!(event.decision, format!("while-down-{n}"));
    }
    // It registered again: it can vote as its instance.
    let reply = eventually("the client to vote again", async || {
        client.vote("survivor", "after", "c", Some(1)).await.ok()
    })
    .await;
    assert!(reply.voted, "{reply:?}");
    assert_eq!(next_event(&mut events).await.decision, "after");
    // Nothing arrives twice.
    voter.vote("maker", "last", "d", 1).await;
    assert_eq!(next_event(&mut events).await.decision, "last");
    drop(hub);
}

/// A client that has not received a single decision yet still resumes: from where the
/// hub stood when it first connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_saw_no_decision_yet_still_gets_those_made_while_it_was_away() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let addr = hub.addr;
    let other = TestHub::start(&redis).await;
    let mut voter = other.client_as("maker").await;
    let mut observer = hub.client().await;
    // The log is not empty: the client must not start from its beginning either. The
    // client connects once the hub has delivered that decision, so that it is before the
    // client's time.
    voter.vote("maker", "long-before", "a", 1).await;
    let seen = observer.next_notification().await;
    assert_eq!(seen["params"]["decision"], "long-before", "{seen}");
    let mut config = ClientConfig::new(format!("ws://{addr}/ws"));
    config.instance = Some("newcomer".into());
    let (_client, mut events) = Client::connect(config).await.unwrap();

    hub.stop().await;
    for n in 0..2 {
        voter.vote("maker", &format!("away-{n}"), "b", 1).await;
    }
    let hub = TestHub::start_on(Config::with_redis(redis.url()), addr).await;
    for n in 0..2 {
        assert_eq!(next_event(&mut events).await.decision, format!("away-{n}"));
    }
    voter.vote("maker", "back", "c", 1).await;
    assert_eq!(next_event(&mut events).await.decision, "back");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_and_watch_pass_on_that_missed_events_are_gone() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("maker").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(voter.decide("maker", &format!("gone-{n}")).await);
    }
    // The second event is no longer kept: a client resuming after the first cannot get
    // everything it missed, and must be told so before what remains.
    let _: i64 = redis
        .query(&["XDEL", "cb:stream:quorum.decision.made", &ids[1]])
        .await;
    let mut config = ClientConfig::new(hub.ws_url());
    config.since = Some(ids[0].parse().unwrap());
    let (_client, mut events) = Client::connect(config).await.unwrap();
    match next_notification(&mut events).await {
        Notification::EventsIncomplete(notice) => assert_eq!(notice.since.to_string(), ids[0]),
        other => panic!("expected system.events.incomplete, got {other:?}"),
    }
    assert_eq!(next_event(&mut events).await.decision, "gone-2");

    // `watch` prints the notice on stderr; stdout stays one decision per line.
    let watch = tokio::process::Command::new(bin_path())
        .args(["watch", "--url", &hub.ws_url(), "--since", &ids[0]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watch = watch;
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(watch.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, stdout.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("watch printed a decision");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["decision"], "gone-2");
    let notice = tokio::time::timeout(DEADLINE, stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("watch printed the notice");
    assert!(
        notice.starts_with("events incomplete:") && notice.contains(&ids[0]),
        "{notice}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_cursor_is_ahead_of_the_hub_follows_the_hub() {
    // The client's last event came from another Redis (one that was lost, say): this
    // hub's events all have smaller ids, and the client must not drop them as old.
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("maker").await;
    let newest = voter.decide("maker", "before").await;
    let mut config = ClientConfig::new(hub.ws_url());
    config.since = Some("99999999999999-0".parse().unwrap());
    let (_client, mut events) = Client::connect(config).await.unwrap();
    match next_notification(&mut events).await {
        Notification::EventsIncomplete(notice) => {
            assert_eq!(notice.reason, GapReason::Ahead);
            assert_eq!(notice.since.to_string(), newest);
        }
        other => panic!("expected system.events.incomplete, got {other:?}"),
    }
    voter.vote("maker", "after", "a", 1).await;
    assert_eq!(next_event(&mut events).await.decision, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_a_long_replay_connects_before_the_caller_reads() {
    // More missed decisions than the client buffers for its caller.
    const MISSED: usize = 1100;
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let mut voter = hub.client_as("maker").await;
    let since = voter.decide("maker", "start").await.parse().unwrap();
    for n in 0..MISSED {
        voter.vote("maker", &format!("missed-{n}"), "a", 1).await;
    }
    let mut config = ClientConfig::new(hub.ws_url());
    config.instance = Some("resumer".into());
    config.since = Some(since);
    let (client, mut events) = tokio::time::timeout(DEADLINE, Client::connect(config))
        .await
        .expect("connect hung while the replay waited for the caller")
        .unwrap();
    for n in 0..MISSED {
        assert_eq!(
            next_event(&mut events).await.decision,
            format!("missed-{n}")
        );
    }
    let reply = client.vote("resumer", "after", "b", Some(1)).await.unwrap();
    assert!(reply.voted, "{reply:?}");
}

/// A log a client resumes from `seen` into: two decisions it missed, with an entry between
/// them that the hub cannot read (a field that is not UTF-8), so that the replay stops there
/// and the hub says `unreadable`. The two missed decisions were delivered live, so a
/// resuming session's replay covers the entry.
struct UnreadableLog {
    seen: String,
    /// The unreadable entry's id.
    unreadable: String,
    /// The missed decisions' event ids.
    missed: Vec<String>,
}

impl UnreadableLog {
    async fn make(redis: &RedisServer, voter: &mut common::WsClient) -> Self {
        let seen = voter.decide("maker", "seen").await;
        let first = voter.decide("maker", "missed-1").await;
        let unreadable = redis
            .query(&[
                "EVAL",
                "return redis.call('XADD', KEYS[1], '*', 'decision', '\\255')",
                "1",
                quorum_hub::event_log_key(&redis.url()),
            ])
            .await;
        let second = voter.decide("maker", "missed-2").await;
        Self {
            seen,
            unreadable,
            missed: vec![first, second],
        }
    }

    /// Decides `live-1` while the entry is unreadable, repairs the log, decides `live-2`;
    /// returns every decision after `seen`, in log order, with its event id.
    async fn decide_around_repair(
        &self,
        redis: &RedisServer,
        voter: &mut common::WsClient,
    ) -> Vec<(String, String)> {
        let mut expected: Vec<(String, String)> = ["missed-1", "missed-2"]
            .map(String::from)
            .into_iter()
            .zip(self.missed.iter().cloned())
            .collect();
        expected.push(("live-1".into(), voter.decide("maker", "live-1").await));
        self.repair(redis).await;
        expected.push(("live-2".into(), voter.decide("maker", "live-2").await));
        expected
    }

    /// Removes the unreadable entry: a replay from `seen` reads every event after it.
    async fn repair(&self, redis: &RedisServer) {
        let removed: i64 = redis
            .query(&[
                "XDEL",
                quorum_hub::event_log_key(&redis.url()),
                &self.unreadable,
            ])
            .await;
        assert_eq!(removed, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_told_the_log_is_unreadable_resumes_again_and_misses_nothing() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("maker").await;
    let log = UnreadableLog::make(&redis, &mut voter).await;
    let mut config = ClientConfig::new(hub.ws_url());
    config.instance = Some("resumer".into());
    config.since = Some(log.seen.parse().unwrap());
    let (client, mut events) = Client::connect(config).await.unwrap();
    match next_notification(&mut events).await {
        Notification::EventsIncomplete(notice) => {
            assert_eq!(notice.reason, GapReason::Unreadable, "{notice:?}");
            assert_eq!(notice.since.to_string(), log.seen);
        }
        other => panic!("expected system.events.incomplete, got {other:?}"),
    }
    // A decision made after the notice, while the log is still unreadable; then the log is
    // repaired, and one more decision is made.
    let expected = log.decide_around_repair(&redis, &mut voter).await;

    // The client resumed again from `seen` until the hub could read the log: every decision
    // after `seen`, once and in order, the missed ones first.
    let mut notices = Vec::new();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        match next_notification(&mut events).await {
            Notification::DecisionMade(event) => {
                received.push((event.decision, event.event_id.to_string()));
                assert_eq!(received[..], expected[..received.len()]);
            }
            Notification::EventsIncomplete(notice) if received.is_empty() => {
                assert_eq!(notice.since.to_string(), log.seen, "{notice:?}");
                notices.push(notice.reason);
            }
            other => panic!("expected a decision, got {other:?}"),
        }
    }
    // Told again while the entry was there; then that an event after `seen` is gone.
    let (last, retries) = notices.split_last().expect("a notice before the replay");
    assert_eq!(*last, GapReason::Trimmed, "{notices:?}");
    assert!(
        retries
            .iter()
            .all(|reason| *reason == GapReason::Unreadable),
        "{notices:?}"
    );
    assert!(client.link().borrow().connections >= 2);
    let reply = client.vote("resumer", "after", "b", Some(1)).await.unwrap();
    assert!(reply.voted, "{reply:?}");
    assert_eq!(next_event(&mut events).await.decision, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_since_a_cursor_the_hub_cannot_read_past_prints_every_decision_once_it_can() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("maker").await;
    let log = UnreadableLog::make(&redis, &mut voter).await;
    let mut watch = tokio::process::Command::new(bin_path())
        .args(["watch", "--url", &hub.ws_url(), "--since", &log.seen])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut stderr = tokio::io::BufReader::new(watch.stderr.take().unwrap()).lines();
    let notice = tokio::time::timeout(DEADLINE, stderr.next_line())
        .await
        .expect("watch printed no notice")
        .unwrap()
        .expect("watch printed the notice");
    assert!(
        notice.starts_with("events incomplete:") && notice.contains("could not be read"),
        "{notice}"
    );
    let expected = log.decide_around_repair(&redis, &mut voter).await;
    let mut printed = Vec::new();
    while printed.len() < expected.len() {
        let line = tokio::time::timeout(DEADLINE, stdout.next_line())
            .await
            .expect("watch printed no decision")
            .unwrap()
            .expect("watch printed a decision");
        let event: Value = serde_json::from_str(&line).unwrap();
        printed.push((
            event["decision"].as_str().unwrap().to_owned(),
            event["eventId"].as_str().unwrap().to_owned(),
        ));
        assert_eq!(printed[..], expected[..printed.len()]);
    }
}

const SECRET: &str = "tools-test-secret-0123456789";

/// A token for `sub` that expires in `ttl`.
fn token(sub: &str, ttl: Duration) -> String {
    Authority::new(SECRET)
        .unwrap()
        .mint(Some(sub), false, ttl)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_token_file_keeps_its_session_past_the_first_tokens_expiry() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.auth_secret = Some(SECRET.to_owned());
    let hub = TestHub::start_with(config).await;
    let dir = common::short_tempdir();
    let file = dir.path().join("token");
    std::fs::write(&file, token("agent", Duration::from_secs(1))).unwrap();
    let mut config = ClientConfig::new(hub.ws_url());
    config.instance = Some("agent".into());
    config.token = Some(TokenSource::File(file.clone()));
    let (client, _events) = Client::connect(config).await.unwrap();
    // The session's binding names the session: it stays the same only if the session does.
    let owner_key = "cb:instance:{agent}:owner";
    let owner: String = redis.query(&["GET", owner_key]).await;

    // The token is rotated in place; a session opened with a token of the same expiry,
    // and no newer one, ends when that expires.
    std::fs::write(&file, token("agent", Duration::from_secs(600))).unwrap();
    let bearer = format!("Bearer {}", token("bystander", Duration::from_secs(1)));
    let mut bystander =
        common::WsClient::connect_with(&hub.ws_url(), &[("Authorization", &bearer)])
            .await
            .unwrap();
    let (code, reason) = bystander.expect_close_with_reason().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));

    // The client's session went on: same binding, and it votes.
    let reply = client.vote("agent", "rotated", "a", Some(1)).await.unwrap();
    assert!(reply.voted, "{reply:?}");
    let after: String = redis.query(&["GET", owner_key]).await;
    assert_eq!(after, owner, "the client reconnected instead of refreshing");

    // The command-line tools read the same file.
    let vote = Command::new(bin_path())
        .args(["vote", "--url", &hub.ws_url(), "--token-file"])
        .arg(&file)
        .args([
            "--instance",
            "agent-cli",
            "--decision",
            "rotated",
            "--value",
            "a",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&vote.stderr);
    assert!(stderr.contains("instance agent"), "{stderr}");
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
    eventually("watch to connect", async || {
        let reply = rpc_call(hub.addr, "system.get_state", json!({})).await;
        (reply["result"]["hub"]["sessions"] == 1).then_some(())
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
        .recv_timeout(DEADLINE)
        .expect("watch printed the decision");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (event["decision"].as_str(), event["value"].as_str()),
        (Some("cli"), Some("ship"))
    );
    assert_eq!(event["voteCount"], 2);

    // A vote that gives its decision a deadline; the decision expires without quorum and
    // watch prints that too.
    let timed = Command::new(bin_path())
        .args(["vote", "--url", &url, "--instance", "cli-1", "--decision"])
        .args(["cli-timed", "--value", "ship", "--total", "3"])
        .args(["--close-after", "300ms"])
        .output()
        .unwrap();
    assert!(
        timed.status.success(),
        "{}",
        String::from_utf8_lossy(&timed.stderr)
    );
    let line = rx.recv_timeout(DEADLINE).expect("watch printed the expiry");
    let expired: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(expired["decision"], "cli-timed", "{expired}");
    assert_eq!(expired["tally"], json!({"ship": 1}), "{expired}");
    assert!(expired.get("value").is_none(), "{expired}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_their_own_address() {
    let redis = RedisServer::start();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let mut config = Config::with_redis(redis.url());
    config.metrics_listen = Some(metrics_addr);
    let hub = TestHub::start_with(config).await;
    // The main port no longer serves them (the dashboard's files answer 404 instead)...
    let (status, text) = http(hub.addr, "GET", "/metrics", "").await.unwrap();
    assert_eq!(status, 404, "{text}");
    // ...the metrics address does, and nothing else.
    let (status, text) = http(metrics_addr, "GET", "/metrics", "").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        parse_metrics(&text)
            .iter()
            .any(|(series, _)| series == "quorum_sessions_open")
    );
    let (status, _) = http(metrics_addr, "POST", "/rpc", "{}").await.unwrap();
    assert_eq!(status, 404);
    hub.stop().await;
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
    let mut a = hub.client_as("m-a").await;
    let mut b = hub.client_as("m-b").await;
    let mut c = hub.client_as("m-c").await;
    a.vote("m-a", "metered", "x", 3).await; // recorded
    b.vote("m-b", "metered", "x", 3).await; // recorded, decides
    a.vote("m-a", "metered", "y", 3).await; // already_voted
    c.vote("m-c", "metered", "y", 3).await; // decided
    c.error(
        "system.quorum.vote",
        vote_params("m-a", "metered", "z", None),
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

/// Runs `quorum-hub-bench SCENARIO --url URL ARGS --json` against a hub in this process:
/// the bench crate's command line, parsed and run on a runtime of its own in a thread of
/// its own (so without blocking the runtime that serves the hub); returns the parsed report.
async fn bench(scenario: &str, url: &str, args: &[&str]) -> Value {
    #[derive(clap::Parser)]
    struct Bench {
        #[command(subcommand)]
        command: quorum_hub_bench::BenchCommand,
    }
    let argv: Vec<String> = ["quorum-hub-bench", scenario, "--url", url]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--json"])
        .map(String::from)
        .collect();
    let command = <Bench as clap::Parser>::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .command;
    let run = std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(quorum_hub_bench::run(command))
    });
    let output = tokio::task::spawn_blocking(move || run.join().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("bench {scenario} {args:?}: {e}"));
    serde_json::from_str(&output).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_a_tiny_scenario_of_each_kind() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.vote_rate_limit = "1000000/60s".parse::<RateLimit>().unwrap();
    config.session_rate_limit = RateLimit::OFF;
    config.webhooks.allow_private = true;
    let hub = TestHub::start_with(config).await;
    let url = hub.ws_url();
    let votes = bench(
        "votes",
        &url,
        &[
            "--sessions",
            "12",
            "--group",
            "3",
            "--votes",
            "300",
            "--duration",
            "60s",
        ],
    )
    .await;
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

    // Together, every round is whole: each group of 4 (quorum 3) records two votes, decides
    // with the third and answers the fourth `decided`, and all stop after the same round.
    let together = bench(
        "votes",
        &url,
        &[
            "--sessions",
            "12",
            "--group",
            "4",
            "--together",
            "--duration",
            "1s",
        ],
    )
    .await;
    let outcome = |name: &str| together["outcomes"][name].as_u64().unwrap_or(0);
    let decided = outcome("decided_now");
    assert!(decided >= 3, "{together}");
    assert_eq!(outcome("recorded"), 2 * decided, "{together}");
    assert_eq!(outcome("decided"), decided, "{together}");
    assert_eq!(together["votes"], 4 * decided, "{together}");

    let fanout = bench("fanout", &url, &["--sessions", "40", "--decisions", "5"]).await;
    assert_eq!(fanout["missed"], 0, "{fanout}");
    assert!(fanout["vote_us"]["p50"].as_u64().unwrap() > 0, "{fanout}");
    // Ten more decisions with another session calling meanwhile, every call timed.
    let calls = &fanout["calls"];
    assert_eq!(calls["decisions"], 10, "{fanout}");
    let made = calls["during_calls"].as_u64().unwrap() + calls["idle_calls"].as_u64().unwrap();
    assert!(made > 0, "{fanout}");
    // The 200 baseline calls come before any probe decision: never during one.
    assert!(calls["idle_calls"].as_u64().unwrap() >= 200, "{fanout}");
    assert!(calls["idle_us"]["p50"].as_u64().unwrap() > 0, "{fanout}");

    let webhooks = bench("webhooks", &url, &["--endpoints", "3", "--decisions", "10"]).await;
    assert_eq!(webhooks["delivered"], 30, "{webhooks}");
    for count in ["missed", "duplicated", "mismatched_ids", "websocket_missed"] {
        assert_eq!(webhooks[count], 0, "{count}: {webhooks}");
    }
    for latency in ["receiver_us", "websocket_us", "vote_us"] {
        assert!(webhooks[latency]["p50"].as_u64().unwrap() > 0, "{webhooks}");
    }
    assert!(webhooks["deliveries_per_second"].as_f64().unwrap() > 0.0);
    // The bench removes the endpoints it added.
    let mut admin = hub.client().await;
    let listed = admin.result("system.webhooks.list", json!({})).await;
    assert_eq!(listed["webhooks"], json!([]), "{listed}");

    let pid = std::process::id().to_string();
    let connections = bench(
        "connections",
        &url,
        &["--sessions", "40", "--hub-pid", &pid],
    )
    .await;
    assert_eq!(connections["sessions"], 40);
    assert!(
        connections["hub_rss_after_kib"].as_u64().is_some(),
        "{connections}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storm_bench_restarts_its_hub_and_every_client_resumes() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.vote_rate_limit = "1000000/60s".parse::<RateLimit>().unwrap();
    let hub = TestHub::start_with(config).await;
    let storm = bench(
        "storm",
        &hub.ws_url(),
        &[
            "--redis-url",
            &redis.url(),
            "--clients",
            "40",
            "--decisions",
            "3",
            "--wait",
            "30s",
            "--hub-bin",
            bin_path().to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(storm["clients_back"], 40, "{storm}");
    assert!(storm["all_resumed_seconds"].is_number(), "{storm}");
    assert_eq!(storm["missed"], 0, "{storm}");
    assert_eq!(storm["duplicated"], 0, "{storm}");
    assert_eq!(storm["refused_attempts"], 0, "{storm}");
    assert_eq!(storm["other_failures"], 0, "{storm}");
    assert_eq!(storm["extra_reconnections"], 0, "{storm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_tool_adds_lists_reads_and_removes_endpoints() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.webhooks.allow_private = true;
    let hub = TestHub::start_with(config).await;
    let receiver = common::receiver::Receiver::ok().await;
    let tool = async |args: &[&str]| -> serde_json::Value {
        let output = tokio::process::Command::new(bin_path())
            .args(["webhooks", "--url", &hub.ws_url()])
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "webhooks {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let added = tool(&["add", &receiver.url(), "--description", "ci"]).await;
    let id = added["id"].as_str().unwrap().to_owned();
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    let mut voter = hub.client_as("cli").await;
    let event = voter.decide("cli", "by-webhook").await;
    assert_eq!(receiver.wait_for(1).await[0].id(), event);
    let listed = tool(&["list"]).await;
    assert_eq!(listed["webhooks"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["webhooks"][0]["description"], "ci", "{listed}");
    let attempts = common::eventually("the attempt logged", async || {
        let page = tool(&["deliveries", &id, "--limit", "5"]).await;
        (page["attempts"].as_array().unwrap().len() == 1).then_some(page)
    })
    .await;
    assert_eq!(attempts["attempts"][0]["eventId"], event.as_str());
    assert_eq!(tool(&["remove", &id]).await["done"], "removed");
    let output = Command::new(bin_path())
        .args(["webhooks", "--url", &hub.ws_url(), "remove", &id])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["code"], -32004, "{error}");
}
