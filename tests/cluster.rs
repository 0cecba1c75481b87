//! What only a Redis Cluster can show: votes spread over the primaries, a decision whose
//! event could not be logged at once is logged by the sweep exactly once (and kept, however
//! long past its retention, until it is), the rate-limit
//! reservation is given back, votes are broadcast only while a dashboard listens, decision
//! events follow the event log when its slot moves, and a primary killed with -9 under
//! load is survived: votes flow again within seconds, and every session gets every
//! decision that survived, in order (once and never contradicted with `--wait-replicas`;
//! what the dead primary had acknowledged but not yet replicated is Redis's loss, and is
//! checked to be exactly that).
//! (The contract suites run against a cluster too: `QUORUM_TEST_REDIS=cluster`.)

mod common;

use std::time::Duration;

use common::failover::{
    self, Audit, DECISIONS_AFTER_FAULT, DECISIONS_BEFORE_FAULT, VOTERS, Voting, audit,
    check_watchers, event_ids, log_to_test_output,
};
use common::{
    HubProcess, RedisServer, TestHub, WsClient, bin_path, eventually, vote_params,
    without_rate_limits,
};
use serde_json::json;

/// Two hubs on `redis` (rate limits off), and two sessions watching each.
async fn two_hubs_watched(redis: &RedisServer) -> ([TestHub; 2], Vec<WsClient>) {
    failover::two_hubs_watched(|| without_rate_limits(redis)).await
}

