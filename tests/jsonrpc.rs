//! JSON-RPC 2.0 conformance over WebSocket and HTTP, close codes, health and readiness.

mod common;

use common::{RedisServer, TestHub, assert_error, eventually, http, request, rpc, vote_params};
use quorum_hub::config::Config;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_the_right_error_and_the_session_stays_open() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    let cases: [(&str, i64, Value); 9] = [
        ("{not json", -32700, Value::Null),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"system.get_state""#,
            -32700,
            Value::Null,
        ),
        ("42", -32600, Value::Null),
        (r#"{"id":2,"method":"system.get_state"}"#, -32600, json!(2)),
        (
            r#"{"jsonrpc":"1.0","id":3,"method":"system.get_state"}"#,
            -32600,
            json!(3),
        ),
        (r#"{"jsonrpc":"2.0","id":4,"method":7}"#, -32600, json!(4)),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"system.get_state"}"#,
            -32600,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":"s","method":"system.get_state","params":"x"}"#,
            -32600,
            json!("s"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"system.nope"}"#,
            -32601,
            json!(5),
        ),
    ];
    for (frame, code, id) in cases {
        c.send_text(frame).await;
        let reply = c.recv_reply().await;
        assert_eq!(reply["jsonrpc"], "2.0", "{frame}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{frame}: {reply}");
        assert_eq!(reply["id"], id, "{frame}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let state = c.result("system.get_state", json!({})).await;
    assert!(state["hub"]["sessions"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_get_no_reply_and_requests_keep_their_id() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    // A notification (even a failing one) is answered with nothing; the next frame's
    // reply is the first thing the client receives.
    c.send_text(r#"{"jsonrpc":"2.0","method":"system.register","params":{"instanceId":"n1"}}"#)
        .await;
    c.send_text(r#"{"jsonrpc":"2.0","method":"system.nope"}"#)
        .await;
    c.send_text(r#"{"jsonrpc":"2.0","id":"req-7","method":"system.heartbeat","params":{"instanceId":"n1"}}"#).await;
    let reply = c.recv_reply().await;
    assert_eq!(
        reply,
        json!({"jsonrpc": "2.0", "result": {"alive": true}, "id": "req-7"})
    );
    // A null id is a request and is echoed.
    c.send_text(&request(Value::Null, "system.heartbeat", json!({"instanceId": "n1"})).to_string())
        .await;
    assert_eq!(c.recv_reply().await["id"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_every_request_in_order_and_skip_notifications() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    let batch = json!([
        request(1, "system.register", json!({"instanceId": "b1"})),
        {"jsonrpc": "2.0", "method": "system.heartbeat", "params": {"instanceId": "b1"}},
        request(2, "system.quorum.vote", vote_params("b1", "bd", "v", Some(1))),
        "not a request",
        request(3, "system.nope", json!({})),
    ]);
    c.send_text(&batch.to_string()).await;
    let reply = c.recv_reply().await;
    let replies = reply.as_array().expect("a batch gets an array");
    assert_eq!(replies.len(), 4, "{reply}");
    assert_eq!(replies[0]["result"]["registered"], true);
    assert_eq!(replies[1]["result"]["finalDecision"], "v");
    assert_eq!(replies[2]["error"]["code"], -32600);
    assert_eq!(replies[2]["id"], Value::Null);
    assert_eq!(replies[3]["error"]["code"], -32601);
    assert_eq!(replies[3]["id"], 3);

    c.send_text("[]").await;
    let reply = c.recv_reply().await;
    assert_eq!(reply["error"]["code"], -32600, "empty batch: {reply}");
    assert!(reply.is_object());

    // A batch of only notifications gets nothing back; the next request's reply comes first.
    c.send_text(&json!([{"jsonrpc": "2.0", "method": "system.get_state"}]).to_string())
        .await;
    let reply = c
        .call("system.heartbeat", json!({"instanceId": "b1"}))
        .await;
    assert_eq!(reply["result"]["alive"], true);

    let too_many: Vec<Value> = (0..101)
        .map(|i| request(i, "system.get_state", json!({})))
        .collect();
    c.send_text(&Value::Array(too_many).to_string()).await;
    let reply = c.recv_reply().await;
    assert_error(&reply["error"], -32600, "at most 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rpc_speaks_the_same_protocol() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let (status, reply) = rpc(hub.addr, &request(1, "system.get_state", json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(reply["id"], 1);
    assert!(reply["result"]["decisions"].is_array());

    let (status, body) = http(hub.addr, "POST", "/rpc", "{oops").await.unwrap();
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["error"]["code"], -32700);

    let (status, reply) = rpc(
        hub.addr,
        &json!({"jsonrpc": "2.0", "method": "system.get_state"}),
    )
    .await;
    assert_eq!((status, reply), (204, Value::Null));

    let batch = json!([
        request("a", "system.nope", json!({})),
        request("b", "system.get_state", json!({}))
    ]);
    let (_, reply) = rpc(hub.addr, &batch).await;
    assert_eq!(reply[0]["error"]["code"], -32601);
    assert_eq!(reply[1]["id"], "b");

    let (_, reply) = rpc(hub.addr, &json!([])).await;
    assert_eq!(reply["error"]["code"], -32600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_closes_the_session_with_1003() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    c.send_message(Message::binary(vec![1u8, 2, 3])).await;
    assert_eq!(c.expect_close().await, 1003);
    // The hub is unaffected.
    hub.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_1001_and_releases_bindings() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client_as("leaving").await;
    let shutdown = hub.shutdown.clone();
    shutdown.cancel();
    assert_eq!(c.expect_close().await, 1001);
    hub.stop().await;
    let owner: Option<String> = redis.query(&["GET", "cb:instance:{leaving}:owner"]).await;
    assert_eq!(owner, None, "binding kept after shutdown");
    let status: String = redis
        .query(&["HGET", "cb:instance:{leaving}", "status"])
        .await;
    assert_eq!(status, "disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_the_dashboard_page() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    assert_eq!(http(hub.addr, "GET", "/healthz", "").await.unwrap().0, 200);
    assert_eq!(http(hub.addr, "GET", "/readyz", "").await.unwrap().0, 200);
    let (status, page) = http(hub.addr, "GET", "/", "").await.unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<title>quorum-hub</title>"), "{page}");
    assert_eq!(
        http(hub.addr, "GET", "/no-such-page", "").await.unwrap().0,
        404
    );
    hub.stop().await;

    // A hub whose Redis is unreachable serves, but is not ready.
    let dead = RedisServer::start();
    let url = dead.url();
    drop(dead);
    let hub = TestHub::start_unready(Config::with_redis(url)).await;
    let addr = hub.addr;
    let (status, _) = eventually("healthz", async || {
        http(addr, "GET", "/healthz", "").await.ok()
    })
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(addr, "GET", "/readyz", "").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Redis"), "{body}");
    let (_, reply) = rpc(addr, &request(1, "system.get_state", json!({}))).await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    hub.stop().await;
}

/// Sends one HTTP/1.1 request head as written and returns the response: its head, and its
/// body when it has one (a 101 keeps the connection open, with no body).
async fn handshake(addr: std::net::SocketAddr, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&response).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .map_or(0, |n| n.trim().parse().unwrap());
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert_ne!(n, 0, "the hub closed without a whole answer: {head}");
        response.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_handshake_is_checked_and_answered_per_rfc_6455() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let head = |connection: &str, upgrade: &str, version: &str, key: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\n\
             Sec-WebSocket-Version: {version}\r\n{key}\r\n",
            hub.addr
        )
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // RFC 6455 section 1.3: this key is answered with this accept value.
    let accepted = handshake(
        hub.addr,
        &head("keep-alive, Upgrade", "WebSocket", "13", key),
    )
    .await;
    assert!(accepted.starts_with("HTTP/1.1 101 "), "{accepted}");
    assert!(
        accepted
            .to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{accepted}"
    );
    let refused = [
        (
            head("close", "websocket", "13", key),
            "`Connection` must include `upgrade`",
        ),
        (
            head("upgrade", "h2c", "13", key),
            "`Upgrade` must be `websocket`",
        ),
        (
            head("upgrade", "websocket", "8", key),
            "`Sec-WebSocket-Version` must be 13",
        ),
        (
            head("upgrade", "websocket", "13", ""),
            "`Sec-WebSocket-Key` is missing",
        ),
    ];
    for (request, why) in refused {
        let response = handshake(hub.addr, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 400 "),
            "{request}: {response}"
        );
        assert!(
            response.ends_with(&format!("\r\n\r\n{why}\n")),
            "{request}: {response}"
        );
    }
    let (status, _) = http::http(hub.addr, "POST", "/ws", "").await.unwrap();
    assert_eq!(status, 405);
}
