//! A fault test's workload and audit: agents deciding continuously through hubs while
//! Redis fails over, then what survived: acknowledged votes lost or counted twice, and
//! what every watching session was told.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quorum_hub::config::Config;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{DEADLINE, TestHub, WsClient, eventually, vote_params};

/// Agents voting at once in a fault test.
pub const VOTERS: usize = 8;
/// Decisions the voters are told before the fault: the load is flowing on every hub.
pub const DECISIONS_BEFORE_FAULT: usize = 40;
/// Decisions the voters are told once the fault is over: the load flows on again, long
/// enough for what the failover did to show.
pub const DECISIONS_AFTER_FAULT: usize = 80;

/// Shows the hubs' logs with a failure (`TEST_LOG` filters them; `quorum_hub=info` by
/// default). Every test of a binary may call it: the first one sets it up.
pub fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or("quorum_hub=info".into()))
        .with_test_writer()
        .try_init();
}

/// Two hubs with the configuration `config` makes, and two sessions watching each.
pub async fn two_hubs_watched(config: impl Fn() -> Config) -> ([TestHub; 2], Vec<WsClient>) {
    let hubs = [
        TestHub::start_with(config()).await,
        TestHub::start_with(config()).await,
    ];
    let mut watchers = Vec::new();
    for hub in &hubs {
        for _ in 0..2 {
            watchers.push(hub.client().await);
        }
    }
    (hubs, watchers)
}

/// The ids of the event log's entries, from the reply to `XRANGE <event log> - +`.
pub fn event_ids(xrange: redis::Value) -> HashSet<String> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::FromRedisValue::from_redis_value(xrange).expect("an XRANGE reply");
    entries.into_iter().map(|(id, _)| id).collect()
}

/// What the voters were told: decision -> final value.
type Told = Arc<Mutex<BTreeMap<String, String>>>;

/// Agents deciding `load-<voter>-<n>` alone (one vote decides), one after another,
/// spread over the hubs.
pub struct Voting {
    told: Told,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Voting {
    pub async fn start(hubs: &[TestHub]) -> Self {
        let told: Told = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for v in 0..VOTERS {
            let voter = format!("agent{v}");
            let client = hubs[v % hubs.len()].client_as(&voter).await;
            tasks.push(tokio::spawn(keep_deciding(
                client,
                voter,
                told.clone(),
                stop.clone(),
            )));
        }
        Self { told, stop, tasks }
    }

    /// Waits until `more` decisions beyond those told so far have been told.
    pub async fn wait_for_more(&self, more: usize, what: &str) {
        let from = self.told.lock().await.len();
        eventually(what, async || {
            (self.told.lock().await.len() >= from + more).then_some(())
        })
        .await;
    }

    /// Stops the voters and returns what they were told.
    pub async fn stop(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a voter failed");
        }
        self.told.lock().await.clone()
    }
}