/// The stream key of the cluster's event log.
fn event_log(redis: &RedisServer) -> &'static str {
    quorum_hub::event_log_key(&redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_on_different_decisions_run_on_every_primary_and_no_call_crosses_slots() {
    let redis = RedisServer::start_cluster();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let _: Vec<()> = redis.query_each_node(&["CONFIG", "RESETSTAT"]).await;
    let mut voter = hub.client_as("spreader").await;
    for n in 0..60 {
        voter
            .vote("spreader", &format!("spread-{n}"), "go", 2)
            .await;
    }
    let state = voter
        .result("system.get_state", json!({"limit": 1000}))
        .await;
    assert_eq!(state["decisions"].as_array().unwrap().len(), 60);
    let stats: Vec<String> = redis.query_each_node(&["INFO", "commandstats"]).await;
    let with_votes = stats
        .iter()
        .filter(|s| {
            s.lines()
                .find(|l| l.starts_with("cmdstat_evalsha:"))
                .and_then(|l| l.split("calls=").nth(1))
                .and_then(|c| c.split(',').next())
                .and_then(|c| c.parse::<u64>().ok())
                .is_some_and(|calls| calls >= 5)
        })
        .count();
    assert_eq!(
        with_votes, 3,
        "each of the 3 primaries runs a share of the votes"
    );
    let errors: Vec<String> = redis.query_each_node(&["INFO", "errorstats"]).await;
    for node in errors {
        assert!(!node.contains("CROSSSLOT"), "{node}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_whose_event_could_not_be_logged_is_logged_by_the_sweep_exactly_once() {
    let redis = RedisServer::start_cluster();
    let hubs = [
        TestHub::start_with(without_rate_limits(&redis)).await,
        TestHub::start_with(without_rate_limits(&redis)).await,
    ];
    let mut watchers = vec![hubs[0].client().await, hubs[1].client().await];
    let mut voter = hubs[0].client_as("logger").await;
    let first = voter.decide("logger", "before").await;
    for watcher in &mut watchers {
        assert_eq!(
            watcher.next_notification().await["params"]["eventId"],
            first
        );
    }
    // The log step fails while the stream key holds a string (WRONGTYPE): the vote is
    // still answered as decided, and the decision waits in its unlogged set.
    let log = event_log(&redis);
    let _: () = redis.query(&["DEL", log]).await;
    let _: () = redis.query(&["SET", log, "not a stream"]).await;
    let reply = voter.vote("logger", "stuck", "yes", 1).await;
    assert_eq!(reply["voted"], true, "{reply}");
    assert_eq!(reply["quorumReached"], true, "{reply}");
    assert_eq!(reply["finalDecision"], "yes", "{reply}");
    let status = voter
        .result("system.quorum.status", json!({"decision": "stuck"}))
        .await;
    assert_eq!(status["finalDecision"], "yes");
    let _: () = redis.query(&["DEL", log]).await;
    // The sweep (every hub runs one) logs it once; every session gets it once.
    for watcher in watchers.iter_mut().chain([&mut voter]) {
        let event = watcher.next_notification().await;
        assert_eq!(event["params"]["decision"], "stuck", "{event}");
        assert_eq!(event["params"]["value"], "yes");
        assert_eq!(event["params"]["voteCount"], 1);
    }
    let entries: u64 = redis.query(&["XLEN", log]).await;
    assert_eq!(entries, 1, "logged once, however many hubs swept");
    for watcher in &mut watchers {
        watcher.assert_no_more_notifications("stuck").await;
    }
    // A later vote on it answers from the result, and logs nothing more.
    let mut late = hubs[1].client_as("late").await;
    let reply = late.vote("late", "stuck", "no", 1).await;
    assert_eq!(reply["reason"], "decided", "{reply}");
    let entries: u64 = redis.query(&["XLEN", log]).await;
    assert_eq!(entries, 1);
}

/// The retention in the test that keeps decisions unlogged longer than it: below what
/// `--decision-retention` accepts, so that the test outlasts it quickly.
const SHORT_RETENTION: Duration = Duration::from_secs(2);

/// Reads, in one atomic run, a decision's event id ('' before it is logged) and the PTTL
/// (ms; -1: no expiry) of each of its keys.
const EVENT_ID_AND_TTLS: &str = "local read = {redis.call('HGET', KEYS[1], 'eventId') or ''} \
    for _, key in ipairs(KEYS) do read[#read + 1] = tostring(redis.call('PTTL', key)) end \
    return read";

/// A decision's event id ('' while unlogged) and the PTTL of each of its keys (result,
/// votes, tally, metadata, ballots, places).
async fn event_id_and_ttls(redis: &RedisServer, decision: &str) -> (String, Vec<i64>) {
    let keys: Vec<String> = ["result", "votes", "tally", "metadata", "ballots", "places"]
        .iter()
        .map(|part| redis.decision_key(decision, part))
        .collect();
    let count = keys.len().to_string();
    let mut command = vec!["EVAL", EVENT_ID_AND_TTLS, &count];
    command.extend(keys.iter().map(String::as_str));
    let read: Vec<String> = redis.query(&command).await;
    let ttls = read[1..].iter().map(|ttl| ttl.parse().unwrap()).collect();
    (read[0].clone(), ttls)
}

/// Redis's clock (ms), as the scripts read it.
async fn redis_now_ms(redis: &RedisServer) -> u64 {
    let times: Vec<(u64, u64)> = redis.query_each_node(&["TIME"]).await;
    let (secs, micros) = times[0];
    secs * 1000 + micros / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_decision_is_kept_past_the_retention_until_its_event_is_logged() {
    let redis = RedisServer::start_cluster();
    let mut config = without_rate_limits(&redis);
    config.decision_retention = SHORT_RETENTION;
    // With a vote rate limit, each recorded vote keeps its place beside the decision.
    config.vote_rate_limit = quorum_hub::config::RateLimit {
        max: 100,
        window: Duration::from_secs(60),
    };
    let hub = TestHub::start_with(config).await;
    let mut watcher = hub.client().await;
    let mut voter = hub.client_as("patient").await;
    // The log step fails while the stream key holds a string (WRONGTYPE), as it does while
    // the event log's primary fails over: one decision is made, one expires at its deadline.
    let log = event_log(&redis);
    let _: () = redis.query(&["DEL", log]).await;
    let _: () = redis.query(&["SET", log, "not a stream"]).await;
    let made = voter.vote("patient", "made-unlogged", "yes", 1).await;
    assert_eq!(made["finalDecision"], "yes", "{made}");
    let mut closing = vote_params("patient", "lapsed-unlogged", "no", Some(2));
    closing["closeAfterMs"] = json!(200);
    voter.result("system.quorum.vote", closing).await;
    let expired_at = eventually("the deadline to close a decision", async || {
        let status = voter
            .result(
                "system.quorum.status",
                json!({"decision": "lapsed-unlogged"}),
            )
            .await;
        status["expiredAt"].as_u64()
    })
    .await;
    // Longer than the retention since both closed, their events still not logged.
    let retained_until = expired_at + SHORT_RETENTION.as_millis() as u64 + 500;
    eventually("the retention to pass while unlogged", async || {
        (redis_now_ms(&redis).await > retained_until).then_some(())
    })
    .await;
    for (decision, state) in [("made-unlogged", "decided"), ("lapsed-unlogged", "expired")] {
        let reply = voter
            .call("system.quorum.status", json!({ "decision": decision }))
            .await;
        assert_eq!(
            reply["result"]["state"], state,
            "{decision} is gone before its event was logged: {reply}"
        );
        let (event_id, ttls) = event_id_and_ttls(&redis, decision).await;
        assert_eq!(event_id, "");
        assert_eq!(ttls, [-1; 6], "{decision} expires before it is logged");
    }
    // The log recovers: the sweep logs both, every session gets them, and only now does
    // the retention start, on every key of each.
    let _: () = redis.query(&["DEL", log]).await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let event = watcher.next_notification().await;
        heard.push((event["method"].clone(), event["params"]["decision"].clone()));
    }
    heard.sort_by_key(|(_, decision)| decision.to_string());
    assert_eq!(
        heard,
        [
            (json!("quorum.decision.expired"), json!("lapsed-unlogged")),
            (json!("quorum.decision.made"), json!("made-unlogged")),
        ]
    );
    for (decision, state) in [("made-unlogged", "decided"), ("lapsed-unlogged", "expired")] {
        let ttls = eventually("the decision to be marked as logged", async || {
            let (event_id, ttls) = event_id_and_ttls(&redis, decision).await;
            (!event_id.is_empty()).then_some(ttls)
        })
        .await;
        let retention = SHORT_RETENTION.as_millis() as i64;
        assert!(
            ttls.iter().all(|ttl| (1..=retention).contains(ttl)),
            "{decision}: every key expires within the retention once logged: {ttls:?}"
        );
        let status = voter
            .result("system.quorum.status", json!({ "decision": decision }))
            .await;
        assert_eq!(status["state"], state, "{status}");
    }
    let entries: u64 = redis.query(&["XLEN", log]).await;
    assert_eq!(entries, 2, "each logged once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_vote_gives_back_its_place_in_the_rate_window() {
    let redis = RedisServer::start_cluster();
    let mut config = without_rate_limits(&redis);
    config.vote_rate_limit = quorum_hub::config::RateLimit {
        max: 2,
        window: Duration::from_secs(60),
    };
    let hub = TestHub::start_with(config).await;
    let mut opener = hub.client_as("opener").await;
    opener.vote("opener", "opened-with-3", "x", 3).await;
    let mut voter = hub.client_as("thrifty").await;
    voter.vote("thrifty", "open-a", "x", 3).await;
    // Not recorded (already voted, total mismatch): no place taken.
    let again = voter.vote("thrifty", "open-a", "x", 3).await;
    assert_eq!(again["reason"], "already_voted", "{again}");
    let mismatch = voter
        .call(
            "system.quorum.vote",
            vote_params("thrifty", "opened-with-3", "x", Some(5)),
        )
        .await;
    assert_eq!(mismatch["error"]["code"], -32602, "{mismatch}");
    let window: u64 = redis.query(&["LLEN", "cb:ratelimit:{thrifty}:votes"]).await;
    assert_eq!(window, 1, "only the recorded vote holds a place");
    voter.vote("thrifty", "open-b", "x", 3).await;
    let refused = voter
        .call(
            "system.quorum.vote",
            vote_params("thrifty", "open-c", "x", Some(3)),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32000, "{refused}");
    let status = voter
        .call("system.quorum.status", json!({"decision": "open-c"}))
        .await;
    assert_eq!(
        status["error"]["code"], -32004,
        "a refused vote writes nothing"
    );
    // A retry of a recorded vote still learns so, limit or not.
    let retry = voter.vote("thrifty", "open-b", "x", 3).await;
    assert_eq!(retry["reason"], "already_voted", "{retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_are_broadcast_over_the_cluster_only_while_a_dashboard_listens() {
    let redis = RedisServer::start_cluster();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    let seeds = redis.cluster_seeds();
    common::dashboards::votes_are_published_only_while_a_dashboard_listens(&hub, &seeds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_events_follow_the_event_log_when_its_slot_moves() {
    let mut redis = RedisServer::start_cluster();
    let (hubs, mut watchers) = two_hubs_watched(&redis).await;
    let mut voter = hubs[0].client_as("mover").await;
    let mut decided = Vec::new();
    for n in 0..3 {
        decided.push(voter.decide("mover", &format!("before-move-{n}")).await);
    }
    let log = event_log(&redis);
    let cluster = redis.cluster();
    let from = cluster.primary_of(log);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|&port| port != from)
        .unwrap();
    tokio::task::block_in_place(|| cluster.move_slot_of(log, to));
    assert_eq!(cluster.primary_of(log), to);
    // The log's old node unsubscribed the hubs; they subscribe on the new one.
    for n in 0..3 {
        decided.push(voter.decide("mover", &format!("after-move-{n}")).await);
    }
    for (w, watcher) in watchers.iter_mut().enumerate() {
        for (n, event_id) in decided.iter().enumerate() {
            let event = watcher.next_notification().await;
            assert_eq!(
                &event["params"]["eventId"], event_id,
                "watcher {w}, event {n}"
            );
        }
        watcher.assert_no_more_notifications("after-move-0").await;
    }
    let entries: u64 = redis.query(&["XLEN", log]).await;
    assert_eq!(entries, 6, "the log moved whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_refuses_a_cluster_keyspace_written_with_another_layout() {
    let redis = RedisServer::start_cluster();
    let _: () = redis
        .query(&["SET", "cb:{events}:layout", "partitions=32"])
        .await;
    let mut hub = HubProcess::spawn(
        std::process::Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-url"])
            .arg(redis.url()),
    );
    let line = hub.wait_for_log("written with layout");
    assert!(line.contains("partitions=32"), "{line}");
    let status = common::eventually_blocking("the hub to stop", || hub.child.try_wait().unwrap());
    assert!(
        !status.success(),
        "a refused keyspace is a failed start: {status}"
    );
    let mark: String = redis.query(&["GET", "cb:{events}:layout"]).await;
    assert_eq!(
        mark, "partitions=32",
        "the other layout's mark is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_too_few_replicas_confirm_is_answered_so_and_a_retry_is_safe() {
    let mut redis = RedisServer::start_cluster();
    let mut config = without_rate_limits(&redis);
    config.wait_replicas = 1;
    config.vote_timeout = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    let mut voter = hub.client_as("careful").await;
    let confirmed = voter.vote("careful", "acked", "y", 3).await;
    assert_eq!(confirmed["voted"], true, "{confirmed}");
    // Registered while every replica confirms: registrations wait for replicas too.
    let mut second = hub.client_as("second").await;
    // The replica of the primary that holds the decision goes away: the cluster serves
    // on, but no replica can confirm a write there.
    let key = redis.decision_key("acked", "votes");
    let cluster = redis.cluster();
    let replica = cluster.replica_of(cluster.primary_of(&key));
    cluster.kill(replica);
    let params = vote_params("second", "acked", "n", Some(3));
    let reply = second.call("system.quorum.vote", params.clone()).await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert_eq!(reply["error"]["data"]["reason"], "replication", "{reply}");
    assert_eq!(reply["error"]["data"]["acknowledged"], 0);
    assert_eq!(reply["error"]["data"]["wanted"], 1);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("may or may not survive"), "{message}");
    // The vote is in the primary; a retry learns so (and is unconfirmed the same way).
    let status = second
        .result("system.quorum.status", json!({"decision": "acked"}))
        .await;
    assert_eq!(status["voteCount"], 2, "{status}");
    let retry = second.call("system.quorum.vote", params).await;
    assert_eq!(retry["error"]["data"]["reason"], "replication", "{retry}");
    let status = second
        .result("system.quorum.status", json!({"decision": "acked"}))
        .await;
    assert_eq!(status["voteCount"], 2, "a retry is not counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_under_load_fails_over_and_loses_only_what_replication_had_not_carried() {
    let audit = kill_a_primary_under_load(0).await;
    assert!(
        audit.lost.len() <= 2 * VOTERS,
        "lost {} decisions",
        audit.lost.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_replica_acknowledged_votes_a_primary_killed_under_load_loses_no_vote() {
    let audit = kill_a_primary_under_load(1).await;
    assert!(audit.lost.is_empty(), "lost {:?}", audit.lost);
}

/// Kills the primary holding the event log while voters decide continuously on two hubs,
/// checks that votes flow again, that no vote is counted twice and that every session
/// gets every decision that survived (in order; with `wait_replicas`, once and never
/// contradicted), and returns what the failover did to acknowledged votes.
async fn kill_a_primary_under_load(wait_replicas: u32) -> Audit {
    log_to_test_output();
    let mut redis = RedisServer::start_cluster();
    let (hubs, mut watchers) = failover::two_hubs_watched(|| {
        let mut config = without_rate_limits(&redis);
        config.wait_replicas = wait_replicas;
        config
    })
    .await;
    let voting = Voting::start(&hubs).await;
    voting
        .wait_for_more(DECISIONS_BEFORE_FAULT, "votes to flow")
        .await;
    // The primary holding the event log also holds a third of the decisions.
    let log = event_log(&redis);
    let victim = redis.cluster().primary_of(log);
    redis.cluster().kill(victim);
    let cluster = redis.cluster();
    eventually("a replica to take over", async || {
        cluster.serving(log).filter(|&port| port != victim)
    })
    .await;
    // The killed node comes back, as the new primary's replica: with `--wait-replicas`,
    // votes on its shard are acknowledged again only then.
    tokio::task::block_in_place(|| {
        cluster.restart(victim);
        cluster.wait_healthy();
    });
    // Votes flow again, on decisions in every partition, and both hubs are ready.
    voting
        .wait_for_more(DECISIONS_AFTER_FAULT, "votes to flow again")
        .await;
    let mut told = voting.stop().await;
    for hub in &hubs {
        common::wait_ready(hub.addr).await;
    }
    let mut fresh = hubs[1].client().await;
    // Until the breaker has seen Redis answer again, a call may be refused.
    eventually("a registration after the failover", async || {
        let reply = fresh
            .call("system.register", json!({"instanceId": "after"}))
            .await;
        reply.get("result").map(drop)
    })
    .await;
    for n in 0..64 {
        let decision = format!("after-{n}");
        let params = vote_params("after", &decision, "ok", Some(1));
        let reply = eventually("a vote after the failover", async || {
            let reply = fresh.call("system.quorum.vote", params.clone()).await;
            reply["result"]["finalDecision"]
                .is_string()
                .then_some(reply)
        })
        .await;
        assert_eq!(reply["result"]["finalDecision"], "ok", "{reply}");
        told.insert(decision, "ok".into());
    }
    drop(fresh);

    // Redis replication is asynchronous: a write the killed primary acknowledged in its
    // last moment, before its replica had it, is gone (votes that wait for replicas close
    // that window). Such a decision now has no votes at all; anything else the voters
    // were told must reach every session.
    let audit = audit(&hubs[0], &told).await;
    assert_eq!(audit.double_counted, 0, "a vote was counted twice");
    assert!(
        audit.lost.iter().all(|d| !d.starts_with("after-")),
        "lost after the failover: {:?}",
        audit.lost
    );
    let kept = event_ids(redis.query(&["XRANGE", log, "-", "+"]).await);
    let expected: Vec<&String> = told.keys().filter(|d| !audit.lost.contains(*d)).collect();
    check_watchers(&mut watchers, &told, &expected, &kept, wait_replicas > 0).await;
    for watcher in &mut watchers {
        watcher.assert_no_more_notifications("after-0").await;
    }
    audit
}
