//! Which primary a hub follows when the sentinels disagree: the one a majority of the
//! sentinels it lists name, never one that a single sentinel, cut off with the old primary,
//! still names; and with no majority, the one it already follows.

mod common;

use common::failover::log_to_test_output;
use common::redis_sentinel::{MASTER_NAME, RedisSentinel};
use common::{TestHub, eventually, eventually_blocking, without_rate_limits_at};
use serde_json::json;

/// Fails the primary of a [`RedisSentinel::start_split`] over through the two sentinels that
/// are not cut off, and checks that the split it leaves holds: they name the promoted
/// replica, while the old primary still says it is the primary and the cut-off sentinel
/// still names it. Returns the promoted replica's port.
fn fail_over_leaving_a_split(redis: &RedisSentinel) -> u16 {
    let [old, replica] = redis.data_ports();
    let sentinels = redis.sentinel_ports();
    // Everything the old primary has is on the replica before the split.
    redis.wait_replicating(old, replica);
    let reply = redis.cli(sentinels[1], &["SENTINEL", "FAILOVER", MASTER_NAME]);
    assert_eq!(reply, "OK");
    let promoted = redis.wait_promoted_by(&sentinels[1..], old);
    assert_eq!(promoted, replica);
    assert_split_holds(redis);
    promoted
}

/// The old primary still says it is the primary, and the cut-off sentinel still names it,
/// while the other two name the promoted replica.
#[track_caller]
fn assert_split_holds(redis: &RedisSentinel) {
    let [old, promoted] = redis.data_ports();
    let sentinels = redis.sentinel_ports();
    assert_eq!(redis.role(old), "master", "the old primary stepped down");
    assert_eq!(redis.role(promoted), "master");
    assert_eq!(redis.named_by(sentinels[0]), Some(old));
    assert_eq!(redis.named_by(sentinels[1]), Some(promoted));
    assert_eq!(redis.named_by(sentinels[2]), Some(promoted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_follows_the_primary_most_sentinels_name_not_one_cut_off_with_the_old_primary() {
    log_to_test_output();
    let redis = RedisSentinel::start_split();
    let [old, replica] = redis.data_ports();
    // The cut-off sentinel is listed first.
    let url = redis.url();
    assert!(url.contains(&format!("//127.0.0.1:{}", redis.sentinel_ports()[0])));
    let running = TestHub::start_with(without_rate_limits_at(&url)).await;
    let mut early = running.client_as("early").await;
    early.vote("early", "before", "yes", 1).await;
    assert_eq!(redis.voters_on(old, "before"), ["early"]);

    let promoted = tokio::task::block_in_place(|| fail_over_leaving_a_split(&redis));
    assert_eq!(promoted, replica);

    // A hub started now writes to the primary that two of the three sentinels name: its
    // vote is on the promoted replica, and the old primary never took it.
    let started = TestHub::start_with(without_rate_limits_at(&url)).await;
    let mut late = started.client_as("late").await;
    let vote = late.vote("late", "after-start", "yes", 1).await;
    assert_eq!(vote["finalDecision"], "yes", "{vote}");
    assert_eq!(
        redis.voters_on(old, "after-start"),
        Vec::<String>::new(),
        "the old primary took a vote: two primaries take votes"
    );
    assert_eq!(redis.voters_on(promoted, "after-start"), ["late"]);

    // The hub that ran through the failover follows too: it reads the decision that is
    // only on the promoted replica, and its next vote goes there.
    eventually(
        "the running hub to read from the promoted replica",
        async || {
            let status = early
                .call("system.quorum.status", json!({"decision": "after-start"}))
                .await;
            (status["result"]["finalDecision"] == "yes").then_some(())
        },
    )
    .await;
    let vote = early.vote("early", "after-failover", "yes", 1).await;
    assert_eq!(vote["finalDecision"], "yes", "{vote}");
    assert_eq!(
        redis.voters_on(old, "after-failover"),
        Vec::<String>::new(),
        "the old primary took a vote: two primaries take votes"
    );
    assert_eq!(redis.voters_on(promoted, "after-failover"), ["early"]);
    // All along, the old primary could have taken them, and one sentinel named it.
    tokio::task::block_in_place(|| assert_split_holds(&redis));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_majority_of_sentinels_naming_a_primary_a_hub_stays_with_the_one_it_follows() {
    log_to_test_output();
    let mut redis = RedisSentinel::start_split();
    let [old, _] = redis.data_ports();
    let sentinels = redis.sentinel_ports();
    let promoted = tokio::task::block_in_place(|| fail_over_leaving_a_split(&redis));
    // The two that agree are listed first, the cut-off one last.
    let url = redis.url_listing(&[sentinels[1], sentinels[2], sentinels[0]]);
    let hub = TestHub::start_with(without_rate_limits_at(&url)).await;
    let mut voter = hub.client_as("steady").await;
    voter.vote("steady", "agreed", "yes", 1).await;
    assert_eq!(redis.voters_on(promoted, "agreed"), ["steady"]);

    // The two stop answering: the only sentinel that answers names the old primary, which
    // says it is the primary.
    let cut_off = sentinels[0];
    redis.pause(sentinels[1]);
    redis.pause(sentinels[2]);
    // Each round of the hub's questions connects to the cut-off sentinel once (and each
    // check here once more): once two rounds begun since have, the first of them, with
    // only the cut-off sentinel answering, is over.
    tokio::task::block_in_place(|| {
        let before = redis.connections_received(cut_off);
        let mut checks = 0;
        eventually_blocking("the hub to ask the sentinels again", || {
            checks += 1;
            let asked = redis.connections_received(cut_off) - before - checks;
            (asked >= 2).then_some(())
        })
    });
    let vote = voter.vote("steady", "alone", "yes", 1).await;
    assert_eq!(vote["finalDecision"], "yes", "{vote}");
    assert_eq!(
        redis.voters_on(old, "alone"),
        Vec::<String>::new(),
        "the hub followed the one sentinel that answered"
    );
    assert_eq!(redis.voters_on(promoted, "alone"), ["steady"]);
    assert_eq!(redis.role(old), "master");
    assert_eq!(redis.named_by(cut_off), Some(old));
}
