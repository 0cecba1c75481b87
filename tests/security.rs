//! Authentication, origins, limits and hostile input, each rule with a test that fails
//! when the rule breaks.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    RedisServer, TestHub, WsClient, assert_error, eventually, http, http_with, metrics_show,
    request, vote_params, without_rate_limits,
};
use quorum_hub::auth::Authority;
use quorum_hub::config::{Config, RateLimit};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "security-test-secret-0123456789";

fn secured(redis: &RedisServer) -> Config {
    let mut config = Config::with_redis(redis.url());
    config.auth_secret = Some(SECRET.to_owned());
    config
}

fn token(sub: &str) -> String {
    Authority::new(SECRET)
        .unwrap()
        .mint(Some(sub), false, Duration::from_secs(600))
        .unwrap()
}

fn observer_token() -> String {
    Authority::new(SECRET)
        .unwrap()
        .mint(None, true, Duration::from_secs(600))
        .unwrap()
}

/// A token signed with `secret` whose claims are exactly `claims`.
fn raw_token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// POSTs a JSON-RPC body to `/rpc` with extra headers; returns the status and raw body.
async fn post_rpc(addr: SocketAddr, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
    http_with(addr, "POST", "/rpc", headers, &body.to_string())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_there_is_no_session() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(secured(&redis)).await;
    let url = hub.ws_url();
    assert_eq!(
        WsClient::connect_with(&url, &[]).await.err(),
        Some(401),
        "no token"
    );
    let expired = raw_token(SECRET, json!({"sub": "w1", "exp": now_secs() - 60}));
    let forged = raw_token(
        "some-other-secret-0123456789",
        json!({"sub": "w1", "exp": now_secs() + 600}),
    );
    let no_exp = raw_token(SECRET, json!({"sub": "w1"}));
    let mut tampered = token("w1");
    tampered.insert(tampered.len() - 3, 'x');
    for (what, bad) in [
        ("expired", expired),
        ("forged", forged),
        ("no exp", no_exp),
        ("tampered", tampered),
    ] {
        let bearer = format!("Bearer {bad}");
        assert_eq!(
            WsClient::connect_with(&url, &[("authorization", &bearer)])
                .await
                .err(),
            Some(401),
            "{what}"
        );
        assert_eq!(
            WsClient::connect_with(&format!("{url}?token={bad}"), &[])
                .await
                .err(),
            Some(401),
            "{what} in query"
        );
        let (status, _) = post_rpc(
            hub.addr,
            &[("Authorization", &bearer)],
            &request(1, "system.get_state", json!({})),
        )
        .await;
        assert_eq!(status, 401, "{what} over /rpc");
    }
    let (status, body) = post_rpc(hub.addr, &[], &request(1, "system.get_state", json!({}))).await;
    assert_eq!(status, 401);
    assert!(body.contains("Authorization: Bearer"), "{body}");
    // Health and the page stay public.
    assert_eq!(http(hub.addr, "GET", "/healthz", "").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lets_its_holder_act_only_as_its_own_instance() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(secured(&redis)).await;
    let bearer = format!("Bearer {}", token("w1"));
    let mut c = WsClient::connect_with(&hub.ws_url(), &[("Authorization", &bearer)])
        .await
        .unwrap();
    for method in ["system.register", "system.heartbeat", "system.unregister"] {
        let error = c.error(method, json!({"instanceId": "w2"})).await;
        assert_error(&error, -32002, "token is for instance w1");
    }
    c.register("w1").await;
    let error = c
        .error("system.quorum.vote", vote_params("w2", "d", "v", None))
        .await;
    assert_eq!(error["code"], -32002);
    assert_eq!(c.vote("w1", "d", "v", 1).await["voted"], true);

    // Browsers pass the token in the query.
    let mut browser = WsClient::connect(&format!("{}?token={}", hub.ws_url(), token("w3"))).await;
    browser.register("w3").await;

    // The same rules over /rpc.
    let call = |instance: &str| request(1, "system.register", json!({"instanceId": instance}));
    let bearer4 = format!("Bearer {}", token("w4"));
    let (_, body) = post_rpc(hub.addr, &[("Authorization", &bearer4)], &call("w5")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -32002,
        "{body}"
    );
    let (_, body) = post_rpc(hub.addr, &[("Authorization", &bearer4)], &call("w4")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["result"]["registered"],
        true,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_watches_but_never_registers_or_votes() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(secured(&redis)).await;
    let bearer = format!("Bearer {}", observer_token());
    let mut observer = WsClient::connect_with(&hub.ws_url(), &[("Authorization", &bearer)])
        .await
        .unwrap();
    let error = observer
        .error("system.register", json!({"instanceId": "obs"}))
        .await;
    assert_error(&error, -32002, "observer");
    let error = observer
        .error("system.quorum.vote", vote_params("obs", "d", "v", None))
        .await;
    assert_eq!(error["code"], -32002);
    assert!(observer.result("system.get_state", json!({})).await["hub"].is_object());

    let voter_bearer = format!("Bearer {}", token("voter"));
    let mut voter = WsClient::connect_with(&hub.ws_url(), &[("Authorization", &voter_bearer)])
        .await
        .unwrap();
    voter.register("voter").await;
    voter.vote("voter", "watched", "yes", 1).await;
    assert_eq!(
        observer.next_notification().await["params"]["decision"],
        "watched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_only_loopback_listed_or_listen_hosts_are_served() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.allowed_hosts = vec!["hub.internal".to_owned()];
    let hub = TestHub::start_with(config).await;
    let port = hub.addr.port();
    let state = r#"{"jsonrpc":"2.0","id":1,"method":"system.get_state"}"#;
    let status = |host: String, method: &'static str, path: &'static str| {
        let addr = hub.addr;
        async move {
            let body = if method == "POST" { state } else { "" };
            http_with(addr, method, path, &[("Host", &host)], body)
                .await
                .unwrap()
                .0
        }
    };
    // A name that resolves to this machine (DNS rebinding) is refused everywhere a page
    // could reach: the dashboard, /rpc and /ws.
    for host in [format!("evil.example:{port}"), "attacker.test".to_owned()] {
        assert_eq!(status(host.clone(), "GET", "/").await, 403, "{host}");
        assert_eq!(status(host.clone(), "POST", "/rpc").await, 403, "{host}");
        assert_eq!(status(host.clone(), "GET", "/ws").await, 403, "{host}");
    }
    let refused = WsClient::connect_with(&hub.ws_url(), &[("Host", "evil.example")]).await;
    assert_eq!(refused.err(), Some(403));
    // Loopback names and addresses, the listen address and listed hosts are served.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "HUB.internal".to_owned(),
        format!("hub.internal:{port}"),
    ] {
        assert_eq!(status(host.clone(), "GET", "/").await, 200, "{host}");
        assert_eq!(status(host.clone(), "POST", "/rpc").await, 200, "{host}");
    }
    // Health checks are not pages: they answer whatever the Host.
    assert_eq!(status("evil.example".into(), "GET", "/healthz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_origins_must_be_allowed() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let url = hub.ws_url();
    let own = format!("http://{}", hub.addr);
    let loopback = "http://localhost:3000";
    assert_eq!(
        WsClient::connect_with(&url, &[("Origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        WsClient::connect_with(&url, &[("Origin", "null")])
            .await
            .err(),
        Some(403)
    );
    assert!(
        WsClient::connect_with(&url, &[("Origin", &own)])
            .await
            .is_ok(),
        "same origin"
    );
    assert!(
        WsClient::connect_with(&url, &[("Origin", loopback)])
            .await
            .is_ok(),
        "loopback"
    );
    let body = request(1, "system.get_state", json!({}));
    assert_eq!(
        post_rpc(hub.addr, &[("Origin", "https://evil.example")], &body)
            .await
            .0,
        403
    );
    assert_eq!(post_rpc(hub.addr, &[("Origin", &own)], &body).await.0, 200);

    let mut config = Config::with_redis(redis.url());
    config.allowed_origins = vec!["https://dash.example.com".to_owned()];
    let strict = TestHub::start_with(config).await;
    let url = strict.ws_url();
    assert!(
        WsClient::connect_with(&url, &[("Origin", "https://dash.example.com")])
            .await
            .is_ok()
    );
    assert_eq!(
        WsClient::connect_with(&url, &[("Origin", loopback)])
            .await
            .err(),
        Some(403)
    );
    assert!(
        WsClient::connect_with(&url, &[]).await.is_ok(),
        "agents send no Origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_the_session_with_1009() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    let big = request(1, "system.get_state", json!({"pad": "x".repeat(70 * 1024)}));
    c.send_text(&big.to_string()).await;
    assert_eq!(c.expect_close().await, 1009);
    // Just under the limit is answered (here: refused by validation, not by size).
    let mut c = hub.client().await;
    let near = request(1, "system.get_state", json!({"pad": "x".repeat(60 * 1024)}));
    c.send_text(&near.to_string()).await;
    assert_eq!(c.recv_reply().await["error"]["data"]["field"], "pad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_refuses_the_next_upgrade_with_503() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.max_sessions = 3;
    let hub = TestHub::start_with(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(hub.client().await);
    }
    assert_eq!(
        WsClient::connect_with(&hub.ws_url(), &[]).await.err(),
        Some(503)
    );
    open.pop().unwrap().close().await;
    eventually("the freed place to be given back", async || {
        WsClient::connect_with(&hub.ws_url(), &[]).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_an_invalid_request() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client().await;
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"system.get_state","params":{{"a":{}1{}}}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    c.send_text(&deep).await;
    let reply = c.recv_reply().await;
    assert_error(&reply["error"], -32600, "deeper than 32");
}

/// A hub whose sessions may make 20 calls per 30 s: a budget a test can exhaust at once.
async fn hub_allowing_20_calls_per_30s(redis: &RedisServer) -> TestHub {
    let mut config = Config::with_redis(redis.url());
    config.session_rate_limit = "20/30s".parse::<RateLimit>().unwrap();
    TestHub::start_with(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_session_is_refused_then_closed() {
    let redis = RedisServer::start();
    let hub = hub_allowing_20_calls_per_30s(&redis).await;
    let mut c = hub.client().await;
    for n in 0..20 {
        assert!(
            c.call("system.get_state", json!({}))
                .await
                .get("result")
                .is_some(),
            "call {n}"
        );
    }
    let error = c.error("system.get_state", json!({})).await;
    assert_eq!(error["code"], -32000);
    assert!(error["data"]["retryAfterMs"].as_u64().unwrap() <= 30_000);
    // A batch counts each call.
    let batch: Vec<Value> = (0..30)
        .map(|i| request(i, "system.get_state", json!({})))
        .collect();
    c.send_text(&Value::Array(batch).to_string()).await;
    assert_eq!(c.expect_close().await, 1008);
    // Other sessions are unaffected.
    hub.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_envelopes_and_pings_count_against_the_call_budget() {
    let redis = RedisServer::start();
    let hub = hub_allowing_20_calls_per_30s(&redis).await;

    // Envelopes that are not requests are answered, and each one counts.
    let mut c = hub.client().await;
    for n in 0..20 {
        c.send_text("{}").await;
        let reply = c.recv_reply().await;
        assert_eq!(reply["error"]["code"], -32600, "frame {n}: {reply}");
    }
    c.send_text("{}").await;
    let reply = c.recv_reply().await;
    assert_eq!(reply["error"]["code"], -32000, "over the budget: {reply}");
    for _ in 0..20 {
        c.send_text("{}").await;
    }
    assert_eq!(c.expect_close().await, 1008);

    // So do pings: a session that only pings is closed once it floods.
    let mut p = hub.client().await;
    for _ in 0..41 {
        p.send_message(Message::Ping(Default::default())).await;
    }
    assert_eq!(p.expect_close().await, 1008);
    hub.assert_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_as_a_slow_consumer() {
    const DECISIONS: usize = 1500;
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.session_queue = 16;
    let hub = TestHub::start_with(config).await;
    let mut slow = WsClient::connect_small_buffer(hub.addr).await;
    let mut voter = hub.client_as("pusher").await;
    assert_eq!(
        voter.result("system.get_state", json!({})).await["hub"]["sessions"],
        2
    );
    // Make decisions (events of about 500 bytes) while `slow` reads nothing.
    let padding = "p".repeat(180);
    for n in 0..DECISIONS {
        voter
            .vote("pusher", &format!("{padding}-{n}"), &"v".repeat(200), 1)
            .await;
        voter.notifications.clear();
    }
    eventually("the slow session to be closed", async || {
        let state = voter.result("system.get_state", json!({})).await;
        (state["hub"]["sessions"] == 1).then_some(())
    })
    .await;
    // It got part of the stream, then a 1008 "slow consumer" close (or the connection
    // ended, if the close frame could not be delivered): never all events silently.
    let mut received = 0;
    let mut close = None;
    while let Some(frame) = slow.next_frame().await {
        match frame {
            Message::Text(_) => received += 1,
            Message::Close(frame) => {
                close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                break;
            }
            _ => {}
        }
    }
    eprintln!("slow client received {received} of {DECISIONS} events");
    assert!(received < DECISIONS, "the slow client got every event");
    if let Some((code, reason)) = close {
        assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    }
    // Closed by the slow-consumer rule, not by the write timeout that backs it up.
    assert!(metrics_show(hub.addr, "quorum_slow_consumer_closes_total 1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_ignores_pings_is_closed_and_its_instance_released() {
    let redis = RedisServer::start();
    let mut config = Config::with_redis(redis.url());
    config.ping_interval = Duration::from_millis(100);
    let hub = TestHub::start_with(config).await;
    let silent = hub.client_as("silent").await;
    // `silent` stops reading, so it never answers a ping. The successor reads, so it
    // answers pings and stays.
    let mut successor = hub.client().await;
    eventually("the silent peer to lose its instance", async || {
        let reply = successor
            .call("system.register", json!({"instanceId": "silent"}))
            .await;
        if reply.get("result").is_some() {
            return Some(());
        }
        assert_eq!(reply["error"]["code"], -32002);
        None
    })
    .await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_cannot_escape_their_keys_and_values_are_stored_verbatim() {
    let redis = RedisServer::start();
    let hub = TestHub::start(&redis).await;
    let mut c = hub.client_as("esc").await;
    for bad in [
        "a}:votes",
        "{x}",
        "x{",
        "a\nb",
        "a\u{0}b",
        &"d".repeat(50_000),
    ] {
        let error = c
            .error("system.quorum.vote", vote_params("esc", bad, "v", None))
            .await;
        assert_eq!(error["code"], -32602, "{bad:?}");
        assert_eq!(error["data"]["field"], "decision");
    }
    let error = c
        .error("system.register", json!({"instanceId": "a}:votes"}))
        .await;
    assert_eq!(error["data"]["field"], "instanceId");

    let nasty = r#"x"]]..redis.call('FLUSHALL')--\"}{*} ; DROP"#;
    let reply = c.vote("esc", "*", nasty, 2).await;
    assert_eq!(reply["voted"], true);
    let status = c
        .result("system.quorum.status", json!({"decision": "*"}))
        .await;
    assert_eq!(status["votes"][0]["value"], nasty);
    assert_eq!(status["tally"][nasty], 1);
    let keys: Vec<String> = redis.query(&["KEYS", "cb:quorum:*"]).await;
    assert!(
        keys.iter().all(|k| k.starts_with("cb:quorum:{*}:")),
        "{keys:?}"
    );
    let dbsize: u64 = redis.query(&["DBSIZE"]).await;
    assert!(dbsize > 0, "the value ran as Lua");
}

/// A token for `sub` that expires `secs` seconds from now.
fn token_expiring_in(sub: &str, secs: u64) -> String {
    raw_token(SECRET, json!({"sub": sub, "exp": now_secs() + secs}))
}

async fn session_with(hub: &TestHub, token: &str) -> WsClient {
    let bearer = format!("Bearer {token}");
    WsClient::connect_with(&hub.ws_url(), &[("Authorization", &bearer)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_its_token_expires_and_its_instance_is_released() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(secured(&redis)).await;
    let mut short = session_with(&hub, &token_expiring_in("brief", 1)).await;
    short.register("brief").await;
    assert_eq!(short.vote("brief", "d", "v", 3).await["voted"], true);
    let (code, reason) = short.expect_close_with_reason().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    // The instance is free for a session with a valid token at once.
    let mut next = session_with(&hub, &token("brief")).await;
    eventually(
        "the expired session's instance to be released",
        async || {
            let reply = next
                .call("system.register", json!({"instanceId": "brief"}))
                .await;
            reply.get("result").map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_extends_a_session_only_with_a_token_for_the_same_instance_and_role() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(secured(&redis)).await;
    // Two sessions whose tokens expire together.
    let mut keeper = session_with(&hub, &token_expiring_in("keeper", 1)).await;
    let mut loser = session_with(&hub, &token_expiring_in("loser", 1)).await;
    keeper.register("keeper").await;
    loser.register("loser").await;

    let exp = now_secs() + 600;
    let newer = raw_token(SECRET, json!({"sub": "keeper", "exp": exp}));
    let refreshed = keeper
        .result("system.auth.refresh", json!({ "token": newer }))
        .await;
    assert_eq!(refreshed, json!({ "expiresAt": exp * 1000 }));

    // Another instance's token, an observer's, a forged one: refused, the old grant stays.
    let error = loser
        .error(
            "system.auth.refresh",
            json!({ "token": token("someone-else") }),
        )
        .await;
    assert_error(&error, -32002, "a refresh must keep the instance and role");
    let error = loser
        .error("system.auth.refresh", json!({ "token": observer_token() }))
        .await;
    assert_error(&error, -32002, "an observer");
    let forged = raw_token(
        "another-secret-of-enough-length",
        json!({"sub": "loser", "exp": exp}),
    );
    let error = loser
        .error("system.auth.refresh", json!({ "token": forged }))
        .await;
    assert_error(&error, -32002, "the token is invalid");
    assert_eq!(loser.vote("loser", "refresh", "a", 3).await["voted"], true);

    // The refused session ends at its first token's expiry...
    let (code, reason) = loser.expect_close_with_reason().await;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    // ...and the refreshed one outlives it.
    let reply = keeper.vote("keeper", "refresh", "a", 3).await;
    assert_eq!(reply["voted"], true, "{reply}");
    assert_eq!(reply["voteCount"], 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_needs_a_session_and_a_secret() {
    let redis = RedisServer::start();
    let secured_hub = TestHub::start_with(secured(&redis)).await;
    let bearer = format!("Bearer {}", token("w1"));
    let call = request(1, "system.auth.refresh", json!({"token": token("w1")}));
    let (_, body) = post_rpc(secured_hub.addr, &[("Authorization", &bearer)], &call).await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_error(&reply["error"], -32600, "needs a WebSocket session");

    let open_hub = TestHub::start(&redis).await;
    let mut c = open_hub.client().await;
    let error = c
        .error("system.auth.refresh", json!({"token": token("w1")}))
        .await;
    assert_error(&error, -32600, "runs without --auth-secret");
    let error = c.error("system.auth.refresh", json!({"token": ""})).await;
    assert_eq!(error["data"]["field"], "token", "{error}");
}
