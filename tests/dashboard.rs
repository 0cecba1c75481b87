//! The dashboard in a real headless Chromium: live connection, a simulation run from the
//! page, decisions made elsewhere, two pages at once, hostile strings shown as text, and a
//! decision's deadline: counted down while open, and an expiry shown with its tally.

mod common;

use std::path::PathBuf;

use common::browser::{Browser, Page};
use common::{RedisServer, TestHub, vote_params};
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
                      state: c.dataset.state, closesAt: Number(c.dataset.closesAt), expiredAt: Number(c.dataset.expiredAt),
                      meta: c.querySelector('.meta').textContent,
                      countdown: c.querySelector('.countdown')?.textContent ?? null,
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

/// JavaScript that returns the feed entry for `decision`'s expiry as plain data, if shown.
fn feed_expiry(decision: &str) -> String {
    format!(
        "(() => {{ const li = [...document.querySelectorAll('#feed li')].find(li => li.dataset.decision === {d} && li.dataset.state === 'expired');
            return li ? {{ text: li.textContent }} : null; }})()",
        d = json!(decision)
    )
}

/// The bars of a card as `(value, count)`, sorted (the order of first votes varies).
fn bars(card: &serde_json::Value) -> Vec<(String, u64)> {
    let mut bars: Vec<(String, u64)> = card["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["value"].as_str().unwrap().to_owned(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect();
    bars.sort();
    bars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_decisions_count_down_and_an_expired_one_shows_its_deadline_and_tally() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;

    // A decision with ten minutes to go, opened by an agent: the page counts it down.
    let mut agent = hub.client_as("timed-agent").await;
    let mut params = vote_params("timed-agent", "counting-down", "yes", Some(3));
    params["closeAfterMs"] = json!(600_000);
    agent.result("system.quorum.vote", params).await;
    let open = browser
        .wait_for(
            &page,
            "the open card counting down",
            &format!(
                "(() => {{ const c = {}; return c?.countdown ? c : null; }})()",
                card("counting-down")
            ),
        )
        .await;
    assert_eq!(open["state"], "open", "{open}");
    let first = open["countdown"].as_str().unwrap().to_owned();
    assert!(first.starts_with('9') || first.starts_with("10m"), "{open}");
    browser
        .wait_for(
            &page,
            "the countdown to move on",
            &format!(
                "(() => {{ const c = {}; return c?.countdown && c.countdown !== {}; }})()",
                card("counting-down"),
                json!(first)
            ),
        )
        .await;

    // A simulation from the page: two votes of five instances (quorum 3) and a deadline of
    // 3 s (counted from the first vote; the votes are all cast within about a second).
    browser
        .eval(
            &page,
            "document.getElementById('sim-decision').value = 'sim-expire';
             document.getElementById('sim-total').value = '5';
             document.getElementById('sim-spread').value = 'yes:1, no:1';
             document.getElementById('sim-deadline').value = '3';
             document.getElementById('sim-run').click(); true",
        )
        .await;
    // While open, it counts down too.
    let counting = browser
        .wait_for(
            &page,
            "the simulated decision counting down",
            &format!(
                "(() => {{ const c = {}; return c?.countdown ? c : null; }})()",
                card("sim-expire")
            ),
        )
        .await;
    assert_eq!(counting["state"], "open", "{counting}");
    let expired = browser
        .wait_for(
            &page,
            "the expired card",
            &format!(
                "(() => {{ const c = {}; return c?.state === 'expired' ? c : null; }})()",
                card("sim-expire")
            ),
        )
        .await;
    assert_eq!(expired["reached"], "false", "{expired}");
    assert_eq!(expired["countdown"], serde_json::Value::Null, "{expired}");
    let closes_at = expired["closesAt"].as_u64().unwrap();
    let expired_at = expired["expiredAt"].as_u64().unwrap();
    assert!(closes_at > 0 && expired_at >= closes_at, "{expired}");
    let meta = expired["meta"].as_str().unwrap();
    assert!(
        meta.contains("Expired") && meta.contains("deadline"),
        "{expired}"
    );
    // The tally at expiry, and no winner.
    assert_eq!(
        bars(&expired),
        [("no".to_owned(), 1), ("yes".to_owned(), 1)],
        "{expired}"
    );
    assert!(
        expired["bars"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["winner"] == false),
        "{expired}"
    );
    let entry = browser
        .wait_for(&page, "the expiry in the feed", &feed_expiry("sim-expire"))
        .await;
    let text = entry["text"].as_str().unwrap();
    assert!(
        text.contains("expired") && text.contains("yes 1") && text.contains("no 1"),
        "{entry}"
    );

    // A page opened afterwards reads the same from the hub's state.
    let later = open_dashboard(&mut browser, &hub).await;
    let read = browser
        .wait_for(
            &later,
            "the expired card on a new page",
            &format!(
                "(() => {{ const c = {}; return c?.state === 'expired' && c.bars.length === 2 ? c : null; }})()",
                card("sim-expire")
            ),
        )
        .await;
    assert_eq!(
        (read["closesAt"].as_u64(), read["expiredAt"].as_u64()),
        (Some(closes_at), Some(expired_at))
    );
    assert_eq!(bars(&read), bars(&expired));
    // The other decision is still open and counting.
    let still = browser
        .wait_for(
            &later,
            "the open card on a new page",
            &card("counting-down"),
        )
        .await;
    assert!(still["countdown"].is_string(), "{still}");
}
