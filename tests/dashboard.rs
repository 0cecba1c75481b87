//! The dashboard in a real headless Chromium: live connection, a simulation run from the
//! page, decisions made elsewhere, two pages at once, hostile strings shown as text, and a
//! decision's deadline: counted down while open, and an expiry shown with its tally; the
//! webhooks panel: endpoints with their state, last delivery and backlog, or, for a page
//! without an admin token, the one line that says what it takes; a decision's electorate
//! and threshold under a policy.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::{
    Browser, dashboard_config, dashboard_hub, open_dashboard, open_dashboard_at,
};
use common::receiver::Receiver;
use common::{RedisServer, TestHub, vote_params};
use quorum_hub::auth::Authority;
use serde_json::json;

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

/// JavaScript that returns the webhooks panel as plain data: its note (state and text) and
/// its rows.
const WEBHOOKS_PANEL: &str = "(() => {
    const note = document.getElementById('webhooks-note');
    return { note: note.hidden ? null : { state: note.dataset.state, text: note.textContent },
             tableShown: !document.getElementById('webhooks-table').hidden,
             rows: [...document.querySelectorAll('#webhooks tr')].map(r => ({
                 id: r.dataset.webhook, state: r.dataset.state, status: r.dataset.status,
                 outcome: r.dataset.outcome, event: r.dataset.event, pending: Number(r.dataset.pending),
                 cells: [...r.cells].map(c => c.textContent) })) }; })()";

