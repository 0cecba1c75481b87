//! Protection and recovery: the vote rate limit, timeout and circuit breaker, Redis
//! outages and crashes, and decision events that must not be lost.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    HubProcess, RedisServer, TestHub, WsClient, assert_error, bin_path, eventually,
    expected_winner, http, metrics_show, rpc_call, short_tempdir, tallied, vote_params, wait_ready,
    without_rate_limits,
};
use futures::future::join_all;
use quorum_hub::config::{Config, RateLimit};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_votes_per_instance_per_window_across_hubs() {
    let redis = RedisServer::start();
    let hubs = [TestHub::start(&redis).await, TestHub::start(&redis).await];
    for id in ["spammer", "neighbour"] {
        rpc_call(hubs[0].addr, "system.register", json!({"instanceId": id})).await;
    }
    // 50 votes on 50 decisions, split over both hubs, all recorded.
    for n in 0..50 {
        let vote = vote_params("spammer", &format!("rl-{n}"), "y", Some(3));
        let reply = rpc_call(hubs[n % 2].addr, "system.quorum.vote", vote).await;
        assert_eq!(reply["result"]["voted"], true, "vote {n}: {reply}");
    }
    // The 51st, on either hub, is refused and not recorded.
    for hub in &hubs {
        let vote = vote_params("spammer", "rl-50", "y", Some(3));
        let reply = rpc_call(hub.addr, "system.quorum.vote", vote).await;
        assert_error(&reply["error"], -32000, "at most 50 votes");
        let retry_after = reply["error"]["data"]["retryAfterMs"]
            .as_u64()
            .expect("retryAfterMs");
        assert!((1..=60_000).contains(&retry_after), "{retry_after}");
    }
    let reply = rpc_call(
        hubs[0].addr,
        "system.quorum.status",
        json!({"decision": "rl-50"}),
    )
    .await;
    assert_eq!(
        reply["error"]["code"], -32004,
        "a refused vote opened the decision: {reply}"
    );
    // A retry of a vote that counted still learns so.
    let vote = vote_params("spammer", "rl-7", "n", Some(3));
    let reply = rpc_call(hubs[1].addr, "system.quorum.vote", vote).await;
    assert_eq!(reply["result"]["reason"], "already_voted", "{reply}");
    // Another instance is unaffected.
    let vote = vote_params("neighbour", "rl-50", "y", Some(3));
    let reply = rpc_call(hubs[1].addr, "system.quorum.vote", vote).await;
    assert_eq!(reply["result"]["voted"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_window_rolls() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.vote_rate_limit = "3/2s".parse::<RateLimit>().unwrap();
    let hub = TestHub::start_with(config).await;
    let mut c = hub.client_as("roller").await;
    // Retries of a vote that counted take no place in the window: three of them, and the
    // next two votes are still recorded.
    assert_eq!(c.vote("roller", "roll-0", "y", 3).await["voted"], true);
    for _ in 0..3 {
        let retry = c.vote("roller", "roll-0", "n", 3).await;
        assert_eq!(retry["reason"], "already_voted", "{retry}");
    }
    for n in 1..3 {
        assert_eq!(
            c.vote("roller", &format!("roll-{n}"), "y", 3).await["voted"],
            true
        );
    }
    let fourth = vote_params("roller", "roll-3", "y", Some(3));
    for _ in 0..3 {
        let error = c.error("system.quorum.vote", fourth.clone()).await;
        assert_eq!(error["code"], -32000);
        assert!(error["data"]["retryAfterMs"].as_u64().unwrap() <= 2000);
    }
    // The window holds the three recorded votes' times, and none of the refused ones'.
    let held: i64 = redis.query(&["LLEN", "cb:ratelimit:{roller}:votes"]).await;
    assert_eq!(held, 3, "the window holds a time of a vote not recorded");
    // Once the oldest vote leaves the window, a vote is accepted again: the refused
    // attempts meanwhile took no place in it either.
    eventually("the window to roll", async || {
        let reply = c.call("system.quorum.vote", fourth.clone()).await;
        if reply["result"]["voted"] == true {
            return Some(());
        }
        assert_eq!(reply["error"]["code"], -32000, "{reply}");
        None
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_slower_than_its_timeout_says_the_outcome_is_unknown_and_a_retry_is_truthful() {
    let redis = RedisServer::start_single();
    let mut config = Config::with_redis(redis.url());
    config.vote_timeout = Duration::from_millis(200);
    let hub = TestHub::start_with(config).await;
    let mut c = hub.client_as("slow").await;
    // Hold every Redis client for a while: the vote is sent and lands after the timeout.
    let _: () = redis.query(&["CLIENT", "PAUSE", "800", "ALL"]).await;
    let vote = vote_params("slow", "paused", "late", Some(3));
    let error = c.error("system.quorum.vote", vote.clone()).await;
    assert_eq!(error["code"], -32005, "{error}");
    assert_eq!(error["data"]["reason"], "timeout");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("outcome is unknown") && message.contains("retrying is safe"),
        "{message}"
    );
    // The retry tells the truth about the first attempt, whichever way it went.
    let reply = eventually("an answer after the pause", async || {
        let reply = c.call("system.quorum.vote", vote.clone()).await;
        reply.get("result").cloned()
    })
    .await;
    if reply["voted"] == false {
        assert_eq!(reply["reason"], "already_voted");
        assert_eq!(reply["recordedValue"], "late");
    }
    let status = c
        .result("system.quorum.status", json!({"decision": "paused"}))
        .await;
    assert_eq!(status["voteCount"], 1, "counted twice: {status}");
}

/// Kills Redis and has `instance` vote `failures` times, each answered -32005: enough
/// to open a breaker with that threshold.
async fn fail_until_open(redis: &mut RedisServer, c: &mut WsClient, instance: &str, failures: u32) {
    redis.kill();
    for n in 0..failures {
        let error = c
            .error(
                "system.quorum.vote",
                vote_params(instance, &format!("down-{n}"), "y", Some(3)),
            )
            .await;
        assert_eq!(error["code"], -32005, "failure {n}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_answers_the_fallback_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start_single();
    let mut config = Config::with_redis(redis.url());
    config.breaker_failures = 3;
    config.breaker_open = Duration::from_secs(2);
    let hub = TestHub::start_with(config).await;
    let mut c = hub.client_as("steady").await;
    fail_until_open(&mut redis, &mut c, "steady", 3).await;
    // Open: the vote gets the seed's fallback, other methods -32001, readiness 503.
    let reply = c
        .result(
            "system.quorum.vote",
            vote_params("steady", "down-3", "y", Some(3)),
        )
        .await;
    assert_eq!(
        reply,
        json!({"voted": false, "quorumReached": false, "reason": "circuit_open"})
    );
    let error = c.error("system.get_state", json!({})).await;
    assert_eq!(error["code"], -32001, "{error}");
    assert!(error["data"]["retryAfterMs"].as_u64().is_some());
    let (status, body) = http(hub.addr, "GET", "/readyz", "").await.unwrap();
    assert_eq!(status, 503, "{body}");

    // Redis comes back (empty, so the scripts must be loaded again); after the open
    // period a trial call closes the breaker and the same session votes again.
    redis.restart();
    let reply = eventually("the breaker to close again", async || {
        let reply = c
            .call(
                "system.quorum.vote",
                vote_params("steady", "back", "y", Some(1)),
            )
            .await;
        (reply["result"]["voted"] == true).then_some(reply)
    })
    .await;
    assert_eq!(reply["result"]["finalDecision"], "y");
    wait_ready(hub.addr).await;
    let state = c.result("system.get_state", json!({})).await;
    assert_eq!(state["hub"]["breaker"], "closed");
    // The listener resubscribed: the decision made after the outage was pushed.
    let event = c.next_notification().await;
    assert_eq!(event["params"]["decision"], "back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_closes_as_soon_as_the_hubs_probe_finds_redis_back() {
    let mut redis = RedisServer::start_single();
    let mut config = Config::with_redis(redis.url());
    config.breaker_failures = 2;
    // Far longer than the test: only the probe can close it in time.
    config.breaker_open = Duration::from_secs(3600);
    let hub = TestHub::start_with(config).await;
    let mut c = hub.client_as("patient").await;
    fail_until_open(&mut redis, &mut c, "patient", 2).await;
    let error = c.error("system.get_state", json!({})).await;
    assert_eq!(error["code"], -32001, "open: {error}");
    redis.restart();
    let reply = eventually("the probe to close the breaker", async || {
        let reply = c
            .call(
                "system.quorum.vote",
                vote_params("patient", "after-outage", "y", Some(1)),
            )
            .await;
        (reply["result"]["voted"] == true).then_some(reply)
    })
    .await;
    assert_eq!(reply["result"]["finalDecision"], "y");
    let state = c.result("system.get_state", json!({})).await;
    assert_eq!(state["hub"]["breaker"], "closed");
}

/// Every answer the hub gave one client for one vote, retries included.
struct VoteLog {
    instance: String,
    decision: String,
    value: String,
    answers: Vec<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_votes_survive_a_kill_9_of_the_managed_redis() {
    const CLIENTS: usize = 6;
    const DECISIONS: usize = 30;
    /// Most times Redis is killed in one run.
    const MOST_CRASHES: usize = 5;
    let data = short_tempdir();
    let mut config = Config::with_redis("unused");
    config.redis_url = None;
    config.data_dir = data.path().to_owned();
    config.breaker_open = Duration::from_millis(100);
    let hub = TestHub::start_with(config).await;

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let instance = format!("crash-{i}");
        clients.push((i, hub.client_as(&instance).await, instance));
    }
    let answered = AtomicUsize::new(0);
    // Answers that were not definitive: votes the crash caught in flight.
    let caught = AtomicUsize::new(0);
    // Each client votes on every decision in turn, retrying until the answer is definitive.
    let voting = join_all(clients.into_iter().map(|(i, mut c, instance)| {
        let (answered, caught) = (&answered, &caught);
        async move {
            let mut logs = Vec::new();
            for d in 0..DECISIONS {
                let decision = format!("crash-d{d}");
                let value = ["A", "B", "C"][(i * 7 + d) % 3].to_owned();
                let vote = vote_params(&instance, &decision, &value, Some(CLIENTS as u64));
                let mut answers = Vec::new();
                eventually("a definitive answer", async || {
                    let reply = c.call("system.quorum.vote", vote.clone()).await;
                    let result = &reply["result"];
                    let definitive = result["voted"] == true
                        || result["reason"] == "already_voted"
                        || result["reason"] == "decided";
                    answers.push(reply);
                    if !definitive {
                        caught.fetch_add(1, Ordering::SeqCst);
                    }
                    definitive.then_some(())
                })
                .await;
                answered.fetch_add(1, Ordering::SeqCst);
                logs.push(VoteLog {
                    instance: instance.clone(),
                    decision,
                    value,
                    answers,
                });
                // Pace the clients so that the crash lands in the middle of the run.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            logs
        }
    }));
    let url = format!("unix://{}", data.path().join("redis.sock").display());
    let pid_of_redis = || async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .map(|pid| pid.trim().to_owned())
    };
    // Kills Redis under the votes; again, while votes remain, if the hub had it back
    // before any vote met the outage (a busy machine can pause every client meanwhile).
    let crash = async {
        eventually("votes before the crash", async || {
            (answered.load(Ordering::SeqCst) >= CLIENTS * 3).then_some(())
        })
        .await;
        let mut crashes = Vec::new();
        for _ in 0..MOST_CRASHES {
            let pid = pid_of_redis().await.expect("managed redis pid");
            assert!(
                std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            crashes.push((pid.clone(), answered.load(Ordering::SeqCst)));
            eventually("redis-server restarted", async || {
                pid_of_redis().await.filter(|new| *new != pid)
            })
            .await;
            let left = CLIENTS * DECISIONS - answered.load(Ordering::SeqCst);
            if caught.load(Ordering::SeqCst) > 0 || left < CLIENTS * 3 {
                break;
            }
        }
        crashes
    };
    let (logs, crashes) = tokio::join!(voting, crash);
    let logs: Vec<VoteLog> = logs.into_iter().flatten().collect();
    for (_, answered_at_crash) in &crashes {
        assert!(
            *answered_at_crash < CLIENTS * DECISIONS,
            "a crash came after the last vote"
        );
    }
    let retried = logs.iter().filter(|l| l.answers.len() > 1).count();
    assert!(
        retried > 0,
        "no vote was caught by {} crashes",
        crashes.len()
    );
    let new_pid = pid_of_redis().await.expect("redis-server was restarted");
    assert!(crashes.iter().all(|(pid, _)| *pid != new_pid));

    let mut c = hub.client().await;
    for d in 0..DECISIONS {
        let decision = format!("crash-d{d}");
        let status = c
            .result("system.quorum.status", json!({"decision": decision}))
            .await;
        let votes = status["votes"].as_array().unwrap();
        let voters: HashSet<&str> = votes
            .iter()
            .map(|v| v["instanceId"].as_str().unwrap())
            .collect();
        assert_eq!(
            voters.len(),
            votes.len(),
            "{decision}: a vote counted twice: {status}"
        );
        assert_eq!(
            tallied(&status),
            votes.len() as u64,
            "{decision}: tally and votes disagree: {status}"
        );
        let ordered: Vec<String> = votes
            .iter()
            .map(|v| v["value"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            status["quorumReached"], true,
            "{decision}: every instance voted, yet no decision"
        );
        assert_eq!(
            status["finalDecision"],
            expected_winner(&ordered).as_str(),
            "{decision}: {status}"
        );
        for log in logs.iter().filter(|l| l.decision == decision) {
            let recorded = votes
                .iter()
                .find(|v| v["instanceId"] == log.instance.as_str());
            let last = &log.answers.last().unwrap()["result"];
            if let Some(ack) = log.answers.iter().find(|a| a["result"]["voted"] == true) {
                let vote = recorded.unwrap_or_else(|| {
                    panic!(
                        "{decision}: acknowledged vote of {} lost: {status}",
                        log.instance
                    )
                });
                assert_eq!(vote["value"], log.value.as_str());
                assert_eq!(
                    vote["seq"], ack["result"]["voteCount"],
                    "{decision}: acknowledged at another position"
                );
            } else if last["reason"] == "already_voted" {
                assert_eq!(
                    last["recordedValue"],
                    log.value.as_str(),
                    "{decision}: untruthful retry answer"
                );
                assert_eq!(recorded.unwrap()["value"], log.value.as_str());
            } else {
                assert_eq!(last["reason"], "decided");
                assert!(
                    recorded.is_none(),
                    "{decision}: told `decided` but the vote was recorded"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_get_every_decision_once_when_the_pubsub_link_is_killed() {
    const DECISIONS: usize = 24;
    let redis = RedisServer::start();
    let watched = TestHub::start(&redis).await;
    let deciding = TestHub::start(&redis).await;
    let mut watchers: Vec<WsClient> = Vec::new();
    for _ in 0..3 {
        watchers.push(watched.client().await);
    }
    let mut voter = deciding.client_as("decider").await;
    for n in 0..DECISIONS {
        if n % 8 == 2 {
            // Drop every hub's subscription; the decisions right after are made while
            // the watched hub is not subscribed.
            let _: Vec<redis::Value> = redis
                .query_each_node(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .await;
        }
        voter.vote("decider", &format!("gap-{n}"), "go", 1).await;
    }
    for watcher in watchers.iter_mut() {
        for n in 0..DECISIONS {
            let event = watcher.next_notification().await;
            assert_eq!(
                event["params"]["decision"],
                format!("gap-{n}"),
                "out of order or missing"
            );
        }
        watcher.assert_no_more_notifications("gap-0").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resuming_from_its_last_event_gets_exactly_what_it_missed() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut watcher = hub.client().await;
    voter.vote("v", "r-1", "a", 1).await;
    let seen = watcher.next_notification().await["params"]["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    watcher.close().await;
    for n in 2..=4 {
        voter.vote("v", &format!("r-{n}"), "a", 1).await;
    }
    let mut back = WsClient::connect(&format!("{}?lastEventId={seen}", hub.ws_url())).await;
    for n in 2..=4 {
        assert_eq!(
            back.next_notification().await["params"]["decision"],
            format!("r-{n}")
        );
    }
    voter.vote("v", "r-5", "a", 1).await;
    assert_eq!(back.next_notification().await["params"]["decision"], "r-5");
    back.assert_no_more_notifications("r-1").await;

    // The same through system.subscribe, for clients that cannot set the URL.
    let mut late = hub.client().await;
    let reply = late
        .result("system.subscribe", json!({"since": seen}))
        .await;
    assert_eq!(reply["replayed"], 4);
    for n in 2..=5 {
        assert_eq!(
            late.next_notification().await["params"]["decision"],
            format!("r-{n}")
        );
    }
    // Asking again replays nothing twice.
    assert_eq!(
        late.result("system.subscribe", json!({"since": seen}))
            .await["replayed"],
        0
    );
    late.assert_no_more_notifications("r-1").await;

    let error = late
        .error("system.subscribe", json!({"since": "yesterday"}))
        .await;
    assert_eq!(error["data"]["field"], "since");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_that_is_not_an_event_id_gets_one_notice_then_live_events() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let before = voter.decide("v", "before").await;
    let mut back = WsClient::connect(&format!("{}?lastEventId=bogus", hub.ws_url())).await;
    let notice = back.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["reason"], "malformed", "{notice}");
    assert_eq!(notice["params"]["since"], before.as_str(), "{notice}");
    let message = notice["params"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"bogus\" is not an event id"),
        "{message}"
    );
    voter.vote("v", "after", "a", 1).await;
    assert_eq!(
        back.next_notification().await["params"]["decision"],
        "after"
    );
    back.assert_no_more_notifications("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_ahead_of_every_event_gets_one_notice_then_live_events() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let newest = voter.decide("v", "before").await;
    // An id from another Redis, far ahead of this one's newest event.
    let ahead = "99999999999999-0";
    let mut back = WsClient::connect(&format!("{}?lastEventId={ahead}", hub.ws_url())).await;
    let notice = back.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["reason"], "ahead", "{notice}");
    assert_eq!(notice["params"]["since"], newest.as_str(), "{notice}");
    assert!(
        notice["params"]["message"]
            .as_str()
            .unwrap()
            .contains(ahead),
        "{notice}"
    );
    // Live events follow, though their ids are below the cursor the client sent.
    voter.vote("v", "after", "a", 1).await;
    assert_eq!(
        back.next_notification().await["params"]["decision"],
        "after"
    );
    back.assert_no_more_notifications("after").await;

    // The same through system.subscribe: the notice, nothing replayed, then live events.
    let mut late = hub.client().await;
    let reply = late
        .result("system.subscribe", json!({"since": ahead}))
        .await;
    assert_eq!(reply["replayed"], 0, "{reply}");
    let notice = late.next_notification().await;
    assert_eq!(notice["params"]["reason"], "ahead", "{notice}");
    voter.vote("v", "later", "a", 1).await;
    assert_eq!(
        late.next_notification().await["params"]["decision"],
        "later"
    );
    late.assert_no_more_notifications("later").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_on_an_empty_log_is_ahead_of_it() {
    // A fresh Redis (after a failover to an empty server, say): every cursor is ahead.
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut back = WsClient::connect(&format!("{}?lastEventId=5-0", hub.ws_url())).await;
    let notice = back.next_notification().await;
    assert_eq!(notice["params"]["reason"], "ahead", "{notice}");
    assert_eq!(notice["params"]["since"], "0-0", "{notice}");
    let mut voter = hub.client_as("v").await;
    voter.vote("v", "first", "a", 1).await;
    assert_eq!(
        back.next_notification().await["params"]["decision"],
        "first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_an_event_no_longer_kept_says_recovery_was_incomplete() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(voter.decide("v", &format!("old-{n}")).await);
    }
    let _: () = redis
        .query(&[
            "XTRIM",
            quorum_hub::event_log_key(&redis.url()),
            "MAXLEN",
            "1",
        ])
        .await;
    let mut back = WsClient::connect(&format!("{}?lastEventId={}", hub.ws_url(), ids[0])).await;
    let notice = back.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["since"], ids[0].as_str());
    assert_eq!(notice["params"]["reason"], "trimmed", "{notice}");
    let message = notice["params"]["message"].as_str().unwrap();
    assert!(message.contains("system.get_state"), "{notice}");
    let event = back.next_notification().await;
    assert_eq!(event["params"]["eventId"], ids[2].as_str());
    back.assert_no_more_notifications("old-0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_replay_is_followed_by_the_live_events_held_behind_it_in_order() {
    // End to end: every missed decision once and in order, then the live one. (That the
    // held live events wait for room instead of closing the session is checked where the
    // timing can be controlled: `session::replay`'s unit tests.)
    const MISSED: usize = 1500;
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.session_queue = 8;
    let hub = TestHub::start_with(config).await;
    let mut voter = hub.client_as("v").await;
    let first = voter.decide("v", "replay-0").await;
    for n in 1..=MISSED {
        voter.vote("v", &format!("replay-{n}"), "a", 1).await;
    }
    // The resuming client does not read until a live decision has been made: the replay
    // fills its queue and socket, and the live event waits behind it.
    let mut back = WsClient::connect(&format!("{}?lastEventId={first}", hub.ws_url())).await;
    voter.vote("v", "live", "a", 1).await;
    for n in 1..=MISSED {
        let event = back.next_notification().await;
        assert_eq!(event["method"], "quorum.decision.made", "{event}");
        assert_eq!(event["params"]["decision"], format!("replay-{n}"));
    }
    let live = back.next_notification().await;
    assert_eq!(live["params"]["decision"], "live", "{live}");
    back.assert_no_more_notifications("live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_cannot_read_redis_says_so() {
    let mut redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let seen = voter.decide("v", "before-outage").await;
    voter.decide("v", "missed").await;
    redis.kill();
    // Resuming while Redis is away: told at once that the missed events are unknown.
    let mut back = WsClient::connect(&format!("{}?lastEventId={seen}", hub.ws_url())).await;
    let notice = back.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["since"], seen.as_str());
    let message = notice["params"]["message"].as_str().unwrap();
    assert!(message.contains("could not be read"), "{message}");
    assert_eq!(notice["params"]["reason"], "unreadable", "{notice}");
    // Asking again with system.subscribe is answered with an error, not an empty replay.
    let error = back.error("system.subscribe", json!({"since": seen})).await;
    assert!(
        [-32005, -32001].contains(&error["code"].as_i64().unwrap()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_does_not_let_an_open_sessions_binding_lapse() {
    let mut redis = RedisServer::start_single();
    let config = |redis: &RedisServer| {
        let mut config = Config::with_redis(redis.url());
        config.breaker_failures = 2;
        config.breaker_open = Duration::from_secs(60);
        config.instance_ttl = Duration::from_secs(1);
        config
    };
    let hub = TestHub::start_with(config(&redis)).await;
    let mut holder = hub.client_as("held").await;

    // Readiness probes during an outage do not trip the breaker...
    redis.kill();
    for _ in 0..4 {
        let (status, _) = http(hub.addr, "GET", "/readyz", "").await.unwrap();
        assert_eq!(status, 503);
    }
    assert!(
        metrics_show(hub.addr, "quorum_breaker_state 0").await,
        "probes opened the breaker"
    );
    // ...callers do.
    for n in 0..2 {
        let error = holder.error("system.get_state", json!({})).await;
        assert_eq!(error["code"], -32005, "failure {n}: {error}");
    }
    assert_eq!(
        holder.error("system.get_state", json!({})).await["code"],
        -32001
    );

    // Redis comes back without the binding (a fresh server). While the breaker is still
    // open for callers, the hub's keepalive claims the instance for its session again...
    redis.restart();
    eventually("the binding to be claimed again", async || {
        let owner: Option<String> = redis.query(&["GET", "cb:instance:{held}:owner"]).await;
        owner
    })
    .await;
    // ...so another hub cannot take the instance from the open session.
    let other = TestHub::start_with(config(&redis)).await;
    let mut thief = other.client().await;
    let error = thief
        .error("system.register", json!({"instanceId": "held"}))
        .await;
    assert_eq!(error["code"], -32002, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_instance_another_session_took_is_told_and_closed() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.instance_ttl = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    let mut holder = hub.client_as("taken").await;
    // The binding lapsed in an outage, and a session on another hub took the instance.
    let _: () = redis
        .query(&[
            "SET",
            "cb:instance:{taken}:owner",
            "other-hub:7",
            "PX",
            "60000",
        ])
        .await;
    let (code, reason) = holder.expect_close_with_reason().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "instance taken by another session")
    );
    let notice = holder.next_notification().await;
    assert_eq!(notice["method"], "system.instance.lost", "{notice}");
    assert_eq!(notice["params"]["instanceId"], "taken", "{notice}");
    let message = notice["params"]["message"].as_str().unwrap();
    assert!(message.contains("another session"), "{message}");
    // The binding stays with the session that took it.
    let owner: String = redis.query(&["GET", "cb:instance:{taken}:owner"]).await;
    assert_eq!(owner, "other-hub:7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_in_flight_never_binds_an_instance_to_a_session_that_closed() {
    let redis = RedisServer::start_single();
    let hub = HubProcess::spawn(
        std::process::Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--instance-ttl", "3"])
            .args(["--redis-url", &redis.url()])
            .env("RUST_LOG", "quorum_hub=debug"),
    );
    let mut kept = WsClient::connect(&hub.ws_url()).await;
    kept.register("kept").await;
    let mut gone = WsClient::connect(&hub.ws_url()).await;
    gone.register("gone").await;
    // The registration of `gone` lapsed (as in an outage): the next refresh writes it anew.
    let _: () = redis
        .query(&["DEL", "cb:instance:{gone}", "cb:instance:{gone}:owner"])
        .await;
    // Writes wait, so the keepalive's next refresh is in flight while `gone` closes.
    let _: () = redis.query(&["CLIENT", "PAUSE", "20000", "WRITE"]).await;
    eventually("the keepalive's refresh to wait on Redis", async || {
        let clients: String = redis.query(&["CLIENT", "LIST"]).await;
        clients
            .lines()
            .any(|client| client.contains(" flags=b") && client.contains("cmd=evalsha"))
            .then_some(())
    })
    .await;
    gone.close().await;
    hub.wait_for_log("closing");
    let _: () = redis.query(&["CLIENT", "UNPAUSE"]).await;
    // Two refreshes of `kept` later, the refresh that was in flight has finished...
    for _ in 0..2 {
        // A refresh shows as the time to live rising above the lowest seen since.
        let mut lowest = i64::MAX;
        eventually("the keepalive to refresh `kept`", async || {
            let now: i64 = redis.query(&["PTTL", "cb:instance:{kept}:owner"]).await;
            let refreshed = now > lowest;
            lowest = lowest.min(now);
            refreshed.then_some(())
        })
        .await;
    }
    // ...and `gone`, whose session closed, is bound to no session.
    let owner: Option<String> = redis.query(&["GET", "cb:instance:{gone}:owner"]).await;
    assert_eq!(
        owner, None,
        "the closed session's binding was written again"
    );
}
