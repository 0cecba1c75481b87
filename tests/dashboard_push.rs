//! What a browser hears besides the dashboard's WebSocket, in a real headless Chromium: an
//! `EventSource` on the dashboard's origin receives a decision from `GET /events`; the
//! dashboard's service worker shows a notification for a decision pushed to it, and the
//! page offers Web Push once notifications are allowed.

mod common;

use common::RedisServer;
use common::browser::{Browser, Page, dashboard_hub, open_dashboard};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_on_the_dashboards_origin_receives_each_decision_with_its_id() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;
    browser
        .eval(
            &page,
            "window.heard = []; window.source = new EventSource('/events');
             for (const name of ['quorum.decision.made', 'quorum.decision.expired'])
               source.addEventListener(name, (e) => heard.push({name, id: e.lastEventId, data: JSON.parse(e.data)}));
             true",
        )
        .await;
    browser
        .wait_for(&page, "the stream to open", "source.readyState === 1")
        .await;

    let mut agent = hub.client_as("agent").await;
    let first = agent.decide("agent", "sse-first").await;
    let second = agent.decide("agent", "sse-second").await;
    let heard = browser
        .wait_for(&page, "both decisions heard", "heard.length >= 2 && heard")
        .await;
    let heard: Vec<(String, String, String)> = heard
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
                e["data"]["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        heard,
        [
            ("quorum.decision.made".into(), first, "sse-first".into()),
            ("quorum.decision.made".into(), second, "sse-second".into()),
        ],
        "each decision once, in order, with its event id"
    );
}

/// The id of the service worker registration DevTools reports once a worker is activated
/// and running.
async fn active_worker(browser: &mut Browser) -> String {
    let activated = |v: &&Value| v["runningStatus"] == "running" && v["status"] == "activated";
    let update = browser
        .event("ServiceWorker.workerVersionUpdated", |params: &Value| {
            params["versions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| activated(&v))
        })
        .await;
    let versions = update["versions"].as_array().unwrap();
    let version = versions.iter().find(activated).unwrap();
    version["registrationId"].as_str().unwrap().to_owned()
}

/// Pushes `data` to the service worker until `shown` (JavaScript over the registration's
/// notifications) is truthy, and returns its value. A worker reported activated may not take
/// a push yet; one that took it shows the notification within a second.
async fn push_until_shown(
    browser: &mut Browser,
    page: &Page,
    origin: &str,
    registration: &str,
    data: &str,
    shown: &str,
) -> Value {
    let check = format!(
        "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ({shown})(ns))"
    );
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        browser
            .call(
                Some(page.session()),
                "ServiceWorker.deliverPushMessage",
                json!({"origin": origin, "registrationId": registration, "data": data}),
            )
            .await;
        let pushed = tokio::time::Instant::now();
        while pushed.elapsed() < std::time::Duration::from_secs(1) {
            let value = browser.eval(page, &check).await;
            if !(value.is_null() || value == json!(false)) {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification shown for {data} ({shown})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_worker_shows_a_pushed_decision_and_the_page_offers_web_push() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let origin = format!("http://{}", hub.addr);
    let mut browser = Browser::launch().await;
    browser
        .call(
            None,
            "Browser.grantPermissions",
            json!({"origin": origin, "permissions": ["notifications"]}),
        )
        .await;
    let page = open_dashboard(&mut browser, &hub).await;
    // Notifications are allowed: the page offers Web Push at once.
    browser
        .wait_for(
            &page,
            "the Web Push control",
            "!document.getElementById('push-control').hidden",
        )
        .await;

    browser
        .call(Some(page.session()), "ServiceWorker.enable", json!({}))
        .await;
    browser
        .eval(
            &page,
            "navigator.serviceWorker.register('sw.js').then(() => navigator.serviceWorker.ready).then(r => r.scope)",
        )
        .await;
    let registration = active_worker(&mut browser).await;

    // What the hub sends (the webhook body), as the push service hands it to the browser.
    let message = json!({
        "type": "quorum.decision.made",
        "timestamp": "2026-12-06T12:00:00.000Z",
        "data": {"decision": "deploy-v2", "value": "approve", "voteCount": 3, "quorum": 3,
                 "totalInstances": 5, "eventId": "1-0", "timestamp": 1},
    });
    let shown = push_until_shown(
        &mut browser,
        &page,
        &origin,
        &registration,
        &message.to_string(),
        "ns => ns.length > 0 && ns.map(n => ({title: n.title, body: n.body, tag: n.tag}))",
    )
    .await;
    assert_eq!(
        shown,
        json!([{"title": "Decided: deploy-v2", "body": "approve (3 of 5 votes)", "tag": "decision:deploy-v2"}])
    );

    // A message that is not one of the hub's shows nothing; an expiry of the same decision
    // replaces its notification.
    browser
        .call(
            Some(page.session()),
            "ServiceWorker.deliverPushMessage",
            json!({"origin": origin, "registrationId": registration, "data": "not json"}),
        )
        .await;
    let expiry = json!({"type": "quorum.decision.expired",
                        "data": {"decision": "deploy-v2", "voteCount": 1, "quorum": 3, "totalInstances": 5}});
    let shown = push_until_shown(
        &mut browser,
        &page,
        &origin,
        &registration,
        &expiry.to_string(),
        "ns => ns.some(n => n.title.startsWith('Expired')) && ns.map(n => ({title: n.title, body: n.body}))",
    )
    .await;
    assert_eq!(
        shown,
        json!([{"title": "Expired: deploy-v2", "body": "no quorum (1 of 5 votes)"}])
    );
}
