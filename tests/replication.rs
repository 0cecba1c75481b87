//! Writes that wait for replicas (`--wait-replicas`) while a replica is away: a hub that
//! starts meanwhile still delivers the waiting event once it is published; hubs with and
//! without the setting on one Redis deliver every event, in order; a registration the
//! replicas did not confirm is still released when its session closes; and on a cluster a
//! decision whose own shard's replica is away is not logged (so not published) until that
//! replica confirms it.

mod common;

use std::time::Duration;

use common::redis_sentinel::RedisSentinel;
use common::{RedisServer, TestHub, WsClient, eventually, vote_params, without_rate_limits_at};
use quorum_hub::config::Config;
use serde_json::{Value, json};

/// A hub on the one Redis `primary` (with its replica), waiting for `wait_replicas`.
fn config(primary: u16, wait_replicas: u32) -> Config {
    let mut config = without_rate_limits_at(&format!("redis://127.0.0.1:{primary}"));
    config.wait_replicas = wait_replicas;
    // WAIT gives up after half of this: a vote the replica cannot confirm is answered soon.
    config.vote_timeout = Duration::from_secs(1);
    config
}

/// Votes `decision` alone (total 1) and expects -32005 reason replication.
async fn vote_unconfirmed(voter: &mut WsClient, instance: &str, decision: &str) {
    let reply = voter
        .call(
            "system.quorum.vote",
            vote_params(instance, decision, "y", Some(1)),
        )
        .await;
    assert_eq!(reply["error"]["data"]["reason"], "replication", "{reply}");
}

