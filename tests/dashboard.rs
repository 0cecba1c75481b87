//! The dashboard in a real headless Chromium: live connection, a simulation run from the
//! page, decisions made elsewhere, two pages at once, and hostile strings shown as text.

mod common;

use std::path::PathBuf;

use common::browser::{Browser, Page};
use common::{RedisServer, TestHub};
use quorum_hub::config::Config;
use serde_json::json;

async fn dashboard_hub(redis: &RedisServer) -> TestHub {
    let mut config = Config::with_redis(redis.url());
    config.web_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-demo");
    TestHub::start_with(config).await
}

async fn open_dashboard(browser: &mut Browser, hub: &TestHub) -> Page {
    let page = browser.open(&format!("http://{}/", hub.addr)).await;
    browser
        .wait_for(
            &page,
            "the page's socket to connect",
            "document.getElementById('conn-state')?.dataset.state === 'connected'",
        )
        .await;
    page
}

/// JavaScript that finds the feed entry for `decision` and returns its value, if any.
fn feed_value(decision: &str) -> String {
    format!(
        "[...document.querySelectorAll('#feed li')].find(li => li.dataset.decision === {d})?.dataset.value ?? ''",
        d = json!(decision)
    )
}

/// JavaScript that returns the decision card for `decision` as plain data, if shown.
fn card(decision: &str) -> String {
    format!(
        "(() => {{ const c = [...document.querySelectorAll('#decisions .decision')].find(c => c.dataset.decision === {d});
            if (!c) return null;
            return {{ reached: c.dataset.quorumReached, final: c.dataset.final, quorum: Number(c.dataset.quorum),
                      title: c.querySelector('h3').textContent,
                      total: Number(c.querySelector('.bar-row.total').dataset.count),
                      bars: [...c.querySelectorAll('.bar-row:not(.total)')].map(b => ({{ value: b.dataset.value, count: Number(b.dataset.count), winner: b.classList.contains('winner') }})) }}; }})()",
        d = json!(decision)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulation_and_an_outside_decision_land_on_every_open_page() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;
    let second = open_dashboard(&mut browser, &hub).await;

    // Run a simulation from the page: 5 real sessions, 4 approve and 1 deny. The first
    // three recorded votes decide (quorum 3 of 5); whatever their order, approve wins.
    browser
        .eval(
            &page,
            "document.getElementById('sim-decision').value = 'sim-deploy';
             document.getElementById('sim-total').value = '5';
             document.getElementById('sim-spread').value = 'approve:4, deny:1';
             document.getElementById('sim-run').click(); true",
        )
        .await;
    let value = browser
        .wait_for(
            &page,
            "the simulated decision in the feed",
            &feed_value("sim-deploy"),
        )
        .await;
    assert_eq!(value, "approve");
    let shown = browser
        .wait_for(&page, "the decided card with its tally", &format!("(() => {{ const c = {}; return c && c.reached === 'true' && c.bars.reduce((n, b) => n + b.count, 0) >= 3 ? c : null; }})()", card("sim-deploy")))
        .await;
    assert_eq!(shown["final"], "approve");
    assert_eq!(shown["quorum"], 3);
    let winner = shown["bars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["winner"] == true)
        .expect("a winning bar");
    assert_eq!(winner["value"], "approve");
    assert!(winner["count"].as_u64().unwrap() >= 2, "{shown}");
    assert!(
        shown["total"].as_u64().unwrap() >= 3,
        "the votes bar reaches the quorum line: {shown}"
    );
    let registered = browser
        .wait_for(
            &page,
            "simulated instances listed",
            "document.querySelectorAll('#instances tr[data-instance^=\"sim-\"]').length",
        )
        .await;
    assert!(registered.as_u64().unwrap() >= 1);

    // A decision made by an agent over a plain WebSocket, not by the page.
    let mut agent = hub.client_as("outside-agent").await;
    agent.vote("outside-agent", "made-outside", "yes", 1).await;
    for (name, p) in [("first page", &page), ("second page", &second)] {
        let value = browser.wait_for(p, name, &feed_value("made-outside")).await;
        assert_eq!(value, "yes", "{name}");
    }
    // The second page saw the simulated decision too.
    assert_eq!(
        browser
            .wait_for(&second, "second page", &feed_value("sim-deploy"))
            .await,
        "approve"
    );

    browser.eval(&page, "document.querySelector('#decisions .decision[data-decision=\"sim-deploy\"]').click(); true").await;
    let trail = browser
        .wait_for(&page, "the audit trail", "document.querySelectorAll('#detail-votes tr').length >= 3 ? document.getElementById('detail-name').textContent : ''")
        .await;
    assert_eq!(trail, "sim-deploy");
    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    browser.screenshot(&page, &shot).await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small to show anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_names_and_values_are_shown_as_text_never_as_html() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;
    // Names may not contain spaces, so the name uses slashes; the value may.
    let name = "<img/src=x/onerror=window.__xss=1>";
    let value = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>";
    let mut agent = hub.client_as("xss-agent").await;
    agent.vote("xss-agent", name, value, 1).await;
    assert_eq!(
        browser
            .wait_for(&page, "the hostile decision in the feed", &feed_value(name))
            .await,
        value
    );
    let shown = browser
        .wait_for(&page, "the hostile card", &card(name))
        .await;
    assert_eq!(shown["title"], name);
    assert_eq!(
        browser
            .eval(
                &page,
                "document.querySelectorAll('img, #decisions script, #feed script').length"
            )
            .await,
        0
    );
    assert_eq!(
        browser.eval(&page, "window.__xss === undefined").await,
        true
    );
    let feed_text = browser
        .eval(&page, "document.getElementById('feed').textContent")
        .await;
    assert!(feed_text.as_str().unwrap().contains(value), "{feed_text}");
}
