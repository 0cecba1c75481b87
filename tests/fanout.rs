//! Fan-out of `quorum.decision.made` across hubs and sessions, and the concurrent-vote race.

mod common;

use common::{RedisServer, Rng, TestHub, WsClient, expected_winner};
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_on_every_hub_gets_each_decision_exactly_once() {
    let redis = RedisServer::start();
    let hubs = [TestHub::start(&redis).await, TestHub::start(&redis).await];
    // On each hub: two registered voters and two sessions that never register.
    let mut voters: Vec<(String, WsClient)> = Vec::new();
    let mut watchers: Vec<WsClient> = Vec::new();
    for (h, hub) in hubs.iter().enumerate() {
        for i in 0..2 {
            let id = format!("hub{h}-voter{i}");
            voters.push((id.clone(), hub.client_as(&id).await));
            watchers.push(hub.client().await);
        }
    }
    let decisions = ["deploy", "rollback", "leader"];
    for (n, decision) in decisions.iter().enumerate() {
        // Voters alternate hubs; totalInstances 4 means the third vote decides.
        for (id, client) in voters.iter_mut().take(3) {
            client.vote(id, decision, &format!("v{n}"), 4).await;
        }
    }
    let mut payloads: Vec<Vec<Value>> = Vec::new();
    let sessions = voters.iter_mut().map(|(_, c)| c).chain(watchers.iter_mut());
    for client in sessions {
        let mut got = Vec::new();
        for _ in &decisions {
            got.push(client.next_notification().await);
        }
        client.assert_no_more_notifications("deploy").await;
        payloads.push(got);
    }
    assert_eq!(payloads.len(), 8);
    for got in &payloads {
        assert_eq!(got, &payloads[0], "sessions saw different events");
    }
    for (n, event) in payloads[0].iter().enumerate() {
        assert_eq!(event["jsonrpc"], "2.0");
        assert_eq!(event["method"], "quorum.decision.made");
        assert!(event.get("id").is_none());
        let p = &event["params"];
        assert_eq!(p["decision"], decisions[n]);
        assert_eq!(p["value"], format!("v{n}"));
        assert_eq!(
            (
                p["voteCount"].clone(),
                p["quorum"].clone(),
                p["totalInstances"].clone()
            ),
            (json!(3), json!(3), json!(4))
        );
        assert!(p["eventId"].as_str().unwrap().contains('-'));
        assert!(p["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "decision",
                "value",
                "voteCount",
                "quorum",
                "totalInstances",
                "eventId",
                "timestamp"
            ]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_instances_racing_on_two_hubs_decide_exactly_once() {
    const INSTANCES: usize = 64;
    const ROUNDS: usize = 12;
    let redis = RedisServer::start();
    let hubs = [TestHub::start(&redis).await, TestHub::start(&redis).await];
    let mut clients = Vec::new();
    for i in 0..INSTANCES {
        let id = format!("racer-{i}");
        clients.push((id.clone(), hubs[i % 2].client_as(&id).await));
    }
    let mut rng = Rng::new(0x5eed_2026);
    for round in 0..ROUNDS {
        let decision = format!("race-{round}");
        let values: Vec<String> = (0..INSTANCES)
            .map(|_| ["A", "B", "C"][rng.below(3) as usize].to_owned())
            .collect();
        let replies = join_all(
            clients
                .iter_mut()
                .zip(&values)
                .map(|((id, client), value)| client.vote(id, &decision, value, INSTANCES as u64)),
        )
        .await;

        let recorded = replies.iter().filter(|r| r["voted"] == true).count();
        let deciding: Vec<&Value> = replies
            .iter()
            .filter(|r| r["voted"] == true && r["quorumReached"] == true)
            .collect();
        let late = replies.iter().filter(|r| r["reason"] == "decided").count();
        assert_eq!(
            recorded, 33,
            "round {round}: exactly the quorum is recorded"
        );
        assert_eq!(deciding.len(), 1, "round {round}: exactly one vote decides");
        assert_eq!(late, INSTANCES - 33, "round {round}");

        // Read the vote order back from Redis and apply rule 5 to it.
        let votes = redis.decision_key(&decision, "votes");
        let order: Vec<String> = redis.query(&["ZRANGE", &votes, "0", "-1"]).await;
        assert_eq!(order.len(), 33);
        let ordered_values: Vec<String> = order
            .iter()
            .map(|id| values[id.trim_start_matches("racer-").parse::<usize>().unwrap()].clone())
            .collect();
        let winner = expected_winner(&ordered_values);
        let result = redis.decision_key(&decision, "result");
        let stored: String = redis.query(&["HGET", &result, "value"]).await;
        assert_eq!(stored, winner, "round {round}: order {ordered_values:?}");
        assert_eq!(deciding[0]["finalDecision"], winner.as_str());
        for reply in replies.iter().filter(|r| r["quorumReached"] == true) {
            assert_eq!(reply["finalDecision"], winner.as_str());
        }

        // Every session gets exactly one event for this decision.
        for (_, client) in clients.iter_mut() {
            let event = client.next_notification().await;
            assert_eq!(event["params"]["decision"], decision.as_str());
            assert_eq!(event["params"]["value"], winner.as_str());
        }
    }
    for (_, client) in clients.iter_mut() {
        client.assert_no_more_notifications("race-0").await;
    }
    let stream = quorum_hub::event_log_key(&redis.url());
    let events: u64 = redis.query(&["XLEN", stream]).await;
    assert_eq!(events, ROUNDS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_on_any_hub_see_votes_and_instances_they_subscribed_to() {
    let redis = RedisServer::start();
    let hubs = [TestHub::start(&redis).await, TestHub::start(&redis).await];
    let mut dashboard = hubs[1].client().await;
    let reply = dashboard
        .result(
            "system.subscribe",
            json!({"events": ["quorum.vote.recorded", "instance.*"]}),
        )
        .await;
    assert_eq!(
        reply["subscribed"],
        json!(["quorum.vote.recorded", "instance.*"])
    );
    let mut plain = hubs[1].client().await;

    let mut agent = hubs[0].client().await;
    agent
        .result(
            "system.register",
            json!({"instanceId": "agent-x", "roles": ["voter"]}),
        )
        .await;
    agent.vote("agent-x", "dash", "yes", 1).await;
    agent.close().await;

    let expected = [
        (
            "instance.registered",
            json!({"instanceId": "agent-x", "roles": ["voter"], "status": "online"}),
        ),
        (
            "quorum.vote.recorded",
            json!({"decision": "dash", "instanceId": "agent-x", "value": "yes", "voteCount": 1, "quorum": 1, "totalInstances": 1}),
        ),
        (
            "quorum.decision.made",
            json!({"decision": "dash", "value": "yes"}),
        ),
        (
            "instance.unregistered",
            json!({"instanceId": "agent-x", "reason": "disconnected"}),
        ),
    ];
    let mut got = Vec::new();
    for _ in &expected {
        got.push(dashboard.next_notification().await);
    }
    // On one Redis the dashboard events come through one subscription and one task, in
    // order; the decision never waits behind them, so where it falls among them is not
    // promised. On a cluster the decision comes from the event log's shard and the others
    // are broadcast from the shard that wrote them, so only each event's arrival, once, is.
    if !redis.is_cluster() {
        let order: Vec<&Value> = got
            .iter()
            .map(|event| &event["method"])
            .filter(|method| *method != "quorum.decision.made")
            .collect();
        let methods: Vec<&str> = expected
            .iter()
            .map(|(method, _)| *method)
            .filter(|method| *method != "quorum.decision.made")
            .collect();
        assert_eq!(order, methods);
    }
    for (method, fields) in expected {
        let matching: Vec<&Value> = got.iter().filter(|e| e["method"] == method).collect();
        assert_eq!(matching.len(), 1, "{method} once: {got:?}");
        for (key, value) in fields.as_object().unwrap() {
            assert_eq!(&matching[0]["params"][key], value, "{method}.{key}");
        }
    }
    // A session that did not subscribe gets decisions only.
    assert_eq!(
        plain.next_notification().await["method"],
        "quorum.decision.made"
    );
    plain.assert_no_more_notifications("dash").await;

    let reply = dashboard
        .result("system.unsubscribe", json!({"events": ["instance.*"]}))
        .await;
    assert_eq!(reply["subscribed"], json!(["quorum.vote.recorded"]));
    let error = dashboard
        .error("system.subscribe", json!({"events": ["nothing.*"]}))
        .await;
    assert_eq!(error["data"]["field"], "events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_redis_votes_are_published_only_while_a_dashboard_listens() {
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    common::dashboards::votes_are_published_only_while_a_dashboard_listens(&hub, &[redis.url()])
        .await;
}

/// Above a thousand sessions a hub splits each event's writes across its cores and writes
/// straight into sockets with room: every session must still get every event once, in
/// the order of the log, with decisions made back to back so that deliveries follow each
/// other closely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fan_out_reaches_every_session_once_and_in_order() {
    const SESSIONS: usize = 1_500;
    const DECISIONS: usize = 6;
    let redis = RedisServer::start();
    let hub = TestHub::start_with(common::without_rate_limits(&redis)).await;
    let mut listeners = Vec::with_capacity(SESSIONS);
    while listeners.len() < SESSIONS {
        let batch = (SESSIONS - listeners.len()).min(100);
        listeners.extend(join_all((0..batch).map(|_| hub.client())).await);
    }
    // Every listener is known to the hub once one call on it is answered.
    for listener in &mut listeners {
        listener.result("system.unsubscribe", json!({})).await;
    }
    let mut voter = hub.client_as("big-voter").await;
    // Sent without waiting for each reply, so the events follow each other closely.
    for n in 0..DECISIONS {
        let params = json!({"instanceId": "big-voter", "decision": format!("big-{n}"),
            "value": "go", "totalInstances": 1});
        voter
            .send_text(&common::request(n + 100, "system.quorum.vote", params).to_string())
            .await;
    }
    let mut replies = 0;
    while replies < DECISIONS {
        let reply = voter.recv_reply().await;
        assert_eq!(reply["result"]["quorumReached"], true, "{reply}");
        replies += 1;
    }
    let expected: Vec<String> = (0..DECISIONS).map(|n| format!("big-{n}")).collect();
    for (i, listener) in listeners.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..DECISIONS {
            let event = listener.next_notification().await;
            assert_eq!(
                event["method"], "quorum.decision.made",
                "session {i}: {event}"
            );
            got.push(event["params"]["decision"].as_str().unwrap().to_owned());
            ids.push(event["params"]["eventId"].as_str().unwrap().to_owned());
        }
        assert_eq!(got, expected, "session {i} got the decisions out of order");
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| {
            let (ms, seq) = id.split_once('-').unwrap();
            (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
        });
        sorted.dedup();
        assert_eq!(ids, sorted, "session {i}: event ids not increasing");
        listener.assert_no_more_notifications("big-0").await;
    }
}
