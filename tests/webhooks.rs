//! Webhooks against real receivers: every decision made and expired reaches every endpoint
//! once, signed; receivers that are down, busy, gone, redirecting or hanging; a hub killed
//! mid-attempt and a decision made while no hub runs; private addresses; who may manage
//! endpoints, and secrets that never show.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use common::receiver::{Answer, Receiver, signed_with};
use common::{
    HubProcess, RedisServer, TestHub, WsClient, assert_error, eventually, without_rate_limits,
};
use quorum_hub::config::Config;

/// A hub that delivers to receivers on loopback, retrying quickly.
fn config(redis: &RedisServer) -> Config {
    let mut config = without_rate_limits(redis);
    config.webhooks.allow_private = true;
    config.webhooks.timeout = Duration::from_millis(500);
    config.webhooks.retry_schedule = "0s,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s"
        .parse()
        .unwrap();
    config
}

/// A receiver that holds its first request unanswered and answers 200 to the rest.
async fn holds_the_first() -> Receiver {
    Receiver::start(|n, _| {
        if n == 0 {
            Answer::Hang
        } else {
            Answer::Status(200, Vec::new())
        }
    })
    .await
}

/// Adds an endpoint; returns its id and secret.
async fn add(admin: &mut WsClient, params: Value) -> (String, String) {
    let added = admin.result("system.webhooks.add", params).await;
    (
        added["id"].as_str().unwrap().to_owned(),
        added["secret"].as_str().unwrap().to_owned(),
    )
}