/// One voter: decides `load-<voter>-<n>` alone, one after another. A call that failed or
/// got the breaker's fallback is retried with another value: the retry learns what the
/// first attempt did (its recorded value), and a decision that a failover lost and that
/// is then decided anew gets a different value, which the watchers' check would catch if
/// both reached a session.
async fn keep_deciding(mut client: WsClient, voter: String, told: Told, stop: Arc<AtomicBool>) {
    let mut n = 0;
    let mut attempt = 0;
    while !stop.load(Ordering::Relaxed) {
        let decision = format!("load-{voter}-{n}");
        let params = vote_params(&voter, &decision, &format!("v{attempt}"), Some(1));
        let reply = client.call("system.quorum.vote", params).await;
        if let Some(final_value) = reply["result"]["finalDecision"].as_str() {
            told.lock().await.insert(decision, final_value.to_owned());
            n += 1;
            attempt = 0;
        } else {
            let fallback = reply["result"]["reason"] == "circuit_open";
            assert!(fallback || reply.get("error").is_some(), "{reply}");
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a failover did to the votes the voters were told were decided.
#[derive(Debug)]
pub struct Audit {
    /// Votes acknowledged to a voter (each decided its decision).
    pub acknowledged: usize,
    /// Decisions Redis no longer has at all.
    pub lost: HashSet<String>,
    /// Decisions with more than their one vote counted.
    pub double_counted: usize,
}

/// Asks `hub` for every decision in `told`: one Redis no longer has is lost; any other
/// must have the value the voter was told and exactly one vote.
pub async fn audit(hub: &TestHub, told: &BTreeMap<String, String>) -> Audit {
    let mut asker = hub.client().await;
    let mut lost = HashSet::new();
    let mut double_counted = 0;
    for (decision, value) in told {
        let status = asker
            .call("system.quorum.status", json!({ "decision": decision }))
            .await;
        if status["error"]["code"] == -32004 {
            lost.insert(decision.clone());
            continue;
        }
        assert_eq!(
            status["result"]["finalDecision"],
            value.as_str(),
            "{decision}: {status}"
        );
        if status["result"]["voteCount"] != 1 {
            double_counted += 1;
        }
    }
    let audit = Audit {
        acknowledged: told.len(),
        lost,
        double_counted,
    };
    eprintln!(
        "acknowledged votes: {}, lost: {}, double-counted: {}{}",
        audit.acknowledged,
        audit.lost.len(),
        audit.double_counted,
        if audit.lost.is_empty() {
            String::new()
        } else {
            format!(" (lost: {:?})", audit.lost)
        }
    );
    audit
}

/// Checks what every watcher got: every decision in `expected`, with the value the voters
/// were told (its last event's), in event-id order. With `confirmed` (votes waited for
/// replicas, so an event is published only once a failover can no longer lose it), no
/// decision arrives twice, none is ever contradicted (a second event for it with another
/// value), and no watcher is told its history is incomplete. Without, a decision whose
/// first event the log no longer `kept` may arrive again (the failover lost it, and the
/// decision was logged anew), even with another value (the voter's retry decided it
/// anew): such contradictions are printed and counted, not failed.
pub async fn check_watchers(
    watchers: &mut [WsClient],
    told: &BTreeMap<String, String>,
    expected: &[&String],
    kept: &HashSet<String>,
    confirmed: bool,
) {
    let mut contradicted = 0;
    for (w, watcher) in watchers.iter_mut().enumerate() {
        let mut seen: HashMap<String, Value> = HashMap::new();
        let mut ids = Vec::new();
        while !expected.iter().all(|d| seen.contains_key(*d)) {
            let Ok(event) = tokio::time::timeout(DEADLINE, watcher.next_notification()).await
            else {
                let missing: Vec<&&String> = expected
                    .iter()
                    .filter(|d| !seen.contains_key(**d))
                    .collect();
                panic!("watcher {w} never got {missing:?}");
            };
            if event["method"] == "system.events.incomplete" {
                // The log lost events this hub had delivered: said so, then it goes on.
                assert!(!confirmed, "watcher {w}: {event}");
                continue;
            }
            assert_eq!(event["method"], "quorum.decision.made", "{event}");
            let params = event["params"].clone();
            let decision = params["decision"].as_str().unwrap().to_owned();
            ids.push(params["eventId"].as_str().unwrap().to_owned());
            if let Some(first) = seen.insert(decision.clone(), params.clone()) {
                if first["value"] != params["value"] {
                    let contradiction =
                        format!("watcher {w}: {decision} was contradicted: {first} then {params}");
                    assert!(!confirmed, "{contradiction}");
                    eprintln!("{contradiction}");
                    contradicted += 1;
                }
                let first_id = first["eventId"].as_str().unwrap();
                assert!(
                    !confirmed && !kept.contains(first_id),
                    "watcher {w} got {decision} twice ({first_id}, then {})",
                    params["eventId"]
                );
            }
        }
        for decision in expected {
            assert_eq!(
                seen[*decision]["value"],
                told[*decision].as_str(),
                "{decision}"
            );
        }
        let parsed: Vec<(u64, u64)> = ids
            .iter()
            .map(|id| {
                let (ms, seq) = id.split_once('-').unwrap();
                (ms.parse().unwrap(), seq.parse().unwrap())
            })
            .collect();
        assert!(
            parsed.windows(2).all(|pair| pair[0] < pair[1]),
            "watcher {w}: events out of order"
        );
    }
    if !confirmed {
        eprintln!("events contradicting an earlier one, over every watcher: {contradicted}");
    }
}