/// JavaScript that returns the webhooks panel once `condition` (over `p`, the panel) holds.
fn webhooks_panel_when(condition: &str) -> String {
    format!("(() => {{ const p = {WEBHOOKS_PANEL}; return {condition} ? p : null; }})()")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_panel_lists_endpoints_with_their_state_last_delivery_and_backlog() {
    let redis = RedisServer::start();
    let mut config = dashboard_config(&redis);
    config.webhooks.allow_private = true;
    let hub = TestHub::start_with(config).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;

    // No endpoints yet: the panel says so (the page is on loopback, so it may list them).
    let empty = browser
        .wait_for(
            &page,
            "the panel to say there are no endpoints",
            &webhooks_panel_when("p.note?.state === 'none'"),
        )
        .await;
    assert!(
        empty["note"]["text"]
            .as_str()
            .unwrap()
            .contains("No webhook endpoints"),
        "{empty}"
    );
    assert_eq!(empty["tableShown"], false, "{empty}");

    // An endpoint added by a client on loopback, described with markup that must stay text.
    let receiver = Receiver::ok().await;
    let description = "<img src=x onerror=window.__xss=1>ops pager";
    let mut admin = hub.client().await;
    let added = admin
        .result(
            "system.webhooks.add",
            json!({"url": receiver.url(), "description": description}),
        )
        .await;
    let id = added["id"].as_str().unwrap().to_owned();
    let listed = browser
        .wait_for(
            &page,
            "the endpoint listed",
            &webhooks_panel_when("p.rows.length > 0"),
        )
        .await;
    assert_eq!(listed["note"], serde_json::Value::Null, "{listed}");
    assert_eq!(listed["tableShown"], true, "{listed}");
    let rows = listed["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    let row = &rows[0];
    assert_eq!(row["id"], id.as_str(), "{listed}");
    assert_eq!(row["state"], "enabled", "{listed}");
    assert_eq!(row["status"], "", "nothing attempted yet: {listed}");
    assert_eq!(row["pending"], 0, "{listed}");
    assert_eq!(
        row["cells"],
        json!([
            format!("{}{description}", receiver.url()),
            "enabled",
            "–",
            "0"
        ]),
        "{listed}"
    );
    assert_eq!(
        browser
            .eval(&page, "document.querySelectorAll('img').length")
            .await,
        0
    );
    assert_eq!(
        browser.eval(&page, "window.__xss === undefined").await,
        true
    );

    // A decision: its delivery reaches the receiver, and the panel shows it delivered.
    let mut voter = hub.client_as("hook-voter").await;
    let event_id = voter.decide("hook-voter", "hooked-decision").await;
    let delivered = browser
        .wait_for(
            &page,
            "the delivery shown",
            &webhooks_panel_when(
                "p.rows.length === 1 && p.rows[0].outcome === 'delivered' && p.rows[0].pending === 0",
            ),
        )
        .await;
    let row = &delivered["rows"][0];
    assert_eq!(row["state"], "enabled", "{delivered}");
    assert_eq!(row["status"], "200", "{delivered}");
    assert_eq!(row["event"], event_id.as_str(), "{delivered}");
    let attempt = row["cells"][2].as_str().unwrap();
    assert!(
        attempt.starts_with("HTTP 200, delivered at "),
        "{delivered}"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1, "one delivery: {received:?}");
    assert_eq!(received[0].id(), event_id);
    assert_eq!(received[0].json()["data"]["decision"], "hooked-decision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_webhooks_panel_says_what_it_takes() {
    let redis = RedisServer::start();
    let secret = "dashboard-test-secret-0123456789";
    let mut config = dashboard_config(&redis);
    config.auth_secret = Some(secret.to_owned());
    let hub = TestHub::start_with(config).await;
    let authority = Authority::new(secret).unwrap();
    let ttl = Duration::from_secs(600);
    let mut browser = Browser::launch().await;

    // An observer watches the hub, but its token does not manage it.
    let observer = authority.mint(None, true, ttl).unwrap();
    let page = open_dashboard_at(&mut browser, &hub, &format!("/?token={observer}")).await;
    let refused = browser
        .wait_for(
            &page,
            "the panel to say an admin token is needed",
            &webhooks_panel_when("p.note?.state === 'refused'"),
        )
        .await;
    let text = refused["note"]["text"].as_str().unwrap();
    assert!(
        text.contains("admin token (quorum-hub token --admin)"),
        "{refused}"
    );
    assert_eq!(refused["tableShown"], false, "{refused}");
    assert_eq!(refused["rows"], json!([]), "{refused}");

    // The same page with an admin token lists the endpoints: there are none.
    let admin = authority.mint_admin(ttl).unwrap();
    let page = open_dashboard_at(&mut browser, &hub, &format!("/?token={admin}")).await;
    browser
        .wait_for(
            &page,
            "the admin's panel to say there are no endpoints",
            &webhooks_panel_when("p.note?.state === 'none'"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_under_a_policy_shows_its_electorate_and_threshold() {
    let redis = RedisServer::start();
    let hub = dashboard_hub(&redis).await;
    let other = TestHub::start(&redis).await;
    let mut browser = Browser::launch().await;
    let page = open_dashboard(&mut browser, &hub).await;

    let mut admin = other.client().await;
    let policy = json!({"electorate": {"role": "approver"}, "threshold": "unanimous"});
    admin
        .result(
            "system.policies.set",
            json!({"pattern": "gate-*", "policy": policy}),
        )
        .await;
    let mut voters = Vec::new();
    for id in ["ap-2", "ap-1", "ap-3"] {
        let mut client = other.client().await;
        client
            .result(
                "system.register",
                json!({"instanceId": id, "roles": ["approver"]}),
            )
            .await;
        voters.push((id, client));
    }
    let (id, client) = &mut voters[0];
    let params = json!({"instanceId": *id, "decision": "gate-42", "value": "go"});
    client.result("system.quorum.vote", params).await;

    let shown = browser
        .wait_for(
            &page,
            "the card with its electorate and threshold",
            &format!(
                "(() => {{ const c = {}; return c?.meta.includes('ap-3') ? c : null; }})()",
                card("gate-42")
            ),
        )
        .await;
    let meta = shown["meta"].as_str().unwrap();
    assert!(meta.contains("threshold unanimous"), "{shown}");
    assert!(
        meta.contains("electorate approver: ap-1, ap-2, ap-3"),
        "{shown}"
    );
    assert!(
        meta.contains("1 of 3 voted") && meta.contains("quorum 3"),
        "{shown}"
    );
}