/// The endpoint `id` as `system.webhooks.list` shows it.
async fn listed(admin: &mut WsClient, id: &str) -> Value {
    let list = admin.result("system.webhooks.list", json!({})).await;
    list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until nothing waits for endpoint `id`.
async fn drained(admin: &mut WsClient, id: &str) {
    eventually(&format!("no deliveries waiting for {id}"), async || {
        (listed(admin, id).await["pending"] == 0).then_some(())
    })
    .await;
}

/// The attempt log of endpoint `id`, oldest first.
async fn attempts(admin: &mut WsClient, id: &str) -> Vec<Value> {
    let page = admin
        .result(
            "system.webhooks.deliveries",
            json!({"id": id, "limit": 1000}),
        )
        .await;
    let mut attempts = page["attempts"].as_array().unwrap().clone();
    attempts.reverse();
    attempts
}

/// Makes a decision that expires: one vote of three, closing after 200 ms. Returns its
/// event id as `watcher` receives it.
async fn expire(voter: &mut WsClient, instance: &str, decision: &str) -> String {
    voter
        .result(
            "system.quorum.vote",
            json!({"instanceId": instance, "decision": decision, "value": "a",
                   "totalInstances": 3, "closeAfterMs": 200}),
        )
        .await;
    let event = voter.next_notification().await;
    assert_eq!(event["method"], "quorum.decision.expired", "{event}");
    event["params"]["eventId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_made_and_expired_reaches_two_endpoints_exactly_once_signed() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    let (first, second) = (Receiver::ok().await, Receiver::ok().await);
    let mut admin = hub.client().await;
    let (first_id, first_secret) = add(
        &mut admin,
        json!({"url": first.url(), "description": "deploys"}),
    )
    .await;
    let (second_id, second_secret) = add(
        &mut admin,
        json!({"url": second.url(), "events": ["quorum.decision.*"]}),
    )
    .await;
    assert!(first_secret.starts_with("whsec_"), "{first_secret}");
    assert_ne!(first_secret, second_secret);
    // An endpoint that asked for decisions made only.
    let made_only = Receiver::ok().await;
    let (made_only_id, _) = add(
        &mut admin,
        json!({"url": made_only.url(), "events": ["quorum.decision.made"]}),
    )
    .await;

    let mut voter = hub.client_as("voter").await;
    let mut events = Vec::new();
    for n in 0..3 {
        let id = voter.decide("voter", &format!("deploy-{n}")).await;
        events.push((id, "quorum.decision.made"));
    }
    let expired = expire(&mut voter, "voter", "late").await;
    events.push((expired, "quorum.decision.expired"));

    for (receiver, id, secret, other) in [
        (&first, &first_id, &first_secret, &second_secret),
        (&second, &second_id, &second_secret, &first_secret),
    ] {
        receiver.wait_for(events.len()).await;
        drained(&mut admin, id).await;
        let received = receiver.received();
        let ids: Vec<&str> = received.iter().map(|r| r.id()).collect();
        assert_eq!(ids.len(), events.len(), "each event once: {ids:?}");
        let expected: BTreeSet<&str> = events.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.iter().copied().collect::<BTreeSet<_>>(), expected);
        for request in &received {
            assert_eq!(
                (request.method.as_str(), request.path.as_str()),
                ("POST", "/hook")
            );
            assert_eq!(request.header("content-type"), "application/json");
            assert!(
                request.header("user-agent").starts_with("quorum-hub/"),
                "{:?}",
                request.headers
            );
            assert!(signed_with(request, secret), "{:?}", request.headers);
            assert!(
                !signed_with(request, other),
                "signed with the other endpoint's secret"
            );
            let body = request.json();
            let (_, kind) = events.iter().find(|(id, _)| id == request.id()).unwrap();
            assert_eq!(body["type"], *kind, "{body}");
            assert_eq!(body["data"]["eventId"], request.id(), "{body}");
            let timestamp = body["timestamp"].as_str().unwrap();
            assert!(
                timestamp.len() == 24 && timestamp.ends_with('Z'),
                "{timestamp}"
            );
        }
        let endpoint = listed(&mut admin, id).await;
        assert_eq!(endpoint["state"], "enabled", "{endpoint}");
        assert_eq!(
            endpoint["lastAttempt"]["outcome"], "delivered",
            "{endpoint}"
        );
        assert_eq!(endpoint["lastAttempt"]["status"], 200, "{endpoint}");
    }
    // The expired decision is passed over for it, not delivered.
    drained(&mut admin, &made_only_id).await;
    let made: BTreeSet<String> = events
        .iter()
        .filter(|(_, kind)| *kind == "quorum.decision.made")
        .map(|(id, _)| id.clone())
        .collect();
    let got: Vec<String> = made_only
        .received()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(got.len(), made.len(), "{got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), made);
    let list = admin.result("system.webhooks.list", json!({})).await;
    assert_eq!(
        listed(&mut admin, &first_id).await["description"],
        "deploys"
    );
    assert_eq!(
        listed(&mut admin, &first_id).await["events"],
        json!(["quorum.decision.made", "quorum.decision.expired"])
    );
    let text = list.to_string();
    assert!(
        !text.contains(&first_secret) && !text.contains("secret"),
        "the list shows a secret: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_busy_gets_every_event_under_the_same_id_on_every_attempt() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    // A port nothing listens on, for now.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut admin = hub.client().await;
    let (id, secret) = add(&mut admin, json!({"url": format!("http://{addr}/hook")})).await;
    let mut voter = hub.client_as("voter").await;
    let made = [
        voter.decide("voter", "d1").await,
        voter.decide("voter", "d2").await,
    ];
    eventually("attempts refused while the receiver is down", async || {
        let refused = attempts(&mut admin, &id)
            .await
            .iter()
            .filter(|a| a["error"].as_str().is_some_and(|e| e.contains("refused")))
            .count();
        (refused >= 4).then_some(())
    })
    .await;
    // Up, but busy for its first two requests.
    let receiver = Receiver::start_on(addr, |n, _| {
        if n < 2 {
            Answer::Status(503, vec![("retry-after", "1".into())])
        } else {
            Answer::Status(200, Vec::new())
        }
    })
    .await;
    drained(&mut admin, &id).await;
    let received = receiver.received();
    assert_eq!(received.len(), 4, "two busy answers, then each event once");
    let mut delivered = BTreeSet::new();
    for (n, request) in received.iter().enumerate() {
        assert!(
            made.iter().any(|id| id == request.id()),
            "{:?}",
            request.id()
        );
        assert!(signed_with(request, &secret));
        if n >= 2 {
            delivered.insert(request.id().to_owned());
        }
    }
    assert_eq!(delivered, made.iter().cloned().collect::<BTreeSet<_>>());
    // Each event's attempts, in order: refused, then 503 or delivered, numbered 1, 2, ...
    let log = attempts(&mut admin, &id).await;
    for event in &made {
        let mine: Vec<&Value> = log.iter().filter(|a| a["eventId"] == *event).collect();
        let numbers: Vec<u64> = mine
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as u64).collect::<Vec<_>>(),
            "{mine:?}"
        );
        assert!(mine.len() >= 3, "refused, then answered: {mine:?}");
        assert!(
            mine[0]["error"].as_str().unwrap().contains("refused"),
            "{mine:?}"
        );
        assert_eq!(mine.last().unwrap()["outcome"], "delivered", "{mine:?}");
        assert_eq!(mine.last().unwrap()["status"], 200, "{mine:?}");
    }
    let busy: Vec<&Value> = log.iter().filter(|a| a["status"] == 503).collect();
    assert_eq!(busy.len(), 2, "{log:?}");
    assert!(busy.iter().all(|a| a["outcome"] == "retry"), "{busy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_a_redirect_is_not_followed_and_a_hanging_receiver_times_out() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    let gone = Receiver::start(|n, _| {
        if n == 0 {
            Answer::Status(410, Vec::new())
        } else {
            Answer::Status(200, Vec::new())
        }
    })
    .await;
    let target = Receiver::ok().await;
    let location = target.url();
    let redirect =
        Receiver::start(move |_, _| Answer::Status(301, vec![("location", location.clone())]))
            .await;
    let hanging = Receiver::start(|_, _| Answer::Hang).await;
    let mut admin = hub.client().await;
    let (gone_id, _) = add(&mut admin, json!({"url": gone.url()})).await;
    let (redirect_id, _) = add(&mut admin, json!({"url": redirect.url()})).await;
    let (hanging_id, _) = add(&mut admin, json!({"url": hanging.url()})).await;
    let mut voter = hub.client_as("voter").await;
    let first = voter.decide("voter", "d1").await;

    let endpoint = eventually(
        "the endpoint that answered 410 to be disabled",
        async || {
            let endpoint = listed(&mut admin, &gone_id).await;
            (endpoint["state"] == "disabled").then_some(endpoint)
        },
    )
    .await;
    assert!(
        endpoint["disabledReason"].as_str().unwrap().contains("410"),
        "{endpoint}"
    );
    assert_eq!(
        endpoint["pending"], 1,
        "the delivery waits for the endpoint: {endpoint}"
    );
    let second = voter.decide("voter", "d2").await;
    eventually("the redirect answered twice", async || {
        (redirect.received().len() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        gone.received().len(),
        1,
        "a disabled endpoint gets nothing more"
    );
    assert!(target.received().is_empty(), "the redirect was followed");
    let log = attempts(&mut admin, &redirect_id).await;
    assert_eq!(log[0]["status"], 301, "{log:?}");
    assert_eq!(log[0]["outcome"], "retry", "{log:?}");

    // Enabled again, it gets what waited and what came since.
    let enabled = admin
        .result("system.webhooks.enable", json!({"id": gone_id}))
        .await;
    assert_eq!(enabled["done"], "enabled");
    drained(&mut admin, &gone_id).await;
    let ids: BTreeSet<String> = gone.received()[1..]
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(ids, BTreeSet::from([first.clone(), second]));

    let timed_out = eventually("the hanging receiver's attempt to time out", async || {
        attempts(&mut admin, &hanging_id)
            .await
            .into_iter()
            .find(|a| a["eventId"] == first.as_str())
    })
    .await;
    let error = timed_out["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{timed_out}");
    assert_eq!(timed_out["outcome"], "retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_also_behind_a_name() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.webhooks.allow_private = false;
    let hub = TestHub::start_with(config).await;
    let receiver = Receiver::ok().await;
    let mut admin = hub.client().await;
    let error = admin
        .error("system.webhooks.add", json!({"url": receiver.url()}))
        .await;
    assert_error(&error, -32602, "private");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("--webhook-allow-private"),
        "{error}"
    );
    for (url, says) in [
        ("ftp://example.com/hook", "http"),
        ("http://user:pass@example.com/hook", ""),
    ] {
        let error = admin
            .error("system.webhooks.add", json!({"url": url}))
            .await;
        assert_eq!(error["code"], -32602, "{url}: {error}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    // A name is checked where it resolves, on every attempt.
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let (id, _) = add(&mut admin, json!({"url": by_name})).await;
    let mut voter = hub.client_as("voter").await;
    voter.decide("voter", "d1").await;
    let attempt = eventually("the attempt to be refused", async || {
        attempts(&mut admin, &id).await.into_iter().next()
    })
    .await;
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("private") && error.contains("127.0.0.1"),
        "{attempt}"
    );
    assert!(
        receiver.received().is_empty(),
        "a private address was reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_webhooks_and_secrets_never_show() {
    let redis = RedisServer::start();
    let secret = "a-secret-of-enough-length";
    let mut config = config(&redis);
    config.auth_secret = Some(secret.into());
    let hub = TestHub::start_with(config).await;
    let authority = quorum_hub::auth::Authority::new(secret).unwrap();
    let ttl = Duration::from_secs(600);
    let connect = async |token: String| {
        WsClient::connect_with(
            &hub.ws_url(),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .unwrap()
    };
    let receiver = Receiver::ok().await;
    for token in [
        authority.mint(Some("worker"), false, ttl).unwrap(),
        authority.mint(None, true, ttl).unwrap(),
    ] {
        let mut client = connect(token).await;
        for (method, params) in [
            ("system.webhooks.add", json!({"url": receiver.url()})),
            ("system.webhooks.list", json!({})),
            ("system.webhooks.remove", json!({"id": "wh_1"})),
        ] {
            let error = client.error(method, params).await;
            assert_error(&error, -32002, "admin token");
        }
    }
    let mut admin = connect(authority.mint_admin(ttl).unwrap()).await;
    let (id, endpoint_secret) = add(&mut admin, json!({"url": receiver.url()})).await;
    let error = admin
        .error(
            "system.quorum.vote",
            json!({"instanceId": "admin", "decision": "d", "value": "a"}),
        )
        .await;
    assert_error(&error, -32002, "admin token");
    let rotated = admin
        .result("system.webhooks.rotate", json!({"id": id}))
        .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, endpoint_secret);
    // For a day after a rotation, deliveries carry both signatures.
    let mut voter = connect(authority.mint(Some("voter"), false, ttl).unwrap()).await;
    voter.register("voter").await;
    voter.decide("voter", "d1").await;
    let request = &receiver.wait_for(1).await[0];
    assert!(signed_with(request, &new_secret));
    assert!(signed_with(request, &endpoint_secret));
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);

    let list = admin
        .result("system.webhooks.list", json!({}))
        .await
        .to_string();
    let (_, metrics) = common::http(hub.addr, "GET", "/metrics", "").await.unwrap();
    for secret in [&endpoint_secret, &new_secret] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!list.contains(key), "list shows a secret: {list}");
        assert!(!metrics.contains(key), "metrics show a secret");
    }
    assert!(
        metrics.contains("quorum_webhook_attempts_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    let removed = admin
        .result("system.webhooks.remove", json!({"id": id}))
        .await;
    assert_eq!(removed["done"], "removed");
    let error = admin
        .error("system.webhooks.remove", json!({"id": id}))
        .await;
    assert_error(&error, -32004, "no webhook endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_during_an_attempt_leaves_the_delivery_to_another_hub() {
    let redis = RedisServer::start();
    let receiver = holds_the_first().await;
    let process = HubProcess::delivering_to_loopback(&redis).await;
    let mut admin = WsClient::connect(&process.ws_url()).await;
    let (id, secret) = add(&mut admin, json!({"url": receiver.url()})).await;
    let mut voter = WsClient::connect(&process.ws_url()).await;
    voter.register("voter").await;
    let event = voter.decide("voter", "d1").await;
    let held = receiver.wait_for(1).await;
    assert_eq!(held[0].id(), event);
    let key = secret.trim_start_matches("whsec_");
    assert!(process.logged(key).is_empty(), "the log shows the secret");
    // Killed (-9) while the receiver holds its request.
    drop((admin, voter));
    drop(process);

    let mut other = config(&redis);
    other.webhooks.timeout = Duration::from_secs(1);
    let hub = TestHub::start_with(other).await;
    let received = receiver.wait_for(2).await;
    assert_eq!(
        received[1].id(),
        event,
        "the other hub made the same delivery"
    );
    let mut admin = hub.client().await;
    drained(&mut admin, &id).await;
    let log = attempts(&mut admin, &id).await;
    assert_eq!(log.len(), 1, "the killed hub recorded nothing: {log:?}");
    assert_eq!(log[0]["attempt"], 2, "{log:?}");
    assert_eq!(log[0]["outcome"], "delivered", "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_no_hub_runs_is_delivered_when_one_starts() {
    // One Redis whatever the mode: the vote script is run here with one Redis's keys.
    let redis = RedisServer::start_single();
    let receiver = Receiver::ok().await;
    let hub = TestHub::start_with(config(&redis)).await;
    let mut admin = hub.client().await;
    let (id, _) = add(&mut admin, json!({"url": receiver.url()})).await;
    drop(admin);
    hub.stop().await;
    // The vote script, run as a hub runs it, with no hub up: one vote of one decides.
    let sha: String = redis
        .query(&["SCRIPT", "LOAD", quorum_hub::bench_seams::VOTE_SCRIPT])
        .await;
    let command: Vec<String> = quorum_hub::bench_seams::vote_benchmark_command(
        &sha,
        1,
        quorum_hub::config::RateLimit::OFF,
    )
    .into_iter()
    .map(|arg| arg.replace("__rand_int__", "1"))
    .collect();
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let _: redis::Value = redis.query(&args).await;
    let logged: Vec<(String, HashMap<String, String>)> = redis
        .query(&["XRANGE", "cb:stream:quorum.decision.made", "-", "+"])
        .await;
    assert_eq!(logged.len(), 1, "the decision is in the log");
    assert!(receiver.received().is_empty());

    let hub = TestHub::start_with(config(&redis)).await;
    let received = receiver.wait_for(1).await;
    assert_eq!(received[0].id(), logged[0].0);
    assert_eq!(received[0].json()["data"]["decision"], "rb1");
    let mut admin = hub.client().await;
    drained(&mut admin, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_given_up_per_event_and_disabled_after_failing_long_enough() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.webhooks.retry_schedule = "0s,100ms".parse().unwrap();
    config.webhooks.disable_after = Duration::from_secs(1);
    let hub = TestHub::start_with(config).await;
    let failing = Receiver::start(|_, _| Answer::Status(500, Vec::new())).await;
    let mut admin = hub.client().await;
    let (id, _) = add(&mut admin, json!({"url": failing.url()})).await;
    let mut voter = hub.client_as("voter").await;
    let first = voter.decide("voter", "d1").await;
    let given_up = eventually("the first event to be given up", async || {
        attempts(&mut admin, &id)
            .await
            .into_iter()
            .find(|a| a["eventId"] == first.as_str() && a["outcome"] == "given_up")
    })
    .await;
    assert_eq!(
        given_up["attempt"], 2,
        "the schedule has two attempts: {given_up}"
    );
    assert_eq!(given_up["status"], 500);
    // Failing on for longer than --webhook-disable-after disables the endpoint.
    let mut n = 1;
    let endpoint = eventually("the endpoint to be disabled", async || {
        let endpoint = listed(&mut admin, &id).await;
        if endpoint["state"] == "disabled" {
            return Some(endpoint);
        }
        n += 1;
        voter.decide("voter", &format!("d{n}")).await;
        None
    })
    .await;
    assert!(
        endpoint["disabledReason"]
            .as_str()
            .unwrap()
            .contains("every attempt failed"),
        "{endpoint}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_a_receiver_holds_does_not_hold_back_the_next() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    let receiver = holds_the_first().await;
    let mut admin = hub.client().await;
    add(&mut admin, json!({"url": receiver.url()})).await;
    let mut voter = hub.client_as("voter").await;
    let held = voter.decide("voter", "d1").await;
    receiver.wait_for(1).await;
    let next = voter.decide("voter", "d2").await;
    let received = receiver.wait_for(2).await;
    assert_eq!(
        (received[0].id(), received[1].id()),
        (held.as_str(), next.as_str()),
        "the second event went out while the first was held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_given_at_start_are_added_once_for_every_hub() {
    let redis = RedisServer::start();
    let receiver = Receiver::ok().await;
    let dir = common::short_tempdir();
    let secret_file = dir.path().join("webhook-secret");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let mut config = config(&redis);
    config.webhooks.urls = vec![receiver.url()];
    config.webhooks.secret_file = Some(secret_file);
    let first = TestHub::start_with(config.clone()).await;
    let second = TestHub::start_with(config).await;
    let mut admin = second.client().await;
    let list = eventually("the endpoint given at start", async || {
        let list = admin.result("system.webhooks.list", json!({})).await;
        (list["webhooks"].as_array().unwrap().len() == 1).then_some(list)
    })
    .await;
    let endpoint = &list["webhooks"][0];
    assert_eq!(endpoint["url"], receiver.url(), "{endpoint}");
    let mut voter = first.client_as("voter").await;
    let event = voter.decide("voter", "d1").await;
    let request = &receiver.wait_for(1).await[0];
    assert_eq!(request.id(), event);
    assert!(
        signed_with(request, secret),
        "signed with the secret file's secret"
    );
    let list = admin.result("system.webhooks.list", json!({})).await;
    assert_eq!(
        list["webhooks"].as_array().unwrap().len(),
        1,
        "added once: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_in_flight_is_made_by_one_hub_only() {
    let redis = RedisServer::start();
    let mut config = config(&redis);
    config.webhooks.timeout = Duration::from_secs(5);
    // Both hubs go round several times while the receiver holds the request.
    let receiver = Receiver::start(|_, _| Answer::Slow(Duration::from_millis(2500), 200)).await;
    let first = TestHub::start_with(config.clone()).await;
    let _second = TestHub::start_with(config).await;
    let mut admin = first.client().await;
    let (id, _) = add(&mut admin, json!({"url": receiver.url()})).await;
    let mut voter = first.client_as("voter").await;
    let event = voter.decide("voter", "d1").await;
    let log = eventually("the delivery to be recorded", async || {
        let log = attempts(&mut admin, &id).await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!((log.len(), &log[0]["attempt"]), (1, &json!(1)), "{log:?}");
    assert_eq!(log[0]["outcome"], "delivered", "{log:?}");
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.id().to_owned())
        .collect();
    assert_eq!(ids, [event], "attempted more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_log_no_longer_holds_are_replaced_by_one_incomplete_delivery() {
    let redis = RedisServer::start();
    let hub = TestHub::start_with(config(&redis)).await;
    // Gone at first: the endpoint is disabled and takes nothing from the log meanwhile.
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            Answer::Status(410, Vec::new())
        } else {
            Answer::Status(200, Vec::new())
        }
    })
    .await;
    let mut admin = hub.client().await;
    let (id, _) = add(&mut admin, json!({"url": receiver.url()})).await;
    let mut voter = hub.client_as("voter").await;
    let first = voter.decide("voter", "d1").await;
    eventually("the endpoint to be disabled", async || {
        (listed(&mut admin, &id).await["state"] == "disabled").then_some(())
    })
    .await;
    let missed = voter.decide("voter", "d2").await;
    // The log's cap trims the oldest events; here everything so far goes at once.
    let log = if redis.is_cluster() {
        "cb:{events}:stream"
    } else {
        "cb:stream:quorum.decision.made"
    };
    let _: u64 = redis.query(&["XTRIM", log, "MAXLEN", "0"]).await;
    let after = voter.decide("voter", "d3").await;
    admin
        .result("system.webhooks.enable", json!({"id": id}))
        .await;
    let received = receiver.wait_for(3).await;
    // The notice covers the first event too: it got 410 and waited, and went with the log.
    let (ms, seq) = first.split_once('-').unwrap();
    let before_first = match seq.parse::<u64>().unwrap() {
        0 => format!("{}-{}", ms.parse::<u64>().unwrap() - 1, u64::MAX),
        seq => format!("{ms}-{}", seq - 1),
    };
    // Deliveries go out side by side: receivers order them by event id, not arrival.
    let kinds: BTreeSet<(String, String)> = received[1..]
        .iter()
        .map(|r| {
            (
                r.json()["type"].as_str().unwrap().to_owned(),
                r.id().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            (
                "system.events.incomplete".to_owned(),
                format!("incomplete-{before_first}")
            ),
            ("quorum.decision.made".to_owned(), after.clone()),
        ]),
        "the events the log lost ({first}, {missed}) are replaced by one notice"
    );
    let notice = received[1..]
        .iter()
        .find(|r| r.id().starts_with("incomplete-"))
        .unwrap()
        .json();
    assert_eq!(notice["data"]["since"], before_first.as_str(), "{notice}");
    assert_eq!(notice["data"]["reason"], "trimmed", "{notice}");
    let log = eventually("both deliveries recorded", async || {
        let log = attempts(&mut admin, &id).await;
        (log.iter().filter(|a| a["outcome"] == "delivered").count() == 2).then_some(log)
    })
    .await;
    drained(&mut admin, &id).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "one notice, not one per lost event: {log:?}"
    );
}
