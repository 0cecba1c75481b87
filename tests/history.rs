//! History that cannot be trusted is said so: a resume cursor the event log does not hold,
//! notices that say what the log holds, and a hub whose log is not a continuation of the
//! one it delivered from (a failover that lost events, a log replaced) telling its sessions
//! and still delivering every later decision.

mod common;

use common::{RedisServer, TestHub, WsClient};
use serde_json::{Value, json};

fn log_key(redis: &RedisServer) -> &'static str {
    quorum_hub::event_log_key(&redis.url())
}

/// Asserts that `notice` is a `system.events.incomplete` with this reason, `since`, and
/// oldest and newest ids of the log.
fn assert_notice(notice: &Value, reason: &str, since: &str, oldest: &str, newest: &str) {
    assert_eq!(notice["method"], "system.events.incomplete", "{notice}");
    let params = &notice["params"];
    assert_eq!(params["reason"], reason, "{notice}");
    assert_eq!(params["since"], since, "{notice}");
    assert_eq!(params["oldest"], oldest, "{notice}");
    assert_eq!(params["newest"], newest, "{notice}");
    assert!(
        params["message"]
            .as_str()
            .is_some_and(|m| m.contains("system.get_state")),
        "{notice}"
    );
}

/// Asserts that the next notification is the decision event `decision`, and returns its id.
async fn next_decision(client: &mut WsClient, decision: &str) -> String {
    let event = client.next_notification().await;
    assert_eq!(event["method"], "quorum.decision.made", "{event}");
    assert_eq!(event["params"]["decision"], decision, "{event}");
    event["params"]["eventId"].as_str().unwrap().to_owned()
}

/// A log entry as XRANGE returns it: its id and its fields.
type Entry = (String, Vec<(String, String)>);

/// Appends an entry with these fields to the log, with id `id` (`*`: the next); returns its id.
async fn append(redis: &RedisServer, id: &str, fields: &[(String, String)]) -> String {
    let mut command = vec!["XADD", log_key(redis), id];
    for (name, value) in fields {
        command.extend([name.as_str(), value.as_str()]);
    }
    redis.query(&command).await
}

/// Appends an entry shaped like the vote script's, for `decision`.
async fn log_entry(redis: &RedisServer, id: &str, decision: &str) -> String {
    log_decided(redis, id, decision, "a").await
}

