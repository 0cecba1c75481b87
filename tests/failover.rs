//! Failover of one Redis primary: Redis Sentinel (a primary, one replica, three
//! sentinels) and one Redis with a replica. The hub follows the primary the sentinels
//! name without a restart; with `--wait-replicas 1` a vote is answered, and its decision
//! published, only once the replica has it, so a kill -9 of the primary loses no
//! acknowledged vote; without it, a lagging replica that is promoted loses what the
//! primary acknowledged alone, and a client resuming from a lost event is told so. With
//! it, the same lagging replica loses nothing acknowledged: the primary alone answers
//! those votes unconfirmed, and publishes none of their decisions.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::failover::{
    DECISIONS_AFTER_FAULT, DECISIONS_BEFORE_FAULT, Voting, audit, check_watchers, event_ids,
    log_to_test_output, two_hubs_watched,
};
use common::redis_sentinel::{MASTER_NAME, RedisSentinel};
use common::{TestHub, WsClient, eventually, metrics_show, vote_params, without_rate_limits_at};
use serde_json::json;

/// The ids of the event log's entries on the node on `port`.
async fn event_ids_on(port: u16) -> HashSet<String> {
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg(quorum_hub::event_log_key(&url))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    event_ids(reply)
}

/// A Sentinel deployment, two hubs on it with `--wait-replicas 1` and two sessions watching
/// each, and agents voting through them until the first decisions are made.
async fn voting_on_sentinel() -> (RedisSentinel, [TestHub; 2], Vec<WsClient>, Voting) {
    log_to_test_output();
    let redis = RedisSentinel::start();
    let url = redis.url();
    let (hubs, watchers) = two_hubs_watched(|| {
        let mut config = without_rate_limits_at(&url);
        config.wait_replicas = 1;
        config
    })
    .await;
    let voting = Voting::start(&hubs).await;
    voting
        .wait_for_more(DECISIONS_BEFORE_FAULT, "votes to flow")
        .await;
    (redis, hubs, watchers, voting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_replica_acknowledged_votes_a_sentinel_failover_loses_no_vote() {
    let (mut redis, hubs, mut watchers, voting) = voting_on_sentinel().await;
    let old = redis.primary();
    let killed = std::time::Instant::now();
    redis.kill(old);
    let promoted = tokio::task::block_in_place(|| redis.wait_promoted(old));
    eprintln!(
        "the sentinels promoted a replica {:?} after the kill",
        killed.elapsed()
    );
    // The old primary comes back as the new one's replica (as the sentinels would make
    // it within about ten seconds): votes that wait for a replica are acknowledged again
    // from then on.
    tokio::task::block_in_place(|| redis.restart(old));
    let reply = redis.cli(old, &["REPLICAOF", "127.0.0.1", &promoted.to_string()]);
    assert!(reply.starts_with("OK"), "{reply}");
    tokio::task::block_in_place(|| redis.wait_replicating(promoted, old));
    let replicating = killed.elapsed();
    // The hubs follow the new primary by themselves.
    voting.wait_for_more(1, "votes to flow again").await;
    eprintln!(
        "votes acknowledged again {:?} after the kill (the old primary replicated the new one {replicating:?} after it)",
        killed.elapsed(),
    );
    voting
        .wait_for_more(DECISIONS_AFTER_FAULT, "votes to flow on")
        .await;
    let told = voting.stop().await;
    for hub in &hubs {
        common::wait_ready(hub.addr).await;
    }
    let audit = audit(&hubs[0], &told).await;
    assert!(audit.lost.is_empty(), "lost {:?}", audit.lost);
    assert_eq!(audit.double_counted, 0, "a vote was counted twice");
    let kept = event_ids_on(promoted).await;
    let expected: Vec<&String> = told.keys().collect();
    check_watchers(&mut watchers, &told, &expected, &kept, true).await;
    for watcher in &mut watchers {
        watcher.assert_no_more_notifications("load-agent0-0").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_that_turns_the_primary_into_a_replica_is_followed_and_loses_no_vote() {
    let (redis, hubs, mut watchers, voting) = voting_on_sentinel().await;
    // The sentinels hand the primary role over: the old primary stays up, as a replica
    // that answers writes with READONLY.
    let old = redis.primary();
    let sentinel = redis.sentinel_ports()[0];
    let reply = redis.cli(sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME]);
    assert!(reply.starts_with("OK"), "{reply}");
    let promoted = tokio::task::block_in_place(|| redis.wait_promoted(old));
    tokio::task::block_in_place(|| redis.wait_replicating(promoted, old));
    voting
        .wait_for_more(DECISIONS_AFTER_FAULT, "votes to flow on the new primary")
        .await;
    let told = voting.stop().await;
    let audit = audit(&hubs[0], &told).await;
    assert!(audit.lost.is_empty(), "lost {:?}", audit.lost);
    assert_eq!(audit.double_counted, 0, "a vote was counted twice");
    let kept = event_ids_on(promoted).await;
    let expected: Vec<&String> = told.keys().collect();
    check_watchers(&mut watchers, &told, &expected, &kept, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_is_published_only_once_its_write_is_on_the_replica() {
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    // One Redis and its replica, named directly: `--wait-replicas` needs no sentinels.
    let mut config = without_rate_limits_at(&format!("redis://127.0.0.1:{primary}"));
    config.wait_replicas = 1;
    config.vote_timeout = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    let mut watcher = hub.client().await;
    let mut voter = hub.client_as("careful").await;
    let confirmed = voter.vote("careful", "confirmed", "y", 1).await;
    assert_eq!(confirmed["finalDecision"], "y", "{confirmed}");
    let event = watcher.next_notification().await;
    assert_eq!(event["params"]["decision"], "confirmed", "{event}");
    let confirmed_id = event["params"]["eventId"].as_str().unwrap().to_owned();

    // The replica stops answering: a write can no longer be confirmed.
    redis.pause(replica);
    let params = vote_params("careful", "unconfirmed", "y", Some(1));
    let reply = voter.call("system.quorum.vote", params.clone()).await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert_eq!(reply["error"]["data"]["reason"], "replication", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("may or may not survive"), "{message}");
    // The decision is in the primary, but no session hears of it while it may still be
    // lost: its event waits for the replica.
    let status = voter
        .result("system.quorum.status", json!({"decision": "unconfirmed"}))
        .await;
    assert_eq!(status["finalDecision"], "y", "{status}");
    watcher.assert_no_more_notifications("unconfirmed").await;
    // Nor does the hub's gap read from the log when its subscription comes back.
    redis.cli(primary, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    eventually("the hub to subscribe again", async || {
        metrics_show(hub.addr, "quorum_redis_resubscribes_total 1")
            .await
            .then_some(())
    })
    .await;
    common::wait_ready(hub.addr).await;
    watcher.assert_no_more_notifications("unconfirmed").await;
    // Nor a client resuming from before it.
    let mut resumed =
        WsClient::connect(&format!("{}?lastEventId={confirmed_id}", hub.ws_url())).await;
    resumed.assert_no_more_notifications("unconfirmed").await;

    // The replica is back: the hub's publisher sends the event, once.
    redis.resume(replica);
    for session in [&mut watcher, &mut resumed] {
        let event = session.next_notification().await;
        assert_eq!(event["method"], "quorum.decision.made", "{event}");
        assert_eq!(event["params"]["decision"], "unconfirmed", "{event}");
    }
    resumed.assert_no_more_notifications("unconfirmed").await;
    // A retry learns what the first call did, confirmed now, and is not counted again.
    let retry = voter.result("system.quorum.vote", params).await;
    assert_eq!(retry["reason"], "already_voted", "{retry}");
    assert_eq!(retry["voteCount"], 1, "{retry}");
    watcher.assert_no_more_notifications("unconfirmed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_promoted_loses_what_the_primary_acknowledged_alone_and_says_so() {
    lagging_replica_promoted(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_promoted_loses_no_acknowledged_vote_with_replica_acknowledged_votes() {
    lagging_replica_promoted(1).await;
}

/// Decides `before` and waits until the replica has it; then, with the replica paused and
/// cut off, votes on `lost-1` and `lost-2` on the primary alone; kills the primary, lets
/// the replica be promoted and decides `after`. Without `--wait-replicas` the primary
/// acknowledges those votes and publishes their decisions, the promoted replica has
/// neither, and sessions are told their history no longer holds. With it, none of those
/// votes is acknowledged nor any of their decisions published: nothing acknowledged is
/// lost, and no session is told anything it must take back.
async fn lagging_replica_promoted(wait_replicas: u32) {
    log_to_test_output();
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    let mut config = without_rate_limits_at(&redis.url());
    if wait_replicas > 0 {
        config.wait_replicas = wait_replicas;
        // `WAIT` gives up after half of it: a vote the replica cannot confirm is answered
        // unconfirmed quickly.
        config.vote_timeout = Duration::from_secs(1);
    }
    let hub = TestHub::start_with(config).await;
    let mut watcher = hub.client().await;
    let mut voters = Vec::new();
    // Two voters of two: both votes are needed, and both count.
    for v in 0..2 {
        voters.push(hub.client_as(&format!("lag{v}")).await);
    }
    let before = decide(&mut voters, &mut watcher, "before").await;
    assert_eq!(before.acknowledged, voters.len());
    let kept_id = before.event_id.expect("`before` was published");
    eventually("the replica to have the first decision", async || {
        event_ids_on(replica).await.contains(&kept_id).then_some(())
    })
    .await;

    // The replica stops, and its link is dropped: what follows is on the primary alone.
    redis.pause(replica);
    redis.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    let alone = [
        decide(&mut voters, &mut watcher, "lost-1").await,
        decide(&mut voters, &mut watcher, "lost-2").await,
    ];
    let attempted = alone.len() * voters.len();
    let acknowledged_alone: usize = alone.iter().map(|d| d.acknowledged).sum();
    redis.kill(primary);
    redis.resume(replica);
    let promoted = tokio::task::block_in_place(|| redis.wait_promoted(primary));
    assert_eq!(promoted, replica);
    if wait_replicas > 0 {
        // A vote is acknowledged only once a replica has it: the killed primary comes back
        // as the new one's replica (as the sentinels would make it about ten seconds on).
        tokio::task::block_in_place(|| redis.restart(primary));
        let reply = redis.cli(primary, &["REPLICAOF", "127.0.0.1", &promoted.to_string()]);
        assert!(reply.starts_with("OK"), "{reply}");
        tokio::task::block_in_place(|| redis.wait_replicating(promoted, primary));
    }

    // The hub follows the promoted replica, and decisions flow again.
    let after = eventually("a decision after the failover", async || {
        let mut ok = true;
        for (v, voter) in voters.iter_mut().enumerate() {
            let params = vote_params(&format!("lag{v}"), "after", "yes", Some(2));
            let reply = voter.call("system.quorum.vote", params).await;
            ok &= reply.get("result").is_some();
        }
        let status = voters[0]
            .call("system.quorum.status", json!({"decision": "after"}))
            .await;
        (ok && status["result"]["finalDecision"] == "yes").then(|| status["result"].clone())
    })
    .await;
    assert_eq!(after["voteCount"], 2, "{after}");

    // What the primary alone had is gone, and with it what it acknowledged.
    let mut lost_acknowledged = 0;
    for (decision, decided) in ["lost-1", "lost-2"].into_iter().zip(&alone) {
        let status = voters[0]
            .call("system.quorum.status", json!({ "decision": decision }))
            .await;
        assert_eq!(status["error"]["code"], -32004, "{decision}: {status}");
        lost_acknowledged += decided.acknowledged;
    }
    let mode = if wait_replicas > 0 {
        format!("with --wait-replicas {wait_replicas}")
    } else {
        "without --wait-replicas".to_owned()
    };
    eprintln!(
        "{mode}: {lost_acknowledged} of {acknowledged_alone} votes the primary acknowledged alone were lost with it ({} of {attempted} votes were answered unconfirmed instead)",
        attempted - acknowledged_alone
    );

    if wait_replicas > 0 {
        // Nothing was acknowledged, so nothing acknowledged is lost; nothing was published,
        // so no session saw what is gone, and none is told its history no longer holds.
        assert_eq!(acknowledged_alone, 0);
        assert_eq!(lost_acknowledged, 0);
        let event = watcher.next_notification().await;
        assert_eq!(event["method"], "quorum.decision.made", "{event}");
        assert_eq!(event["params"]["decision"], "after", "{event}");
        watcher.assert_no_more_notifications("after").await;
        // A client resuming from the last event it saw gets what follows it, no notice.
        let mut resumed =
            WsClient::connect(&format!("{}?lastEventId={kept_id}", hub.ws_url())).await;
        let event = resumed.next_notification().await;
        assert_eq!(event["method"], "quorum.decision.made", "{event}");
        assert_eq!(event["params"]["decision"], "after", "{event}");
        resumed.assert_no_more_notifications("after").await;
        return;
    }
    assert_eq!(acknowledged_alone, attempted);
    assert_eq!(lost_acknowledged, acknowledged_alone);
    let lost_ids: Vec<String> = alone
        .into_iter()
        .map(|d| {
            d.event_id
                .expect("a decision the primary acknowledged was published")
        })
        .collect();

    // The watcher that saw the lost decisions is told its history no longer holds, then
    // gets the new decision.
    let notice = watcher.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["reason"], "rewound", "{notice}");
    assert_eq!(notice["params"]["since"], kept_id.as_str(), "{notice}");
    let event = watcher.next_notification().await;
    assert_eq!(event["params"]["decision"], "after", "{event}");
    let after_id = event["params"]["eventId"].clone();
    watcher.assert_no_more_notifications("after").await;

    // A client resuming from a lost event is told so, then gets what follows it.
    let mut resumed =
        WsClient::connect(&format!("{}?lastEventId={}", hub.ws_url(), lost_ids[0])).await;
    let notice = resumed.next_notification().await;
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    assert_eq!(notice["params"]["reason"], "unknown", "{notice}");
    assert_eq!(notice["params"]["since"], lost_ids[0].as_str(), "{notice}");
    assert_eq!(notice["params"]["oldest"], kept_id.as_str(), "{notice}");
    assert_eq!(notice["params"]["newest"], after_id, "{notice}");
    let event = resumed.next_notification().await;
    assert_eq!(event["params"]["decision"], "after", "{event}");
    resumed.assert_no_more_notifications("after").await;
}

/// What the votes of every voter on one decision got.
struct Decided {
    /// Votes answered as counted; the others were answered -32005, reason `replication`
    /// (written on the primary, but no replica confirmed them).
    acknowledged: usize,
    /// The decision's event id as the watcher got it: once every vote was acknowledged.
    event_id: Option<String>,
}

/// Votes `yes` on `decision` with every voter (`lag<v>`, two needed of two). When every
/// vote is acknowledged, the decision is made and published: waits for the watcher to
/// get it. Otherwise its event waits for a replica, and nothing is waited for.
async fn decide(voters: &mut [WsClient], watcher: &mut WsClient, decision: &str) -> Decided {
    let mut acknowledged = 0;
    for (v, voter) in voters.iter_mut().enumerate() {
        let params = vote_params(&format!("lag{v}"), decision, "yes", Some(2));
        let reply = voter.call("system.quorum.vote", params).await;
        if reply.get("result").is_some() {
            assert_eq!(reply["result"]["voted"], true, "{reply}");
            acknowledged += 1;
        } else {
            assert_eq!(reply["error"]["code"], -32005, "{reply}");
            assert_eq!(reply["error"]["data"]["reason"], "replication", "{reply}");
        }
    }
    let event_id = if acknowledged == voters.len() {
        let event = watcher.next_notification().await;
        assert_eq!(event["params"]["decision"], decision, "{event}");
        Some(event["params"]["eventId"].as_str().unwrap().to_owned())
    } else {
        None
    };
    Decided {
        acknowledged,
        event_id,
    }
}
