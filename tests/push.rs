//! Web Push against a push service of the test's own (a local HTTP server standing in for
//! the browser vendor's): each decision arrives encrypted so that only the subscription's
//! private key decrypts it, with a VAPID `Authorization` that verifies against
//! `GET /push/key`; 404 and 410 end a subscription; a hub killed mid-delivery leaves the
//! message to another hub; what a subscription may be, and when Web Push is off.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};

use common::http::http;
use common::receiver::{Answer, Received, Receiver};
use common::{
    HubProcess, RedisServer, TestHub, WsClient, assert_error, eventually, without_rate_limits,
};
use quorum_hub::config::Config;

/// The subject a hub without a secret signs with when it names none.
const DEFAULT_SUBJECT: &str = "mailto:quorum-hub@localhost";

/// A hub that pushes to a push service on loopback, retrying quickly.
fn config(redis: &RedisServer) -> Config {
    let mut config = without_rate_limits(redis);
    config.webhooks.allow_private = true;
    config.webhooks.timeout = Duration::from_millis(500);
    config.webhooks.retry_schedule = "0s,100ms,200ms,400ms,800ms,1s,1s,1s".parse().unwrap();
    config
}

/// What a browser holds for one subscription: its key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        let mut auth = [0u8; 16];
        getrandom::fill(&mut auth).unwrap();
        loop {
            let mut scalar = [0u8; 32];
            getrandom::fill(&mut scalar).unwrap();
            if let Ok(secret) = p256::SecretKey::from_slice(&scalar) {
                return Self { secret, auth };
            }
        }
    }

    /// `PushSubscription.toJSON()` for an endpoint.
    fn subscription(&self, endpoint: &str) -> Value {
        let point = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// The plaintext of a push message, if this browser's keys decrypt it.
    fn decrypt(&self, body: &[u8]) -> Option<Value> {
        let auth = web_push_native::Auth::clone_from_slice(&self.auth);
        let plain = web_push_native::decrypt(body.to_vec(), &self.secret, &auth).ok()?;
        Some(serde_json::from_slice(&plain).expect("the plaintext is JSON"))
    }
}

/// The hub's VAPID public key from `GET /push/key`.
async fn public_key(addr: std::net::SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/push/key", "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["publicKey"].as_str().unwrap().to_owned()
}

/// Checks a push request's headers and VAPID signature against the hub's public key and
/// the push service's origin; returns the JWT's claims.
fn assert_signed(request: &Received, public_key: &str, origin: &str) -> Value {
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("content-encoding"), "aes128gcm");
    assert_eq!(request.header("content-type"), "application/octet-stream");
    assert_eq!(request.header("ttl"), "86400");
    assert_eq!(request.header("urgency"), "high");
    let authorization = request.header("authorization");
    let rest = authorization
        .strip_prefix("vapid t=")
        .unwrap_or_else(|| panic!("not a VAPID authorization: {authorization:?}"));
    let (token, k) = rest.split_once(", k=").expect("t= and k=");
    assert_eq!(k, public_key, "k is the key GET /push/key gives");
    let point = URL_SAFE_NO_PAD.decode(public_key).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_ec_der(&point), &validation)
            .unwrap_or_else(|err| panic!("the VAPID JWT does not verify: {err}"))
            .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        exp > now && exp <= now + 24 * 3600,
        "exp within 24 h: {claims}"
    );
    claims
}

async fn subscribe(client: &mut WsClient, subscription: Value) -> Value {
    client
        .result(
            "system.push.subscribe",
            json!({ "subscription": subscription }),
        )
        .await
}

