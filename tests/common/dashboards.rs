//! The dashboards flag, seen from outside: a hub publishes recorded votes only while one of
//! its sessions listens for them.

use futures::StreamExt;
use serde_json::{Value, json};

use super::DEADLINE;
use super::hub::TestHub;

/// The channel recorded votes are published on.
const VOTE_CHANNEL: &str = "cb:events:quorum.vote.recorded";

/// Checks on `hub`, whose Redis has the data nodes `nodes` (one, or a cluster's), that
/// votes are not published while no dashboard listens and are once one subscribes: a
/// subscriber of its own on the first node (a cluster delivers a publish on any node to
/// it) sees a marker published on every node after six votes before anything else, then
/// the vote made once a session subscribed to `quorum.vote.recorded`, which that session
/// receives too.
pub async fn votes_are_published_only_while_a_dashboard_listens(hub: &TestHub, nodes: &[String]) {
    let client = redis::Client::open(nodes[0].as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(VOTE_CHANNEL).await.unwrap();
    let mut messages = pubsub.into_on_message();
    let mut voter = hub.client_as("quiet").await;
    for n in 0..6 {
        voter.vote("quiet", &format!("quiet-{n}"), "y", 2).await;
    }
    // A marker published on every node after the votes arrives after anything those
    // nodes published before it.
    for node in nodes {
        let mut conn = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(VOTE_CHANNEL)
            .arg("marker")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for _ in nodes {
        let message = tokio::time::timeout(DEADLINE, messages.next())
            .await
            .expect("a marker")
            .unwrap();
        assert_eq!(
            message.get_payload::<String>().unwrap(),
            "marker",
            "a vote was published with no dashboard listening"
        );
    }
    // A dashboard on the hub: from its subscription on, votes are published.
    let mut dashboard = hub.client().await;
    dashboard
        .result(
            "system.subscribe",
            json!({"events": ["quorum.vote.recorded"]}),
        )
        .await;
    voter.vote("quiet", "watched", "y", 2).await;
    let message = tokio::time::timeout(DEADLINE, messages.next())
        .await
        .expect("the vote")
        .unwrap();
    let record: Value = serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(record["decision"], "watched", "{record}");
    assert_eq!(record["instanceId"], "quiet", "{record}");
    let event = dashboard.next_notification().await;
    assert_eq!(event["method"], "quorum.vote.recorded", "{event}");
    assert_eq!(event["params"]["decision"], "watched", "{event}");
}