/// The decisions of the next `n` decision events a session gets.
async fn next_decisions(session: &mut WsClient, n: usize) -> Vec<Value> {
    let mut decisions = Vec::new();
    for _ in 0..n {
        let event = session.next_notification().await;
        assert_eq!(event["method"], "quorum.decision.made", "{event}");
        decisions.push(event["params"]["decision"].clone());
    }
    decisions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_while_an_event_waits_for_replicas_delivers_it_once_published() {
    a_hub_started_while_an_event_waits_delivers_it(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_replica_waits_started_while_an_event_waits_delivers_it_once_published() {
    a_hub_started_while_an_event_waits_delivers_it(0).await;
}

/// A hub waiting for one replica makes an event that waits for it; a second hub, waiting
/// for `second_waits` replicas, starts meanwhile and must deliver that event once it is
/// published, not take it as delivered before.
async fn a_hub_started_while_an_event_waits_delivers_it(second_waits: u32) {
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    let first = TestHub::start_with(config(primary, 1)).await;
    let mut voter = first.client_as("early").await;
    voter.vote("early", "before", "y", 1).await;
    redis.pause(replica);
    vote_unconfirmed(&mut voter, "early", "waiting").await;
    // A hub that starts now must not take the waiting event as already delivered.
    let second = TestHub::start_with(config(primary, second_waits)).await;
    let mut watcher = second.client().await;
    redis.resume(replica);
    assert_eq!(next_decisions(&mut watcher, 1).await, [json!("waiting")]);
    voter.vote("early", "after", "y", 1).await;
    assert_eq!(next_decisions(&mut watcher, 1).await, [json!("after")]);
    watcher.assert_no_more_notifications("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubs_with_and_without_replica_waits_on_one_redis_deliver_every_event_in_order() {
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    let careful = TestHub::start_with(config(primary, 1)).await;
    let hasty = TestHub::start_with(config(primary, 0)).await;
    let mut watchers = vec![careful.client().await, hasty.client().await];
    let mut careful_voter = careful.client_as("careful").await;
    let mut hasty_voter = hasty.client_as("hasty").await;
    redis.pause(replica);
    vote_unconfirmed(&mut careful_voter, "careful", "waiting").await;
    // The hub that does not wait publishes its own event at once, and the waiting one
    // before it, so that no hub skips the waiting one.
    let fast = hasty_voter.vote("hasty", "fast", "y", 1).await;
    assert_eq!(fast["finalDecision"], "y", "{fast}");
    for watcher in &mut watchers {
        assert_eq!(
            next_decisions(watcher, 2).await,
            [json!("waiting"), json!("fast")]
        );
    }
    redis.resume(replica);
    // Once the replica confirms, the careful hub's publisher finds nothing left to send.
    careful_voter.vote("careful", "later", "y", 1).await;
    for watcher in &mut watchers {
        assert_eq!(next_decisions(watcher, 1).await, [json!("later")]);
        watcher.assert_no_more_notifications("later").await;
    }
}

/// More events than one publishing run of `publish_pending.lua` takes (500).
const MORE_THAN_A_BATCH: usize = 520;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_without_replica_waits_publishes_its_own_event_behind_any_number_waiting() {
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    // WAIT gives up after 50 ms: many events can be made to wait in a few seconds.
    let mut careful_config = config(primary, 1);
    careful_config.vote_timeout = Duration::from_millis(100);
    // Votes that outlast so short a timeout on a busy machine must not open the breaker.
    careful_config.breaker_failures = u32::MAX;
    let careful = TestHub::start_with(careful_config).await;
    let hasty = TestHub::start_with(config(primary, 0)).await;
    let mut watcher = hasty.client().await;
    let primary_url = format!("redis://127.0.0.1:{primary}");
    let log_key = quorum_hub::event_log_key(&primary_url);
    let mut voters = Vec::new();
    for n in 0..8 {
        voters.push(careful.client_as(&format!("careful-{n}")).await);
    }
    let mut hasty_voter = hasty.client_as("hasty").await;
    // Eight voters on the careful hub, each deciding decisions alone; no replica confirms.
    // A vote that times out while it waits for its batch is never run, so the voters go on
    // in rounds until more events wait than one publishing run takes.
    redis.pause(replica);
    let mut link = redis::Client::open(primary_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut round = 0;
    let waiting = loop {
        let waiting = waiting_decisions(&mut link, log_key).await;
        if waiting.len() > MORE_THAN_A_BATCH {
            break waiting;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} events wait after {round} rounds",
            waiting.len()
        );
        let votes = voters.iter_mut().enumerate().map(|(n, voter)| async move {
            let params = vote_params(
                &format!("careful-{n}"),
                &format!("w-{round}-{n}"),
                "y",
                Some(1),
            );
            // Answered `replication` (or, on a busy machine, `timeout`): either way the
            // vote is not confirmed; the log says which decisions wait.
            let reply = voter.call("system.quorum.vote", params).await;
            assert!(
                reply.get("error").is_some(),
                "confirmed without a replica: {reply}"
            );
        });
        futures::future::join_all(votes).await;
        round += 1;
    };
    // The hub that does not wait publishes every waiting event, then its own, at once.
    let fast = hasty_voter.vote("hasty", "fast", "y", 1).await;
    assert_eq!(fast["finalDecision"], "y", "{fast}");
    assert_eq!(next_decisions(&mut watcher, waiting.len()).await, waiting);
    assert_eq!(next_decisions(&mut watcher, 1).await, [json!("fast")]);
    watcher.assert_no_more_notifications("fast").await;
    redis.resume(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_replicas_did_not_confirm_is_released_when_its_session_closes() {
    let mut redis = RedisSentinel::start();
    let [primary, replica] = redis.data_ports();
    let hub = TestHub::start_with(config(primary, 1)).await;
    redis.pause(replica);
    let mut session = hub.client().await;
    let reply = session
        .call("system.register", json!({"instanceId": "unsure"}))
        .await;
    assert_eq!(reply["error"]["data"]["reason"], "replication", "{reply}");
    // The registration is in the primary and held by this session, which may vote as it.
    let status = session
        .call(
            "system.quorum.vote",
            vote_params("unsure", "held", "y", Some(2)),
        )
        .await;
    assert_eq!(status["error"]["data"]["reason"], "replication", "{status}");
    session.close().await;
    redis.resume(replica);
    // Its close released the binding: the instance registers again at once.
    let mut again = hub.client().await;
    let reply = eventually("the instance to be free again", async || {
        let reply = again
            .call("system.register", json!({"instanceId": "unsure"}))
            .await;
        reply.get("result").cloned()
    })
    .await;
    assert_eq!(reply["registered"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_decision_is_logged_only_once_its_own_shard_confirms_it() {
    let mut redis = RedisServer::start_cluster();
    let mut config = without_rate_limits_at(&redis.url());
    config.wait_replicas = 1;
    config.vote_timeout = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    let mut watcher = hub.client().await;
    let mut voter = hub.client_as("voter").await;
    // The decision's shard loses its replica; the event log's shard keeps its own.
    let log_key = quorum_hub::event_log_key(&redis.url());
    let url = redis.url();
    let cluster = redis.cluster();
    let log_primary = cluster.primary_of(log_key);
    let decision = (0..)
        .map(|n| format!("unsure-{n}"))
        .find(|d| cluster.primary_of(&quorum_hub::decision_key(&url, d, "votes")) != log_primary)
        .unwrap();
    let votes = redis.decision_key(&decision, "votes");
    let tag = &votes[votes.find('{').unwrap()..=votes.find('}').unwrap()];
    let mark = format!("cb:acked:{tag}");
    let cluster = redis.cluster();
    let replica = cluster.replica_of(cluster.primary_of(&votes));
    cluster.kill(replica);
    vote_unconfirmed(&mut voter, "voter", &decision).await;
    // The sweep finds the decision unlogged and asks its shard's replicas first (writing
    // the mark); none can confirm, so it is not logged, and no session hears of it.
    eventually("the sweep to ask the decision's shard", async || {
        let exists: bool = redis.query(&["EXISTS", &mark]).await;
        exists.then_some(())
    })
    .await;
    let status = voter
        .result("system.quorum.status", json!({ "decision": decision }))
        .await;
    assert_eq!(status["finalDecision"], "y", "{status}");
    let log: Vec<(String, Vec<(String, String)>)> = redis
        .query(&["XRANGE", quorum_hub::event_log_key(&redis.url()), "-", "+"])
        .await;
    assert!(
        log.iter()
            .all(|(_, fields)| !fields.contains(&("decision".into(), decision.clone()))),
        "logged before its shard confirmed it: {log:?}"
    );
    watcher.assert_no_more_notifications(&decision).await;
    // The replica is back: the sweep logs the decision and every session gets it.
    tokio::task::block_in_place(|| {
        let cluster = redis.cluster();
        cluster.restart(replica);
        cluster.wait_healthy();
    });
    assert_eq!(next_decisions(&mut watcher, 1).await, [json!(decision)]);
    watcher.assert_no_more_notifications(&decision).await;
}

/// The decisions whose events are in the event log at `log_key`, oldest first.
async fn waiting_decisions(
    link: &mut redis::aio::MultiplexedConnection,
    log_key: &str,
) -> Vec<Value> {
    let logged: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(log_key)
        .arg("-")
        .arg("+")
        .query_async(link)
        .await
        .unwrap();
    logged
        .iter()
        .filter_map(|(_, fields)| {
            let (_, decision) = fields.iter().find(|(name, _)| name == "decision")?;
            Some(json!(decision))
        })
        .collect()
}
