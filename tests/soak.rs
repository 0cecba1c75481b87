//! A seeded soak of hostile input: thousands of malformed, truncated, mistyped and
//! oversized frames from many sessions against the real binary, token refreshes, pages of
//! `system.get_state` from hostile cursors, and sessions resuming from cursors the hub can
//! and cannot place. Afterwards the hub must still decide a vote
//! correctly, must never have panicked, and its memory must be back near where it started.

mod common;

use std::process::Command;

use common::{HubProcess, RedisServer, Rng, WsClient, bin_path, eventually, request};
use futures::future::join_all;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 16;
const FRAMES_PER_SESSION: usize = 300;

/// One hostile frame and whether the hub answers it with exactly one reply.
enum Hostile {
    Text {
        text: String,
        answered: bool,
    },
    /// Frames that end the session (oversized, binary).
    Fatal(Message),
}

/// Cursors a client might resume from: kept, ahead of every event, malformed, out of range.
const CURSORS: [&str; 8] = [
    "0-0",
    "1-0",
    "99999999999999-0",
    "bogus",
    "1-",
    "-1",
    "18446744073709551616-0",
    "",
];

fn cursor(rng: &mut Rng) -> &'static str {
    CURSORS[rng.below(CURSORS.len() as u64) as usize]
}

fn valid_call(rng: &mut Rng) -> Value {
    let id = rng.below(1000);
    match rng.below(16) {
        0 | 1 => {
            let since = cursor(rng);
            return request(id, "system.subscribe", json!({ "since": since }));
        }
        // Pages of every size, from every cursor, placeable or not.
        2 | 3 => {
            let limits = [
                json!(1),
                json!(100),
                json!(1000),
                json!(1001),
                json!(0),
                json!(-5),
            ];
            let limit = limits[rng.below(6) as usize].clone();
            let decisions_after = ["1:soak", "x", "99999999999999:zz", ""][rng.below(4) as usize];
            let params = match rng.below(3) {
                0 => json!({ "limit": limit }),
                1 => json!({ "limit": limit, "instancesAfter": format!("soak-{}", rng.below(50)) }),
                _ => json!({ "limit": limit, "decisionsAfter": decisions_after }),
            };
            return request(id, "system.get_state", params);
        }
        // Token refreshes: junk, oversized, or shaped like a JWT.
        4 => {
            let token = match rng.below(3) {
                0 => "a.b.c".to_owned(),
                1 => "t".repeat(5000),
                _ => "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2ln".to_owned(),
            };
            return request(id, "system.auth.refresh", json!({ "token": token }));
        }
        _ => {}
    }
    let methods = [
        "system.register",
        "system.quorum.vote",
        "system.quorum.status",
        "system.get_state",
        "system.heartbeat",
    ];
    let method = methods[rng.below(methods.len() as u64) as usize];
    request(
        rng.below(1000),
        method,
        json!({"instanceId": format!("soak-{}", rng.below(50)), "decision": "soak", "value": "v"}),
    )
}

fn junk_value(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Null,
        1 => json!(rng.next() as i64),
        2 => json!(-1.5e300),
        3 => json!("x".repeat(rng.below(600) as usize)),
        4 => json!([1, "a", null, {"k": []}]),
        5 => json!({"nested": {"deeper": [true]}}),
        6 => json!("{}\u{0}\n\t\"'; DROP"),
        _ => json!(true),
    }
}

fn hostile(rng: &mut Rng) -> Hostile {
    let text = |text: String, answered: bool| Hostile::Text { text, answered };
    match rng.below(14) {
        // Truncated valid requests.
        0 | 1 => {
            let full = valid_call(rng).to_string();
            let cut = 1 + rng.below(full.len() as u64 - 1) as usize;
            text(full[..cut].to_owned(), true)
        }
        // Printable garbage.
        2 => text(
            (0..rng.below(200) + 1)
                .map(|_| (b' ' + rng.below(95) as u8) as char)
                .collect(),
            true,
        ),
        // Valid JSON that is no request.
        3 => text(junk_value(rng).to_string(), true),
        // Requests with mistyped members.
        4 => {
            let mut call = valid_call(rng);
            let member = ["jsonrpc", "method", "id", "params"][rng.below(4) as usize];
            call[member] = junk_value(rng);
            text(call.to_string(), true)
        }
        // Mistyped or unknown params.
        5 | 6 => {
            let mut call = valid_call(rng);
            let field = [
                "instanceId",
                "decision",
                "value",
                "totalInstances",
                "roles",
                "metadata",
                "bogus",
            ][rng.below(7) as usize];
            call["params"][field] = junk_value(rng);
            text(call.to_string(), true)
        }
        // Unknown methods, including ones shaped like injection.
        7 => {
            let mut call = valid_call(rng);
            call["method"] = json!(
                [
                    "",
                    "system.",
                    "SYSTEM.GET_STATE",
                    "rpc.discover",
                    "system.quorum.vote\n",
                    "__proto__"
                ][rng.below(6) as usize]
            );
            text(call.to_string(), true)
        }
        // Batches: mixed, oversized, all notifications.
        8 => {
            let n = [0, 3, 101, 150][rng.below(4) as usize];
            let items: Vec<Value> = (0..n)
                .map(|_| {
                    if rng.below(2) == 0 {
                        valid_call(rng)
                    } else {
                        junk_value(rng)
                    }
                })
                .collect();
            text(Value::Array(items).to_string(), true)
        }
        // Deep nesting.
        9 => {
            let depth = 20 + rng.below(200) as usize;
            text(format!("{}{}", "[".repeat(depth), "]".repeat(depth)), true)
        }
        // Names that try to escape their keys.
        10 => {
            let names = [
                "a}:votes",
                "{x}",
                "*",
                "a\nb",
                "a\u{0}b",
                "}{",
                "cb:quorum:{soak}:result",
            ];
            let mut call = valid_call(rng);
            call["params"]["decision"] = json!(names[rng.below(names.len() as u64) as usize]);
            text(call.to_string(), true)
        }
        // Notifications (no reply expected).
        11 => {
            let mut call = valid_call(rng);
            call.as_object_mut().unwrap().remove("id");
            text(call.to_string(), false)
        }
        // Oversized and binary frames end the session.
        12 => Hostile::Fatal(Message::text(
            "x".repeat(64 * 1024 + 1 + rng.below(100_000) as usize),
        )),
        _ => Hostile::Fatal(Message::binary(vec![0xff, 0x00, 0x7b])),
    }
}

