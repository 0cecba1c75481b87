//! The vote rules of `system.quorum.vote`, each checked against a real Redis and hub.

mod common;

use common::{
    RedisServer, TestHub, WsClient, assert_error, eventually, expected_winner, request, rpc,
    rpc_call, tallied, vote_params,
};
use serde_json::{Value, json};

/// Opens `n` sessions, each registered as `{prefix}-{i}`.
async fn voters(hub: &TestHub, prefix: &str, n: usize) -> Vec<(String, WsClient)> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        out.push((id.clone(), hub.client_as(&id).await));
    }
    out
}

/// Casts `values` in order, one per instance, on a decision expecting `total` instances,
/// and returns the reply of each vote.
async fn cast(hub: &TestHub, decision: &str, total: u64, values: &[&str]) -> Vec<Value> {
    let mut replies = Vec::new();
    for (i, (id, mut client)) in voters(hub, decision, values.len())
        .await
        .into_iter()
        .enumerate()
    {
        replies.push(client.vote(&id, decision, values[i], total).await);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_table_for_one_to_seven_instances() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut observer = hub.client().await;
    let table = [(1u64, 1u64), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
    for (total, quorum) in table {
        let decision = format!("table-{total}");
        let mut sessions = voters(&hub, &decision, quorum as usize).await;
        for (i, (id, client)) in sessions.iter_mut().enumerate() {
            let reply = client.vote(id, &decision, "yes", total).await;
            let count = i as u64 + 1;
            assert_eq!(reply["voted"], true, "{reply}");
            assert_eq!(reply["voteCount"], count, "{reply}");
            if count < quorum {
                assert_eq!(
                    reply["quorumReached"], false,
                    "N={total}, vote {count}: {reply}"
                );
                assert!(reply.get("finalDecision").is_none(), "{reply}");
                observer.assert_no_more_notifications(&decision).await;
            } else {
                assert_eq!(
                    reply["quorumReached"], true,
                    "N={total} at quorum {quorum}: {reply}"
                );
                assert_eq!(reply["finalDecision"], "yes");
            }
        }
        let event = observer.next_notification().await;
        assert_eq!(event["params"]["decision"], decision.as_str());
        assert_eq!(event["params"]["voteCount"], quorum);
        assert_eq!(event["params"]["quorum"], quorum);
        assert_eq!(event["params"]["totalInstances"], total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winner_is_the_most_voted_value_and_ties_go_to_the_first_to_reach_the_count() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let cases: [(u64, &[&str], &str); 6] = [
        (4, &["A", "B", "C"], "A"),
        (5, &["A", "B", "B"], "B"),
        (6, &["A", "B", "B", "A"], "B"),
        (7, &["A", "B", "A", "B"], "A"),
        (3, &["B", "A"], "B"),
        (9, &["C", "A", "A", "C", "B"], "A"),
    ];
    for (n, (total, values, winner)) in cases.into_iter().enumerate() {
        let decision = format!("tie-{n}");
        assert_eq!(
            expected_winner(values),
            winner,
            "the oracle disagrees: {values:?}"
        );
        let replies = cast(&hub, &decision, total, values).await;
        let last = replies.last().unwrap();
        assert_eq!(last["quorumReached"], true, "{decision}: {last}");
        assert_eq!(last["finalDecision"], winner, "N={total} votes {values:?}");
        assert_eq!(last["voteCount"], values.len());
        for earlier in &replies[..replies.len() - 1] {
            assert_eq!(earlier["quorumReached"], false, "{decision}: {earlier}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_vote_fixes_total_instances_and_a_different_one_is_refused() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut sessions = voters(&hub, "fix", 4).await;

    let (id, c) = &mut sessions[0];
    assert_eq!(c.vote(id, "fix", "A", 5).await["voteCount"], 1);

    // Omitting totalInstances uses the stored 5 (quorum 3), not the default 3 (quorum 2).
    let (id, c) = &mut sessions[1];
    let reply = c
        .result("system.quorum.vote", vote_params(id, "fix", "A", None))
        .await;
    assert_eq!(
        reply,
        json!({"voted": true, "quorumReached": false, "voteCount": 2})
    );

    // A different totalInstances is refused and not recorded.
    let (id, c) = &mut sessions[2];
    let error = c
        .error("system.quorum.vote", vote_params(id, "fix", "A", Some(4)))
        .await;
    assert_error(
        &error,
        -32602,
        "decision fix was opened with totalInstances=5",
    );
    assert_eq!(error["data"]["field"], "totalInstances");
    let status = c
        .result("system.quorum.status", json!({"decision": "fix"}))
        .await;
    assert_eq!(status["voteCount"], 2);
    assert_eq!(status["totalInstances"], 5);
    assert_eq!(status["quorum"], 3);

    // The same instance may still vote with the right (or no) totalInstances.
    assert_eq!(c.vote(id, "fix", "A", 5).await["quorumReached"], true);

    // Once decided, a new voter stating another totalInstances gets the decided answer,
    // as any later vote does, not a mismatch error.
    let (id, c) = &mut sessions[3];
    let reply = c
        .result("system.quorum.vote", vote_params(id, "fix", "B", Some(4)))
        .await;
    assert_eq!(
        reply,
        json!({"voted": false, "reason": "decided", "quorumReached": true,
               "finalDecision": "A", "voteCount": 3})
    );

    // A decision opened without totalInstances uses the default 3.
    c.result(
        "system.quorum.vote",
        vote_params(id, "fix-default", "x", None),
    )
    .await;
    let status = c
        .result("system.quorum.status", json!({"decision": "fix-default"}))
        .await;
    assert_eq!(status["totalInstances"], 3);
    assert_eq!(status["quorum"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vote_per_instance_and_a_retry_learns_its_recorded_value() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut sessions = voters(&hub, "once", 3).await;
    let (id, c) = &mut sessions[0];
    c.vote(id, "once", "A", 5).await;
    for value in ["A", "B"] {
        let reply = c.vote(id, "once", value, 5).await;
        assert_eq!(
            reply,
            json!({"voted": false, "reason": "already_voted", "recordedValue": "A", "quorumReached": false, "voteCount": 1})
        );
    }
    let status = c
        .result("system.quorum.status", json!({"decision": "once"}))
        .await;
    assert_eq!(status["voteCount"], 1);
    assert_eq!(status["tally"], json!({"A": 1}));

    // After the decision, a duplicate still says already_voted, with the final decision.
    for (id, c) in sessions[1..].iter_mut() {
        c.vote(id, "once", "B", 5).await;
    }
    let (id, c) = &mut sessions[0];
    let reply = c.vote(id, "once", "C", 5).await;
    assert_eq!(
        reply,
        json!({"voted": false, "reason": "already_voted", "recordedValue": "A", "quorumReached": true, "voteCount": 3, "finalDecision": "B"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_is_written_once_and_later_votes_are_not_recorded() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut observer = hub.client().await;
    let mut sessions = voters(&hub, "final", 5).await;
    for (id, c) in sessions[..2].iter_mut() {
        c.vote(id, "final", "yes", 3).await;
    }
    let event = observer.next_notification().await;
    let before = sessions[0]
        .1
        .result("system.quorum.status", json!({"decision": "final"}))
        .await;
    for (id, c) in sessions[2..].iter_mut() {
        let reply = c.vote(id, "final", "no", 3).await;
        assert_eq!(
            reply,
            json!({"voted": false, "reason": "decided", "quorumReached": true, "finalDecision": "yes", "voteCount": 2})
        );
    }
    let after = sessions[0]
        .1
        .result("system.quorum.status", json!({"decision": "final"}))
        .await;
    assert_eq!(before, after, "late votes changed the decision's record");
    assert_eq!(after["finalDecision"], "yes");
    assert_eq!(after["votes"].as_array().unwrap().len(), 2);
    assert_eq!(after["decidedAt"], event["params"]["timestamp"]);
    // The event went out once, not once per late vote.
    observer.assert_no_more_notifications("final").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_carries_the_decision_hash_tag_and_the_event_is_in_the_stream() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut observer = hub.client().await;
    cast(&hub, "tagged:1", 1, &["go"]).await;
    let event = observer.next_notification().await;
    let tag = |key: &str| {
        let open = key.find('{').expect("a hash tag");
        key[open..=open + key[open..].find('}').expect("a closed tag")].to_owned()
    };
    let first = redis.decision_key("tagged:1", "votes");
    for part in ["votes", "tally", "result", "metadata", "ballots"] {
        let key = redis.decision_key("tagged:1", part);
        let exists: bool = redis.query(&["EXISTS", &key]).await;
        assert!(exists, "{key} missing");
        assert_eq!(tag(&key), tag(&first), "{key} in another slot");
    }
    let entries: Vec<(String, Vec<(String, String)>)> = {
        let stream = quorum_hub::event_log_key(&redis.url());
        let reply: redis::Value = redis.query(&["XRANGE", stream, "-", "+"]).await;
        redis::FromRedisValue::from_redis_value(reply).unwrap()
    };
    assert_eq!(entries.len(), 1);
    let (id, fields) = &entries[0];
    assert_eq!(event["params"]["eventId"], id.as_str());
    assert!(
        fields.contains(&("decision".into(), "tagged:1".into())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("value".into(), "go".into())),
        "{fields:?}"
    );
    // The event's timestamp is when the decision was made; the id's, when it was logged:
    // in the same script on one Redis (two reads of the clock, which may tick between them;
    // a loaded machine can pause Redis in between), a step later on a cluster (same clock
    // here).
    let logged_at: u64 = id.split('-').next().unwrap().parse().unwrap();
    let decided_at = event["params"]["timestamp"].as_u64().unwrap();
    if redis.is_cluster() {
        assert!(decided_at <= logged_at, "{decided_at} > {logged_at}");
    } else {
        assert!(
            decided_at.abs_diff(logged_at) < 1000,
            "decided at {decided_at}, logged at {logged_at}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_error_names_the_field_and_the_rule() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client_as("valid").await;
    let ok = vote_params("valid", "d", "v", Some(3));
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("instanceId", json!(""), "1-128 characters"),
        ("instanceId", json!(long(129)), "1-128 characters"),
        ("instanceId", json!("a b"), "whitespace"),
        ("instanceId", json!("a\u{7}b"), "control"),
        ("instanceId", json!("a{b"), "braces"),
        ("instanceId", json!(7), "must be a string"),
        ("decision", json!(""), "1-200 characters"),
        ("decision", json!(long(201)), "1-200 characters"),
        ("decision", json!("a}:votes"), "braces"),
        ("decision", json!("line\nbreak"), "control"),
        ("decision", json!("two words"), "whitespace"),
        ("value", json!(""), "1-256 characters"),
        ("value", json!(long(257)), "1-256 characters"),
        ("value", json!("a\u{0}b"), "control"),
        ("value", json!(["A"]), "must be a string"),
        ("totalInstances", json!(0), "from 1 to 10000"),
        ("totalInstances", json!(10_001), "from 1 to 10000"),
        ("totalInstances", json!(-1), "positive integer"),
        ("totalInstances", json!(2.5), "positive integer"),
        ("totalInstances", json!("3"), "must be an integer"),
    ];
    for (field, bad, rule) in cases {
        let mut params = ok.clone();
        params[field] = bad.clone();
        let error = c.error("system.quorum.vote", params).await;
        assert_eq!(error["code"], -32602, "{field}={bad}: {error}");
        assert_eq!(error["data"]["field"], field, "{field}={bad}: {error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains(rule),
            "{field}={bad}: {message}"
        );
    }
    for field in ["instanceId", "decision", "value"] {
        let mut params = ok.clone();
        params.as_object_mut().unwrap().remove(field);
        let error = c.error("system.quorum.vote", params).await;
        assert_eq!(error["data"]["field"], field);
        assert!(error["message"].as_str().unwrap().contains("required"));
    }
    // A typo must not fall back to the default quorum.
    let mut params = ok.clone();
    params.as_object_mut().unwrap().remove("totalInstances");
    params["totalinstance"] = json!(5);
    let error = c.error("system.quorum.vote", params).await;
    assert_eq!(error["code"], -32602);
    assert_eq!(error["data"]["field"], "totalinstance");
    // Positional params are refused.
    let error = c
        .error("system.quorum.vote", json!(["valid", "d", "v"]))
        .await;
    assert_eq!(error["code"], -32602);
    // Nothing above was recorded, and the session still works.
    assert_eq!(
        c.error("system.quorum.status", json!({"decision": "d"}))
            .await["code"],
        -32004
    );
    assert_eq!(c.vote("valid", "d", "v", 3).await["voted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_session_bound_to_an_instance_votes_as_it() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let other_hub = TestHub::start(&redis).await;
    let vote = |id: &str| vote_params(id, "auth", "v", None);

    let mut anonymous = hub.client().await;
    let error = anonymous.error("system.quorum.vote", vote("a")).await;
    assert_error(&error, -32002, "has not registered");

    let mut a = hub.client_as("a").await;
    let error = a.error("system.quorum.vote", vote("b")).await;
    assert_error(&error, -32002, "registered as a");

    // One instance per session; registering the same id again refreshes it.
    let error = a.error("system.register", json!({"instanceId": "b"})).await;
    assert_eq!(error["code"], -32002);
    assert_eq!(a.register("a").await["registered"], true);

    // Bound on one session: no other session, on this hub or another, may take it.
    for hub in [&hub, &other_hub] {
        let mut thief = hub.client().await;
        let error = thief
            .error("system.register", json!({"instanceId": "a"}))
            .await;
        assert_error(&error, -32002, "bound to another open session");
        assert_eq!(
            thief
                .error("system.unregister", json!({"instanceId": "a"}))
                .await["code"],
            -32002
        );
    }
    // Nor may a one-shot HTTP caller vote as it.
    let reply = rpc_call(hub.addr, "system.quorum.vote", vote("a")).await;
    assert_eq!(reply["error"]["code"], -32002, "{reply}");

    // Closing the session releases the binding; another session can then take the id.
    a.close().await;
    let mut successor = other_hub.client().await;
    eventually("the binding to be released", async || {
        let reply = successor
            .call("system.register", json!({"instanceId": "a"}))
            .await;
        reply.get("result").is_some().then_some(())
    })
    .await;
    assert_eq!(
        successor.result("system.quorum.vote", vote("a")).await["voted"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_heartbeat_and_unregister() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    let reply = c
        .result(
            "system.register",
            json!({"instanceId": "w1", "roles": ["voter"], "metadata": {"zone": "a"}}),
        )
        .await;
    assert_eq!(
        reply,
        json!({"registered": true, "instanceId": "w1", "ttlSeconds": 30})
    );

    let ttl: i64 = redis.query(&["TTL", "cb:instance:{w1}"]).await;
    assert!((1..=30).contains(&ttl), "ttl {ttl}");
    let roles: String = redis.query(&["HGET", "cb:instance:{w1}", "roles"]).await;
    assert_eq!(roles, r#"["voter"]"#);

    assert_eq!(
        c.result("system.heartbeat", json!({"instanceId": "w1"}))
            .await,
        json!({"alive": true})
    );
    assert_eq!(
        c.result("system.heartbeat", json!({"instanceId": "ghost"}))
            .await,
        json!({"alive": false})
    );

    let state = c.result("system.get_state", json!({})).await;
    let instance = &state["instances"][0];
    assert_eq!(instance["instanceId"], "w1");
    assert_eq!(instance["roles"], json!(["voter"]));
    assert_eq!(instance["status"], "online");

    assert_eq!(
        c.result("system.unregister", json!({"instanceId": "w1"}))
            .await,
        json!({"unregistered": true})
    );
    assert_eq!(
        c.result("system.unregister", json!({"instanceId": "w1"}))
            .await,
        json!({"unregistered": false})
    );
    assert_eq!(
        c.result("system.heartbeat", json!({"instanceId": "w1"}))
            .await,
        json!({"alive": false})
    );
    // Unregistered, the session may take another id, and can no longer vote as the old one.
    c.register("w2").await;
    let error = c
        .error("system.quorum.vote", vote_params("w1", "d", "v", None))
        .await;
    assert_eq!(error["code"], -32002);

    let error = c
        .error(
            "system.register",
            json!({"instanceId": "w3", "roles": "voter"}),
        )
        .await;
    assert_eq!(error["data"]["field"], "roles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_http_callers_register_and_vote() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let (_, reply) = rpc(
        hub.addr,
        &request(1, "system.quorum.vote", vote_params("h1", "h", "y", None)),
    )
    .await;
    assert_error(&reply["error"], -32002, "not registered");
    for id in ["h1", "h2"] {
        let (status, reply) = rpc(
            hub.addr,
            &request(1, "system.register", json!({"instanceId": id})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(reply["result"]["registered"], true);
    }
    let mut last = Value::Null;
    for id in ["h1", "h2"] {
        let (_, reply) = rpc(
            hub.addr,
            &request(2, "system.quorum.vote", vote_params(id, "h", "y", None)),
        )
        .await;
        last = reply;
    }
    assert_eq!(
        last["result"],
        json!({"voted": true, "quorumReached": true, "finalDecision": "y", "voteCount": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_state_report_the_audit_trail_without_scanning_keys() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    cast(&hub, "older", 5, &["x", "y", "y"]).await;
    cast(&hub, "newer", 3, &["n"]).await;
    let mut c = hub.client().await;

    let status = c
        .result("system.quorum.status", json!({"decision": "older"}))
        .await;
    assert_eq!(status["decision"], "older");
    assert_eq!(status["totalInstances"], 5);
    assert_eq!(status["quorum"], 3);
    assert_eq!(status["voteCount"], 3);
    assert_eq!(status["tally"], json!({"x": 1, "y": 2}));
    assert_eq!(
        status["votes"],
        json!([
            {"instanceId": "older-0", "value": "x", "seq": 1},
            {"instanceId": "older-1", "value": "y", "seq": 2},
            {"instanceId": "older-2", "value": "y", "seq": 3},
        ])
    );
    assert_eq!(status["quorumReached"], true);
    assert_eq!(status["finalDecision"], "y");
    assert!(status["decidedAt"].as_u64().is_some());

    let error = c
        .error("system.quorum.status", json!({"decision": "never-voted"}))
        .await;
    assert_error(&error, -32004, "never-voted");

    let _: Vec<()> = redis.query_each_node(&["CONFIG", "RESETSTAT"]).await;
    let state = c.result("system.get_state", json!({})).await;
    let stats: Vec<String> = redis.query_each_node(&["INFO", "commandstats"]).await;
    let stats = stats.concat();
    for scan in ["cmdstat_keys:", "cmdstat_scan:"] {
        assert!(!stats.contains(scan), "get_state used {scan}");
    }
    let names: Vec<&str> = state["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["newer", "older"]);
    let older = &state["decisions"][1];
    assert_eq!(older["quorumReached"], true);
    assert_eq!(older["finalDecision"], "y");
    assert_eq!(older["voteCount"], 3);
    assert_eq!(older["quorum"], 3);
    assert_eq!(state["decisions"][0]["quorumReached"], false);
    assert!(state["decisions"][0].get("finalDecision").is_none());
    assert_eq!(state["instances"].as_array().unwrap().len(), 4);
    assert!(state["hub"]["sessions"].as_u64().unwrap() >= 1);
    let error = c.error("system.get_state", json!({"verbose": true})).await;
    assert_eq!(error["data"]["field"], "verbose");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_on_many_decisions_sent_at_once_are_each_judged_as_if_alone() {
    // Every session sends, before any reply, a vote on each of four decisions and then a
    // retry of each with another value: batches hold votes on several decisions at once,
    // which open, record, decide and refuse within one run. Each decision must end as if
    // its votes had run one by one: one place per recorded vote, a tally that counts the
    // recorded ballots, the rule-5 winner, and every answer agreeing with what was kept.
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut observer = hub.client().await;
    let sessions_n = 16usize;
    // (decision, totalInstances): quorums 2, 3 and 5 are reached; 17 of 33 never is.
    let decisions = [
        ("mixed-0", 3u64),
        ("mixed-1", 5),
        ("mixed-2", 9),
        ("mixed-3", 33),
    ];
    let mut sessions = voters(&hub, "mixed", sessions_n).await;
    for (i, (id, client)) in sessions.iter_mut().enumerate() {
        let mut n = 0;
        for round in 0..2 {
            for (d, (decision, total)) in decisions.iter().enumerate() {
                let value = if round == 0 {
                    ["A", "B", "C"][(i + d) % 3]
                } else {
                    "Z"
                };
                let params = vote_params(id, decision, value, Some(*total));
                client
                    .send_text(&request(n, "system.quorum.vote", params).to_string())
                    .await;
                n += 1;
            }
        }
    }
    // Each session's answers by decision, in the order it sent them.
    let mut answers: Vec<(String, Vec<Vec<Value>>)> = Vec::new();
    for (id, client) in sessions.iter_mut() {
        let mut by_decision = vec![Vec::new(); decisions.len()];
        for _ in 0..2 * decisions.len() {
            let reply = client.recv_reply().await;
            let n = reply["id"].as_u64().expect("a numbered reply") as usize;
            by_decision[n % decisions.len()].push((n, reply["result"].clone()));
        }
        let ordered = by_decision
            .into_iter()
            .map(|mut replies| {
                replies.sort_by_key(|(n, _)| *n);
                replies.into_iter().map(|(_, result)| result).collect()
            })
            .collect();
        answers.push((id.clone(), ordered));
    }

    let mut events = std::collections::HashMap::new();
    for _ in 0..3 {
        let event = observer.next_notification().await;
        let decision = event["params"]["decision"].as_str().unwrap().to_owned();
        assert!(
            events.insert(decision, event).is_none(),
            "a decision made twice"
        );
    }
    for (d, (decision, total)) in decisions.iter().enumerate() {
        let quorum = total / 2 + 1;
        let status = observer
            .result("system.quorum.status", json!({"decision": decision}))
            .await;
        let votes = status["votes"].as_array().unwrap();
        let recorded_as: std::collections::HashMap<&str, (u64, &str)> = votes
            .iter()
            .map(|v| {
                let place = (v["seq"].as_u64().unwrap(), v["value"].as_str().unwrap());
                (v["instanceId"].as_str().unwrap(), place)
            })
            .collect();
        let kept = quorum.min(sessions_n as u64);
        let seqs: Vec<u64> = votes.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=kept).collect::<Vec<_>>(), "{decision}: {status}");
        // The tally counts exactly the recorded ballots, value by value.
        let mut counted: std::collections::HashMap<&str, u64> = Default::default();
        for (_, value) in recorded_as.values() {
            *counted.entry(value).or_default() += 1;
        }
        let tally: std::collections::HashMap<&str, u64> = status["tally"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(value, n)| (value.as_str(), n.as_u64().unwrap()))
            .collect();
        assert_eq!(tally, counted, "{decision}: {status}");
        assert!(
            !counted.contains_key("Z"),
            "{decision}: a retry was counted"
        );
        let decided = kept == quorum;
        let in_order: Vec<&str> = votes.iter().map(|v| v["value"].as_str().unwrap()).collect();
        if decided {
            let event = &events
                .get(*decision)
                .unwrap_or_else(|| panic!("{decision}: {events:?} {status}"))["params"];
            assert_eq!(status["finalDecision"], expected_winner(&in_order));
            assert_eq!(event["value"], status["finalDecision"], "{decision}");
            assert_eq!(event["voteCount"], quorum, "{decision}");
        } else {
            assert!(
                !events.contains_key(*decision),
                "{decision} was not decided"
            );
            assert_eq!(status["quorumReached"], false, "{decision}: {status}");
        }
        for (id, by_decision) in &answers {
            let results = &by_decision[d];
            let (first, retry) = (&results[0], &results[1]);
            assert_eq!(retry["voted"], false, "{id} on {decision}: {retry}");
            match recorded_as.get(id.as_str()) {
                Some((seq, value)) => {
                    assert_eq!(first["voted"], true, "{id} on {decision}: {first}");
                    assert_eq!(first["voteCount"], *seq, "{id} was told another's place");
                    assert_eq!(retry["reason"], "already_voted", "{id}: {retry}");
                    assert_eq!(retry["recordedValue"], *value, "{id}: {retry}");
                }
                None => {
                    for result in results {
                        assert_eq!(result["reason"], "decided", "{id} on {decision}: {result}");
                        assert_eq!(result["finalDecision"], status["finalDecision"]);
                        assert_eq!(result["voteCount"], quorum, "{id}: {result}");
                    }
                }
            }
        }
    }
    observer.assert_no_more_notifications("mixed-3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_sent_at_once_are_judged_one_by_one_as_if_each_ran_alone() {
    // Every session sends its vote and, before any reply, a second vote with another
    // value: the hub runs them in batches (on a cluster, the decision's partition's), and
    // each must be judged as a run of its own would judge it, in the order they were
    // recorded.
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut observer = hub.client().await;
    let (decision, total, quorum) = ("burst", 30u64, 16u64);
    let mut sessions = voters(&hub, decision, total as usize).await;
    for (i, (id, client)) in sessions.iter_mut().enumerate() {
        let first = if i % 2 == 0 { "A" } else { "B" };
        for (n, value) in [first, "C"].into_iter().enumerate() {
            let params = vote_params(id, decision, value, Some(total));
            let frame = request(n, "system.quorum.vote", params);
            client.send_text(&frame.to_string()).await;
        }
    }
    let mut replies = Vec::new();
    for (id, client) in sessions.iter_mut() {
        let pair = [client.recv_reply().await, client.recv_reply().await];
        replies.push((id.clone(), pair.map(|r| r["result"].clone())));
    }
    let status = observer
        .result("system.quorum.status", json!({"decision": decision}))
        .await;
    // Each instance's place and value, as recorded.
    let recorded_as: std::collections::HashMap<&str, (u64, &str)> = status["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let place = (v["seq"].as_u64().unwrap(), v["value"].as_str().unwrap());
            (v["instanceId"].as_str().unwrap(), place)
        })
        .collect();
    let mut counted = Vec::new();
    for (id, results) in &replies {
        let recorded: Vec<&Value> = results.iter().filter(|r| r["voted"] == true).collect();
        assert!(recorded.len() <= 1, "{id} counted twice: {results:?}");
        if let Some(vote) = recorded.first() {
            let (seq, value) = recorded_as[id.as_str()];
            assert_eq!(vote["voteCount"], seq, "{id} was told another's place");
            counted.push(seq);
            let other = results.iter().find(|r| r["voted"] != true).unwrap();
            assert_eq!(other["reason"], "already_voted", "{id}: {other}");
            assert_eq!(other["recordedValue"], value, "{id}: {other}");
        } else {
            // Neither vote counted: both came after the decision, which both report.
            assert!(!recorded_as.contains_key(id.as_str()), "{id} was recorded");
            for result in results {
                assert_eq!(result["voted"], false, "{id}: {result}");
                assert_eq!(result["reason"], "decided", "{id}: {result}");
                assert_eq!(result["finalDecision"], status["finalDecision"], "{id}");
                assert_eq!(result["voteCount"], quorum, "{id}: {result}");
            }
        }
    }
    counted.sort_unstable();
    let expected: Vec<u64> = (1..=quorum).collect();
    assert_eq!(counted, expected, "each recorded vote got its own place");

    let votes = status["votes"].as_array().unwrap();
    let seqs: Vec<u64> = votes.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, expected);
    let in_order: Vec<&str> = votes.iter().map(|v| v["value"].as_str().unwrap()).collect();
    assert_eq!(status["finalDecision"], expected_winner(&in_order));
    assert_eq!(tallied(&status), quorum);
    let event = observer.next_notification().await;
    assert_eq!(event["params"]["decision"], decision);
    assert_eq!(event["params"]["value"], status["finalDecision"]);
    assert_eq!(event["params"]["voteCount"], quorum);
    observer.assert_no_more_notifications(decision).await;
}
