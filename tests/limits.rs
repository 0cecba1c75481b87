//! Replies, queues and call budgets stay bounded whatever a caller asks for: paged
//! `system.get_state`, capped metadata, a bound on a batch's replies, byte-counted session
//! queues, a call budget per `/rpc` client, and the hub's memory under the amplification
//! attack they defend against.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{
    HubProcess, RedisServer, TestHub, WsClient, assert_error, bin_path, eventually, http, metric,
    metrics_show, request, rpc, rpc_call, vote_params, without_rate_limits,
};
use futures::future::join_all;
use quorum_hub::config::RateLimit;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Registers `count` instances (`inst-000`, ...) over `/rpc`, each with `metadata_bytes`
/// of metadata, in batches.
async fn register_many(addr: SocketAddr, count: usize, metadata_bytes: usize) {
    register_many_with(addr, count, metadata_bytes, &[]).await;
}

/// The largest roles a registration may carry: 32 of 64 characters.
fn largest_roles() -> Vec<String> {
    (0..32)
        .map(|n| format!("{n:02}{}", "r".repeat(62)))
        .collect()
}

async fn register_many_with(
    addr: SocketAddr,
    count: usize,
    metadata_bytes: usize,
    roles: &[String],
) {
    let pad = "m".repeat(metadata_bytes.saturating_sub(12));
    let ids: Vec<usize> = (0..count).collect();
    // Batches stay under the 64 KiB message limit.
    for chunk in ids.chunks(15) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| {
                let params = json!({
                    "instanceId": format!("inst-{n:03}"),
                    "roles": roles,
                    "metadata": {"p": pad},
                });
                request(*n as u64, "system.register", params)
            })
            .collect();
        let (status, replies) = rpc(addr, &Value::Array(batch)).await;
        assert_eq!(status, 200);
        for reply in replies.as_array().unwrap() {
            assert_eq!(reply["result"]["registered"], true, "{reply}");
        }
    }
}

/// Makes `count` decisions (`dec-000`, ...) over `/rpc`, each decided by one vote.
async fn decide_many(addr: SocketAddr, count: usize) {
    rpc_call(addr, "system.register", json!({"instanceId": "decider"})).await;
    let ids: Vec<usize> = (0..count).collect();
    for chunk in ids.chunks(100) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|n| {
                let params = vote_params("decider", &format!("dec-{n:03}"), "yes", Some(1));
                request(*n as u64, "system.quorum.vote", params)
            })
            .collect();
        let (_, replies) = rpc(addr, &Value::Array(batch)).await;
        for reply in replies.as_array().unwrap() {
            assert_eq!(reply["result"]["voted"], true, "{reply}");
        }
    }
}