/// Sends this session's share of hostile frames; reconnects whenever the hub closes it.
async fn soak_session(url: String, seed: u64) -> usize {
    let mut rng = Rng::new(seed);
    // Every other (re)connection resumes from a cursor, placeable or not.
    let connect = async |rng: &mut Rng| match rng.below(2) {
        0 => WsClient::connect(&url).await,
        _ => WsClient::connect(&format!("{url}?lastEventId={}", cursor(rng))).await,
    };
    let mut client = connect(&mut rng).await;
    let mut answered = 0;
    for _ in 0..FRAMES_PER_SESSION {
        match hostile(&mut rng) {
            Hostile::Text {
                text,
                answered: expects_reply,
            } => {
                client.send_text(&text).await;
                if expects_reply {
                    let reply = client.recv_reply().await;
                    let ok = match &reply {
                        Value::Object(o) => o.get("jsonrpc") == Some(&json!("2.0")),
                        Value::Array(items) => items.iter().all(|r| r["jsonrpc"] == "2.0"),
                        _ => false,
                    };
                    assert!(ok, "not a JSON-RPC reply to {text:?}: {reply}");
                    answered += 1;
                }
            }
            Hostile::Fatal(message) => {
                client.send_message(message).await;
                let code = client.expect_close().await;
                assert!(code == 1009 || code == 1003, "closed with {code}");
                client = connect(&mut rng).await;
            }
        }
    }
    client.close().await;
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_hostile_frames_leave_the_hub_correct_and_lean() {
    let redis = RedisServer::start();
    let hub = HubProcess::spawn(
        Command::new(bin_path())
            .args(["--listen", "127.0.0.1:0", "--redis-url", &redis.url()])
            .args(["--session-rate-limit", "off", "--vote-rate-limit", "off"]),
    );
    let url = hub.ws_url();
    // Warm up, then take the baseline.
    join_all((0..SESSIONS).map(|_| async {
        let mut c = WsClient::connect(&url).await;
        c.result("system.get_state", json!({})).await;
        c.close().await;
    }))
    .await;
    let baseline = hub.rss_kib();

    let answered: usize =
        join_all((0..SESSIONS as u64).map(|seed| soak_session(url.clone(), 0x50ac + seed)))
            .await
            .into_iter()
            .sum();
    assert!(
        answered > SESSIONS * FRAMES_PER_SESSION / 2,
        "only {answered} replies"
    );

    // A valid vote is still decided correctly.
    let mut a = WsClient::connect(&url).await;
    let mut b = WsClient::connect(&url).await;
    a.register("after-a").await;
    b.register("after-b").await;
    assert_eq!(
        a.vote("after-a", "after-soak", "keep", 3).await["quorumReached"],
        false
    );
    let reply = b.vote("after-b", "after-soak", "keep", 3).await;
    assert_eq!(
        reply,
        json!({"voted": true, "quorumReached": true, "finalDecision": "keep", "voteCount": 2})
    );
    a.close().await;
    b.close().await;

    assert_eq!(hub.panics(), Vec::<String>::new(), "the hub panicked");
    // Memory comes back near the baseline once the sessions are gone.
    const SLACK_KIB: u64 = 32 * 1024;
    let what = format!("hub RSS to come back near {baseline} KiB");
    let rss = eventually(&what, async || {
        let rss = hub.rss_kib();
        (rss <= baseline + SLACK_KIB).then_some(rss)
    })
    .await;
    eprintln!("hub RSS: {baseline} KiB before, {rss} KiB after {answered} answered hostile frames");
    assert!(hub.terminate(), "hub exits 0 after the soak");
}