/// Appends an entry shaped like the vote script's, for `decision` decided as `value`.
async fn log_decided(redis: &RedisServer, id: &str, decision: &str, value: &str) -> String {
    let fields = [
        ("decision", decision),
        ("value", value),
        ("voteCount", "1"),
        ("quorum", "1"),
        ("totalInstances", "1"),
        ("timestamp", "1764230000000"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    append(redis, id, &fields).await
}

/// Drops every hub's pub/sub link: each subscribes again and checks the log first.
async fn drop_pubsub_links(redis: &RedisServer) {
    let _: Vec<redis::Value> = redis
        .query_each_node(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await;
}

/// The id as a (ms, seq) pair, ordered as Redis orders stream ids.
fn parsed(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_an_event_the_log_does_not_hold_gets_one_notice_then_the_later_events() {
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(voter.decide("v", &format!("held-{n}")).await);
    }
    // The event a client last saw is gone (lost in a failover), while later ones are kept.
    let deleted: u64 = redis.query(&["XDEL", log_key(&redis), &ids[2]]).await;
    assert_eq!(deleted, 1);

    let mut back = WsClient::connect(&format!("{}?lastEventId={}", hub.ws_url(), ids[2])).await;
    let notice = back.next_notification().await;
    assert_notice(&notice, "unknown", &ids[2], &ids[0], &ids[4]);
    assert!(
        notice["params"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("event {} is not in this hub's event log", ids[2])),
        "{notice}"
    );
    for (n, id) in ids.iter().enumerate().skip(3) {
        assert_eq!(&next_decision(&mut back, &format!("held-{n}")).await, id);
    }
    voter.vote("v", "live", "a", 1).await;
    next_decision(&mut back, "live").await;
    back.assert_no_more_notifications("live").await;

    // The same through system.subscribe (from a session that opened after "live"): the
    // notice, the later events, nothing twice.
    let mut late = hub.client().await;
    let reply = late
        .result("system.subscribe", json!({"since": ids[2]}))
        .await;
    assert_eq!(reply["replayed"], 3, "{reply}");
    let newest: String = {
        let entries: Vec<Entry> = redis
            .query(&["XREVRANGE", log_key(&redis), "+", "-", "COUNT", "1"])
            .await;
        entries[0].0.clone()
    };
    let notice = late.next_notification().await;
    assert_notice(&notice, "unknown", &ids[2], &ids[0], &newest);
    for (n, id) in ids.iter().enumerate().skip(3) {
        assert_eq!(&next_decision(&mut late, &format!("held-{n}")).await, id);
    }
    next_decision(&mut late, "live").await;
    late.assert_no_more_notifications("live").await;

    // Resuming from the beginning is never "unknown"; the deleted event makes it "trimmed".
    let mut all = WsClient::connect(&format!("{}?lastEventId=0-0", hub.ws_url())).await;
    let notice = all.next_notification().await;
    assert_notice(&notice, "trimmed", "0-0", &ids[0], &newest);
    for n in [0, 1, 3, 4] {
        next_decision(&mut all, &format!("held-{n}")).await;
    }
    next_decision(&mut all, "live").await;
    all.assert_no_more_notifications("live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_for_a_cursor_ahead_of_the_log_or_trimmed_say_what_the_log_holds() {
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(voter.decide("v", &format!("kept-{n}")).await);
    }
    let ahead = "99999999999999-0";
    let mut back = WsClient::connect(&format!("{}?lastEventId={ahead}", hub.ws_url())).await;
    assert_notice(
        &back.next_notification().await,
        "ahead",
        &ids[2],
        &ids[0],
        &ids[2],
    );

    let _: u64 = redis
        .query(&["XTRIM", log_key(&redis), "MAXLEN", "1"])
        .await;
    let mut back = WsClient::connect(&format!("{}?lastEventId={}", hub.ws_url(), ids[0])).await;
    assert_notice(
        &back.next_notification().await,
        "trimmed",
        &ids[0],
        &ids[2],
        &ids[2],
    );
    next_decision(&mut back, "kept-2").await;
    back.assert_no_more_notifications("kept-2").await;

    // A malformed cursor too, and an empty log's notice says nothing it does not know.
    let mut bad = WsClient::connect(&format!("{}?lastEventId=bogus", hub.ws_url())).await;
    assert_notice(
        &bad.next_notification().await,
        "malformed",
        &ids[2],
        &ids[2],
        &ids[2],
    );
    let _: u64 = redis.query(&["DEL", log_key(&redis)]).await;
    let mut empty = WsClient::connect(&format!("{}?lastEventId=5-0", hub.ws_url())).await;
    let notice = empty.next_notification().await;
    assert_eq!(notice["params"]["reason"], "ahead", "{notice}");
    assert!(notice["params"].get("oldest").is_none(), "{notice}");
    assert!(notice["params"].get("newest").is_none(), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_failover_loses_events_the_hubs_delivered_every_session_is_told_and_gets_later_decisions()
 {
    let redis = RedisServer::start_single();
    let hubs = [TestHub::start(&redis).await, TestHub::start(&redis).await];
    let mut sessions = vec![hubs[0].client_as("v").await];
    for hub in &hubs {
        sessions.push(hub.client().await);
    }
    let mut kept = Vec::new();
    for n in 0..2 {
        let decision = format!("kept-{n}");
        sessions[0].vote("v", &decision, "a", 1).await;
        kept.push(next_decision(&mut sessions[0], &decision).await);
        for session in &mut sessions[1..] {
            next_decision(session, &decision).await;
        }
    }
    // The old primary logged one more event, with an id ahead of the new primary's clock,
    // and the hubs delivered it (read from the log after their links dropped).
    let lost = log_entry(&redis, "99999999999999-0", "lost-in-failover").await;
    drop_pubsub_links(&redis).await;
    for session in &mut sessions {
        assert_eq!(next_decision(session, "lost-in-failover").await, lost);
    }

    // The failover: the promoted replica's log holds the first two events, not the last;
    // its epoch is the one it replicated.
    let entries: Vec<Entry> = redis.query(&["XRANGE", log_key(&redis), "-", "+"]).await;
    let _: u64 = redis.query(&["DEL", log_key(&redis)]).await;
    for (id, fields) in entries.iter().filter(|(id, _)| *id != lost) {
        append(&redis, id, fields).await;
    }
    drop_pubsub_links(&redis).await;
    for session in &mut sessions {
        let notice = session.next_notification().await;
        assert_notice(&notice, "rewound", &kept[1], &kept[0], &kept[1]);
    }

    // A new decision gets an id below the lost event's, and still reaches every session.
    sessions[0].vote("v", "after-failover", "a", 1).await;
    for session in &mut sessions {
        let id = next_decision(session, "after-failover").await;
        assert!(parsed(&id) < parsed(&lost), "{id} is not below {lost}");
        assert!(parsed(&id) > parsed(&kept[1]), "{id}");
    }
    for session in &mut sessions {
        session.assert_no_more_notifications("after-failover").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_replaced_under_a_new_epoch_is_delivered_from_its_start_after_a_notice() {
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut watcher = hub.client().await;
    for n in 0..2 {
        let decision = format!("old-log-{n}");
        voter.decide("v", &decision).await;
        next_decision(&mut watcher, &decision).await;
    }
    // The log and its epoch are gone (a Redis that lost its data); the new log starts with
    // an id far below every one delivered.
    let _: u64 = redis
        .query(&[
            "DEL",
            log_key(&redis),
            quorum_hub::event_log_epoch_key(&redis.url()),
        ])
        .await;
    log_entry(&redis, "1-1", "new-log-0").await;
    drop_pubsub_links(&redis).await;
    for session in [&mut voter, &mut watcher] {
        let notice = session.next_notification().await;
        assert_notice(&notice, "rewound", "1-0", "1-1", "1-1");
        assert_eq!(next_decision(session, "new-log-0").await, "1-1");
    }
    voter.vote("v", "new-log-1", "a", 1).await;
    for session in [&mut voter, &mut watcher] {
        next_decision(session, "new-log-1").await;
        session.assert_no_more_notifications("new-log-1").await;
    }
    // The hub follows the new epoch: a later drop of its link finds the log continued.
    drop_pubsub_links(&redis).await;
    voter.vote("v", "new-log-2", "a", 1).await;
    for session in [&mut voter, &mut watcher] {
        next_decision(session, "new-log-2").await;
        session.assert_no_more_notifications("new-log-2").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_away_longer_than_the_log_keeps_tells_its_sessions_what_was_trimmed() {
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let seen = voter.decide("v", "seen").await;
    // Events the hub never saw (not published), then trimmed past its position.
    log_entry(&redis, "*", "trimmed-away").await;
    let kept = log_entry(&redis, "*", "still-kept").await;
    let _: u64 = redis
        .query(&["XTRIM", log_key(&redis), "MAXLEN", "1"])
        .await;
    drop_pubsub_links(&redis).await;
    let notice = voter.next_notification().await;
    assert_notice(&notice, "trimmed", &seen, &kept, &kept);
    assert_eq!(next_decision(&mut voter, "still-kept").await, kept);
    voter.assert_no_more_notifications("seen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_is_reported_even_when_new_events_are_above_every_delivered_one()
{
    let redis = RedisServer::start_single();
    let hub = TestHub::start(&redis).await;
    let mut voter = hub.client_as("v").await;
    let mut watcher = hub.client().await;
    let approved = voter.decide("v", "old-decision").await;
    assert_eq!(next_decision(&mut watcher, "old-decision").await, approved);
    // Redis comes back without its data, and a decision is logged (with an id above every
    // one delivered) before the hub's listener looks at the log again: the same decision,
    // decided anew with another value.
    let _: String = redis.query(&["FLUSHALL"]).await;
    let denied = log_decided(&redis, "*", "old-decision", "deny").await;
    assert!(
        parsed(&denied) > parsed(&approved),
        "{denied} <= {approved}"
    );
    // A client resuming from the event it saw is told the log does not hold it.
    let mut resumed = WsClient::connect(&format!("{}?lastEventId={approved}", hub.ws_url())).await;
    let notice = resumed.next_notification().await;
    assert_notice(&notice, "unknown", &approved, &denied, &denied);
    // The hub's sessions are told before the decision changes value under them.
    drop_pubsub_links(&redis).await;
    for session in [&mut voter, &mut watcher, &mut resumed] {
        let notice = session.next_notification().await;
        assert_notice(&notice, "rewound", &approved, &denied, &denied);
        let event = session.next_notification().await;
        assert_eq!(event["params"]["decision"], "old-decision", "{event}");
        assert_eq!(event["params"]["value"], "deny", "{event}");
        session.assert_no_more_notifications("deny").await;
    }
}