/// The subscriptions `system.push.list` shows, by id.
async fn listed(admin: &mut WsClient) -> BTreeMap<String, Value> {
    let list = admin.result("system.push.list", json!({})).await;
    list["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_decision_arrives_encrypted_for_the_subscription_and_signed_with_the_hubs_key() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    let service = Receiver::ok().await;
    let origin = format!("http://{}", service.addr);
    let browser = Browser::new();
    let key = public_key(hub.addr).await;
    assert_eq!(URL_SAFE_NO_PAD.decode(&key).unwrap().len(), 65);

    let mut client = hub.client().await;
    let endpoint = format!("{origin}/push/browser-1");
    let subscribed = subscribe(&mut client, browser.subscription(&endpoint)).await;
    assert_eq!(subscribed["done"], "subscribed", "{subscribed}");
    client.register("voter").await;
    let made = client.decide("voter", "upgrade").await;
    client
        .result(
            "system.quorum.vote",
            json!({"instanceId": "voter", "decision": "rollback", "value": "no",
                   "totalInstances": 3, "closeAfterMs": 200}),
        )
        .await;
    let expired = client.next_notification().await;
    assert_eq!(expired["method"], "quorum.decision.expired", "{expired}");

    let received = service.wait_for(2).await;
    assert_eq!(received.len(), 2, "one message per decision event");
    let mut messages = BTreeMap::new();
    for request in &received {
        assert_eq!(request.path, "/push/browser-1");
        let claims = assert_signed(request, &key, &origin);
        assert_eq!(claims["sub"], DEFAULT_SUBJECT);
        let message = browser
            .decrypt(&request.body)
            .expect("the subscription's keys decrypt the message");
        assert!(
            Browser::new().decrypt(&request.body).is_none(),
            "another browser's keys decrypt the message"
        );
        assert!(
            !String::from_utf8_lossy(&request.body).contains("upgrade"),
            "the body is sent in the clear"
        );
        messages.insert(message["type"].as_str().unwrap().to_owned(), message);
    }
    let made_message = &messages["quorum.decision.made"];
    assert_eq!(made_message["data"]["decision"], "upgrade");
    assert_eq!(made_message["data"]["value"], "a");
    assert_eq!(made_message["data"]["voteCount"], 1);
    assert_eq!(made_message["data"]["eventId"], made.as_str());
    let expired_message = &messages["quorum.decision.expired"];
    assert_eq!(expired_message["data"], expired["params"]);

    // The list shows the push service, never the browser's endpoint or keys.
    let list = listed(&mut client).await;
    assert_eq!(list.len(), 1);
    let shown = list.values().next().unwrap();
    assert_eq!(shown["pushService"], origin.as_str());
    assert!(!shown.to_string().contains("browser-1"), "{shown}");
    assert_eq!(shown["id"], subscribed["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_answering_410_or_404_ends_the_subscription() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    let service = Receiver::start(|_, request| match request.path.as_str() {
        "/gone" => Answer::Status(410, Vec::new()),
        "/unknown" => Answer::Status(404, Vec::new()),
        _ => Answer::Status(201, Vec::new()),
    })
    .await;
    let url = |path: &str| format!("http://{}{path}", service.addr);
    let mut client = hub.client().await;
    let gone = subscribe(&mut client, Browser::new().subscription(&url("/gone"))).await;
    let unknown = subscribe(&mut client, Browser::new().subscription(&url("/unknown"))).await;
    let kept = subscribe(&mut client, Browser::new().subscription(&url("/kept"))).await;
    assert_eq!(listed(&mut client).await.len(), 3);

    client.register("voter").await;
    client.decide("voter", "first").await;
    let ended = eventually("the 404 and 410 subscriptions removed", async || {
        let list = listed(&mut client).await;
        (list.len() == 1).then_some(list)
    })
    .await;
    assert!(
        ended.contains_key(kept["id"].as_str().unwrap()),
        "{ended:?}"
    );
    assert!(!ended.contains_key(gone["id"].as_str().unwrap()));
    assert!(!ended.contains_key(unknown["id"].as_str().unwrap()));

    // The next decision reaches the one left only.
    client.decide("voter", "second").await;
    eventually("the second decision at /kept", async || {
        let to_kept = service
            .received()
            .iter()
            .filter(|r| r.path == "/kept")
            .count();
        (to_kept == 2).then_some(())
    })
    .await;
    let paths: Vec<String> = service.received().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "/gone").count(),
        1,
        "{paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| *p == "/unknown").count(),
        1,
        "{paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_during_a_push_leaves_it_to_another_hub_with_the_same_key() {
    let redis = RedisServer::start();
    let service = Receiver::start(|n, _| {
        if n == 0 {
            Answer::Hang
        } else {
            Answer::Status(201, Vec::new())
        }
    })
    .await;
    let process = HubProcess::delivering_to_loopback(&redis).await;
    let key = public_key(process.addr).await;
    let browser = Browser::new();
    let endpoint = format!("http://{}/push/b", service.addr);
    let mut voter = WsClient::connect(&process.ws_url()).await;
    subscribe(&mut voter, browser.subscription(&endpoint)).await;
    voter.register("voter").await;
    let event = voter.decide("voter", "d1").await;
    let held = service.wait_for(1).await;
    assert_eq!(
        browser.decrypt(&held[0].body).unwrap()["data"]["eventId"],
        event.as_str()
    );
    // Killed (-9) while the push service holds its request.
    drop(voter);
    drop(process);

    let mut other = config(&redis);
    other.webhooks.timeout = Duration::from_secs(1);
    let hub = TestHub::start_with(other).await;
    assert_eq!(
        public_key(hub.addr).await,
        key,
        "every hub signs with the keyspace's key"
    );
    let received = service.wait_for(2).await;
    let origin = format!("http://{}", service.addr);
    assert_signed(&received[1], &key, &origin);
    let again = browser.decrypt(&received[1].body).unwrap();
    assert_eq!(
        again["data"]["eventId"],
        event.as_str(),
        "the other hub sent it"
    );
    let mut admin = hub.client().await;
    eventually("the message delivered", async || {
        let list = listed(&mut admin).await;
        let one = list.values().next()?;
        (one["pending"] == 0 && one["lastOutcome"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(service.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_checked_renewed_and_removed_by_its_endpoint() {
    let redis = RedisServer::start();
    let strict = TestHub::start_with(without_rate_limits(&redis)).await;
    let mut client = strict.client().await;
    let browser = Browser::new();
    let refuse = async |client: &mut WsClient, params: Value, says: &str| {
        let error = client.error("system.push.subscribe", params).await;
        assert_error(&error, -32602, says);
    };
    // Plain http, and loopback, need a push service under test (--webhook-allow-private).
    refuse(
        &mut client,
        json!({"subscription": browser.subscription("http://push.example/a")}),
        "https://",
    )
    .await;
    refuse(
        &mut client,
        json!({"subscription": browser.subscription("https://127.0.0.1/a")}),
        "--webhook-allow-private",
    )
    .await;
    let long = format!("https://push.example/{}", "a".repeat(1024));
    refuse(
        &mut client,
        json!({"subscription": browser.subscription(&long)}),
        "1024",
    )
    .await;
    let mut bad_key = browser.subscription("https://push.example/a");
    bad_key["keys"]["p256dh"] = json!(URL_SAFE_NO_PAD.encode([4u8; 65]));
    refuse(&mut client, json!({ "subscription": bad_key }), "p256dh").await;
    let mut bad_auth = browser.subscription("https://push.example/a");
    bad_auth["keys"]["auth"] = json!("AAAA");
    refuse(&mut client, json!({ "subscription": bad_auth }), "auth").await;
    refuse(&mut client, json!({}), "subscription is required").await;
    refuse(
        &mut client,
        json!({"subscription": browser.subscription("https://push.example/a"), "events": ["instance.*"]}),
        "matches no decision event",
    )
    .await;
    let mut extra = browser.subscription("https://push.example/a");
    extra["keys"]["extra"] = json!(1);
    refuse(&mut client, json!({ "subscription": extra }), "extra").await;
    assert!(
        listed(&mut client).await.is_empty(),
        "a refused subscription was kept"
    );
    // A field of the params themselves is named as it is.
    let error = client
        .error("system.push.unsubscribe", json!({"endpoint": 5}))
        .await;
    assert_error(&error, -32602, "endpoint must be a string");
    assert_eq!(error["data"]["field"], "endpoint", "{error}");

    // Subscribing again renews; unsubscribing by the endpoint removes.
    let endpoint = "https://push.example/browser";
    let first = subscribe(&mut client, browser.subscription(endpoint)).await;
    assert_eq!(first["done"], "subscribed");
    let params = json!({"subscription": Browser::new().subscription(endpoint),
                        "events": ["quorum.decision.made"]});
    let again = client.result("system.push.subscribe", params).await;
    assert_eq!(again["done"], "renewed");
    assert_eq!(again["id"], first["id"]);
    let list = listed(&mut client).await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[first["id"].as_str().unwrap()]["events"],
        json!(["quorum.decision.made"])
    );
    let removed = client
        .result("system.push.unsubscribe", json!({ "endpoint": endpoint }))
        .await;
    assert_eq!(removed, json!({"id": first["id"], "done": "removed"}));
    let absent = client
        .result("system.push.unsubscribe", json!({ "endpoint": endpoint }))
        .await;
    assert_eq!(absent["done"], "absent");
    assert!(listed(&mut client).await.is_empty());

    // The keyspace holds a bounded number of subscriptions.
    for n in 0..200 {
        let endpoint = format!("https://push.example/{n}");
        subscribe(&mut client, browser.subscription(&endpoint)).await;
    }
    let error = client
        .error(
            "system.push.subscribe",
            json!({"subscription": browser.subscription("https://push.example/one-more")}),
        )
        .await;
    assert_error(&error, -32602, "maximum of 200");
    assert_eq!(listed(&mut client).await.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_is_off_on_a_hub_with_a_secret_and_no_subject() {
    let redis = RedisServer::start();
    let mut config = without_rate_limits(&redis);
    config.auth_secret = Some("a-secret-of-at-least-32-bytes-for-tests".into());
    let hub = TestHub::start_with(config.clone()).await;
    let (status, body) = http(hub.addr, "GET", "/push/key", "").await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--vapid-subject"), "{body}");
    let authority =
        quorum_hub::auth::Authority::new("a-secret-of-at-least-32-bytes-for-tests").unwrap();
    let observer = authority
        .mint(None, true, Duration::from_secs(600))
        .unwrap();
    let mut client = WsClient::connect(&format!("{}?token={observer}", hub.ws_url())).await;
    let error = client
        .error(
            "system.push.subscribe",
            json!({"subscription": Browser::new().subscription("https://push.example/a")}),
        )
        .await;
    assert_error(&error, -32601, "--vapid-subject");

    // With a subject it is on, and an observer may subscribe (but not list).
    config.push.vapid_subject = Some("mailto:ops@example.com".into());
    let on = TestHub::start_with(config.clone()).await;
    assert_eq!(public_key(on.addr).await.len(), 87);
    let mut client = WsClient::connect(&format!("{}?token={observer}", on.ws_url())).await;
    let subscribed = subscribe(
        &mut client,
        Browser::new().subscription("https://push.example/a"),
    )
    .await;
    assert_eq!(subscribed["done"], "subscribed");
    let error = client.error("system.push.list", json!({})).await;
    assert_error(&error, -32002, "admin");
}