/// Every page of `system.get_state` for one kind (`instances` or `decisions`).
async fn all_pages(addr: SocketAddr, kind: &str, limit: u64) -> Vec<Vec<Value>> {
    let (next, after) = match kind {
        "instances" => ("nextInstances", "instancesAfter"),
        _ => ("nextDecisions", "decisionsAfter"),
    };
    let mut pages = Vec::new();
    let mut params = json!({ "limit": limit });
    loop {
        let reply = rpc_call(addr, "system.get_state", params.clone()).await;
        let state = &reply["result"];
        pages.push(state[kind].as_array().expect(kind).clone());
        match &state[next] {
            Value::Null => return pages,
            cursor => params[after] = cursor.clone(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_state_pages_through_every_instance_and_decision_once() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    register_many(hub.addr, 250, 0).await;
    decide_many(hub.addr, 250).await;

    // A page holds 100 of each unless told otherwise.
    let first = rpc_call(hub.addr, "system.get_state", json!({})).await["result"].clone();
    assert_eq!(first["instances"].as_array().unwrap().len(), 100);
    assert_eq!(first["decisions"].as_array().unwrap().len(), 100);

    // Instances in id order, each once (251: the decider too).
    let pages = all_pages(hub.addr, "instances", 100).await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [100, 100, 51]);
    let ids: Vec<String> = pages
        .iter()
        .flatten()
        .map(|i| i["instanceId"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "not in id order, or listed twice");

    // Decisions newest first, each once, even while new ones are opened between pages.
    let first = rpc_call(hub.addr, "system.get_state", json!({"limit": 100})).await;
    let mut seen: Vec<Value> = first["result"]["decisions"].as_array().unwrap().clone();
    let mut cursor = first["result"]["nextDecisions"].clone();
    let mut opened_meanwhile = 0;
    while !cursor.is_null() {
        rpc_call(
            hub.addr,
            "system.quorum.vote",
            vote_params(
                "decider",
                &format!("late-{opened_meanwhile}"),
                "yes",
                Some(1),
            ),
        )
        .await;
        opened_meanwhile += 1;
        let params = json!({"limit": 100, "decisionsAfter": cursor});
        let page = rpc_call(hub.addr, "system.get_state", params).await;
        seen.extend(page["result"]["decisions"].as_array().unwrap().clone());
        cursor = page["result"]["nextDecisions"].clone();
    }
    let names: Vec<&str> = seen
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 250, "{names:?}");
    assert_eq!(unique.len(), 250);
    assert!(names.iter().all(|n| n.starts_with("dec-")));
    let opened: Vec<u64> = seen
        .iter()
        .map(|d| d["openedAt"].as_u64().unwrap())
        .collect();
    assert!(opened.windows(2).all(|w| w[0] >= w[1]), "not newest first");

    // One page of up to 1,000; no more, and no less than one.
    let all = rpc_call(hub.addr, "system.get_state", json!({"limit": 1000})).await;
    assert!(all["result"]["nextInstances"].is_null());
    assert_eq!(all["result"]["instances"].as_array().unwrap().len(), 251);
    for limit in [json!(0), json!(1001), json!(-1), json!("10")] {
        let reply = rpc_call(hub.addr, "system.get_state", json!({ "limit": limit })).await;
        assert_eq!(reply["error"]["code"], -32602, "{limit}: {reply}");
        assert_eq!(reply["error"]["data"]["field"], "limit", "{reply}");
    }
    let reply = rpc_call(
        hub.addr,
        "system.get_state",
        json!({"decisionsAfter": "yesterday"}),
    )
    .await;
    assert_error(&reply["error"], -32602, "not a cursor from nextDecisions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_metadata_is_capped() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    // {"p":"..."} of 1,024 bytes is accepted; one byte more is not.
    let fits = json!({"p": "x".repeat(1024 - 8)});
    assert_eq!(fits.to_string().len(), 1024);
    let reply = c
        .result(
            "system.register",
            json!({"instanceId": "meta", "metadata": fits}),
        )
        .await;
    assert_eq!(reply["registered"], true);
    let over = json!({"p": "x".repeat(1024 - 7)});
    let error = c
        .error(
            "system.register",
            json!({"instanceId": "meta", "metadata": over}),
        )
        .await;
    assert_error(&error, -32602, "at most 1024 bytes");
    assert_eq!(error["data"]["field"], "metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stops_running_calls_once_its_replies_reach_their_bound() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(without_rate_limits(&redis)).await;
    register_many(hub.addr, 300, 1000).await;
    // Each reply lists 300 instances of about 1.1 KB: about 330 KB.
    let batch: Vec<Value> = (0..20)
        .map(|n| request(n, "system.get_state", json!({"limit": 1000})))
        .collect();
    let (status, body) = http(hub.addr, "POST", "/rpc", &Value::Array(batch).to_string())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.len() < 2 * 1024 * 1024, "{} bytes", body.len());
    let replies: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(replies.len(), 20, "one reply per call");
    let ran = replies
        .iter()
        .take_while(|r| r.get("result").is_some())
        .count();
    // Calls run until the replies reach 1 MiB: four of about 330 KB.
    assert_eq!(ran, 4);
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["id"], n, "{reply}");
        if n >= ran {
            assert_error(&reply["error"], -32003, "send it again, in a smaller batch");
            assert_eq!(reply["error"]["data"]["limitBytes"], 1024 * 1024);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_queue_full_of_bytes_closes_a_reader_that_stopped_reading() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.session_queue_bytes = 64 * 1024;
    let hub = TestHub::start_with(config).await;
    register_many(hub.addr, 300, 1000).await;
    let mut voter = hub.client_as("pusher").await;
    // A few messages, but far more bytes than the queue holds, and a reader that reads
    // nothing.
    let mut slow = WsClient::connect_small_buffer(hub.addr).await;
    for n in 0..10 {
        slow.send_text(&request(n, "system.get_state", json!({"limit": 1000})).to_string())
            .await;
    }
    // Decision events (about 200 bytes) then find no room beside the reply being written:
    // the session is closed, not left to fall behind, long before its queue holds as many
    // messages as it may (1,024).
    let mut decisions = 0;
    eventually("the slow session to be closed", async || {
        voter
            .vote("pusher", &format!("while-full-{decisions}"), "v", 1)
            .await;
        voter.notifications.clear();
        decisions += 1;
        assert!(decisions <= 400, "still open after 400 decision events");
        metrics_show(hub.addr, "quorum_slow_consumer_closes_total 1")
            .await
            .then_some(())
    })
    .await;
    // The close frame arrives after what was queued, unless the full socket kept it out.
    while let Some(frame) = slow.next_frame().await {
        if let Message::Close(Some(frame)) = frame {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (1008, "slow consumer")
            );
            break;
        }
    }
    // Its reader, which was waiting for room for a reply, gives up too: the session is gone.
    eventually("the closed session to be forgotten", async || {
        metrics_show(hub.addr, "quorum_sessions_open 1")
            .await
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_client_gets_the_same_call_budget_as_a_session() {
    let redis = RedisServer::start();
    let mut config = quorum_hub::config::Config::with_redis(redis.url());
    config.session_rate_limit = RateLimit {
        max: 20,
        window: Duration::from_secs(60),
    };
    let hub = TestHub::start_with(config).await;
    // Every entry of a batch counts, invalid ones too.
    let mut batch: Vec<Value> = (0..15)
        .map(|n| request(n, "system.get_state", json!({"limit": 1})))
        .collect();
    batch.extend((15..25).map(|n| json!({"id": n})));
    let (_, replies) = rpc(hub.addr, &Value::Array(batch)).await;
    let codes: Vec<i64> = replies
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"]["code"].as_i64().unwrap_or(0))
        .collect();
    let mut expected = vec![0; 15];
    expected.extend([-32600; 5]);
    expected.extend([-32000; 5]);
    assert_eq!(codes, expected);
    let refused = rpc_call(hub.addr, "system.get_state", json!({})).await;
    assert_error(&refused["error"], -32000, "this client sends too fast");
    assert!(refused["error"]["data"]["retryAfterMs"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_batches_from_many_callers_leave_memory_bounded_and_votes_answered() {
    let redis = RedisServer::start();
    // No call budgets: the bounds on replies alone must hold the line.
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-url", &redis.url()])
            .args(["--session-rate-limit", "off", "--vote-rate-limit", "off"]),
    );
    register_many_with(hub.addr, 300, 1024, &largest_roles()).await;
    // One page ends at its byte bound (about 256 KiB), whatever the limit.
    let page = rpc_call(hub.addr, "system.get_state", json!({"limit": 1000})).await;
    let listed = page["result"]["instances"].as_array().unwrap().len();
    assert!(
        (50..300).contains(&listed),
        "{listed} instances in one page"
    );
    assert!(page["result"]["nextInstances"].is_string());
    let baseline = hub.peak_rss_kib();
    let state_batch = Value::Array(
        (0..100)
            .map(|n| request(n, "system.get_state", json!({"limit": 1000})))
            .collect(),
    );
    let single = request(1, "system.get_state", json!({"limit": 1000}));

    let post = |_| {
        let body = state_batch.clone();
        async move {
            for _ in 0..3 {
                let (status, replies) = rpc(hub.addr, &body).await;
                assert_eq!(status, 200);
                assert_eq!(replies.as_array().unwrap().len(), 100);
            }
        }
    };
    let session = |_| {
        let text = state_batch.to_string();
        let url = hub.ws_url();
        async move {
            let mut c = WsClient::connect(&url).await;
            for _ in 0..3 {
                c.send_text(&text).await;
                assert_eq!(c.recv_reply().await.as_array().unwrap().len(), 100);
            }
        }
    };
    let voter = async {
        let mut c = WsClient::connect(&hub.ws_url()).await;
        c.register("steady").await;
        for n in 0..30 {
            let reply = c.vote("steady", &format!("steady-{n}"), "v", 1).await;
            assert_eq!(reply["voted"], true, "{reply}");
            assert_eq!(reply["finalDecision"], "v", "{reply}");
        }
    };
    let single_post = |_| {
        let body = single.clone();
        async move {
            for _ in 0..3 {
                let (status, reply) = rpc(hub.addr, &body).await;
                assert_eq!(status, 200);
                assert!(reply["result"]["instances"].is_array(), "{reply}");
            }
        }
    };
    tokio::join!(
        join_all((0..6).map(post)),
        join_all((0..24).map(single_post)),
        join_all((0..4).map(session)),
        voter
    );
    let peak = hub.peak_rss_kib();
    eprintln!("hub peak RSS: {baseline} KiB before, {peak} KiB during the attack");
    // What the bounds allow: a reply of about 1.5 MiB per /rpc request served (16 at once),
    // at most about 5.5 MiB per session (SECURITY.md, "Memory per session"), a few pages
    // being built, and the allocator's own slack. Before the bounds this attack grew the
    // hub by gigabytes.
    const BOUND_KIB: u64 = 128 * 1024;
    assert!(
        peak < baseline + BOUND_KIB,
        "peak RSS grew by {} KiB",
        peak - baseline
    );
    assert_eq!(hub.panics(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_never_read_hold_at_most_their_budget_and_one_reply() {
    const SESSIONS: u64 = 32;
    const BUDGET: u64 = 1024 * 1024;
    /// `session::HELD_STEP_BYTES`: the hub's total counts each session in such steps.
    const STEP: u64 = 64 * 1024;
    let redis = RedisServer::start();
    // No call budgets: only the session's own bounds hold the line.
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-url", &redis.url()])
            .args(["--session-rate-limit", "off", "--vote-rate-limit", "off"])
            .args(["--session-queue-bytes", &BUDGET.to_string()]),
    );
    register_many_with(hub.addr, 300, 1024, &largest_roles()).await;
    let batch = Value::Array(
        (0..100)
            .map(|n| request(n, "system.get_state", json!({"limit": 1000})))
            .collect(),
    )
    .to_string();
    // The reply such a batch makes (its calls run until the replies reach 1 MiB), as a
    // session that reads gets it.
    let mut reader = WsClient::connect(&hub.ws_url()).await;
    reader.send_text(&batch).await;
    let reply = reader.recv_reply().await;
    assert_eq!(reply.as_array().unwrap().len(), 100);
    let reply_len = reply.to_string().len() as u64;
    assert!(reply_len > BUDGET, "a reply of only {reply_len} bytes");
    // Sessions that send batch after batch and read nothing: each holds one reply, which
    // its writer cannot write, and its reader runs no more calls.
    let before_kib = hub.rss_kib();
    let mut stalled = Vec::new();
    for _ in 0..SESSIONS {
        let mut session = WsClient::connect_small_buffer(hub.addr).await;
        for _ in 0..4 {
            session.send_text(&batch).await;
        }
        stalled.push(session);
    }
    let total = "quorum_session_outbound_bytes";
    let each = reply_len / STEP * STEP;
    let held_by_all = eventually("every session to hold a reply", async || {
        let held = metric(hub.addr, total).await;
        (held >= SESSIONS * each).then_some(held)
    })
    .await;
    let stalled_kib = hub.rss_kib();
    // One reply each, nothing beside it (the hub's total counts each session's bytes in
    // whole steps).
    assert_eq!(
        held_by_all,
        SESSIONS * each,
        "bytes held for {SESSIONS} sessions"
    );

    // Decision events then take the room the replies leave, until every such session is
    // closed as a slow consumer.
    let mut voter = WsClient::connect(&hub.ws_url()).await;
    voter.register("pusher").await;
    let mut decisions = 0;
    let closed = format!("quorum_slow_consumer_closes_total {SESSIONS}");
    eventually("the sessions that never read to be closed", async || {
        for _ in 0..25 {
            // Long names and values: fewer events fill the room.
            let decision = format!("held-{decisions:05}-{}", "d".repeat(180));
            voter.vote("pusher", &decision, &"v".repeat(256), 1).await;
            decisions += 1;
        }
        voter.notifications.clear();
        assert!(
            decisions <= 4000,
            "still open after {decisions} decision events"
        );
        metrics_show(hub.addr, &closed).await.then_some(())
    })
    .await;
    let held = metric(hub.addr, "quorum_session_outbound_peak_bytes").await;
    eprintln!(
        "one reply: {reply_len} bytes; held for {SESSIONS} sessions that never read: \
         {held_by_all} bytes, at most {held} for one (bound {BUDGET} + {reply_len}); hub RSS \
         {before_kib} KiB before, {stalled_kib} KiB with the sessions stalled: {} KiB per session",
        stalled_kib.saturating_sub(before_kib) / SESSIONS
    );
    // The budget, passed by one reply at most. The hub's own fields in each page (uptime,
    // session count) may differ by a few bytes from the reply measured above.
    const PAGE_FIELDS_SLACK: u64 = 1024;
    assert!(
        held <= BUDGET + reply_len + PAGE_FIELDS_SLACK,
        "one session held {held} bytes, more than its budget {BUDGET} and one reply of {reply_len}"
    );
    // Events were held beside a whole reply: at least half the budget, less the last event
    // that did not fit.
    assert!(
        held > reply_len + BUDGET / 2 - 2048,
        "{held} bytes held at most"
    );
    // Closed sessions hold nothing.
    eventually("the closed sessions to be gone", async || {
        metrics_show(hub.addr, "quorum_sessions_open 2")
            .await
            .then_some(())
    })
    .await;
    assert_eq!(metric(hub.addr, total).await, 0);
    assert_eq!(hub.panics(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_registrations_leave_both_indexes_and_live_ones_stay() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.instance_ttl = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    // `kept` is refreshed by its session; `gone` was registered once over /rpc.
    let _kept = hub.client_as("kept").await;
    rpc_call(hub.addr, "system.register", json!({"instanceId": "gone"})).await;
    let listed = |state: &Value| -> Vec<String> {
        state["result"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_id_key = quorum_hub::instances_by_id_key(&redis.url());
    let state = rpc_call(hub.addr, "system.get_state", json!({})).await;
    assert_eq!(listed(&state), ["gone", "kept"]);
    eventually(
        "the expired registration to leave the indexes",
        async || {
            let state = rpc_call(hub.addr, "system.get_state", json!({})).await;
            let by_id: Option<f64> = redis.query(&["ZSCORE", by_id_key, "gone"]).await;
            (listed(&state) == ["kept"] && by_id.is_none()).then_some(())
        },
    )
    .await;
    let kept: Option<f64> = redis.query(&["ZSCORE", by_id_key, "kept"]).await;
    assert_eq!(kept, Some(0.0));
}
