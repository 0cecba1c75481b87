//! The outbox's byte budget: what each message holds, and who waits or is evicted.

use std::sync::Arc;

use super::*;

/// An outbox of 64 messages and `queue_bytes` bytes, shared as a session shares it.
fn session(queue_bytes: usize) -> (Arc<Outbox>, queue::Receiver<Outbound>) {
    let (outbox, queue) = Outbox::new(OutboxSettings {
        session: 1,
        capacity: 64,
        byte_budget: queue_bytes,
        metrics: Metrics::new(),
        wire: None,
    });
    (Arc::new(outbox), queue)
}

fn text(len: usize) -> Utf8Bytes {
    "x".repeat(len).into()
}

fn reply(len: usize) -> Outbound {
    Outbound::Reply(text(len))
}

fn slow(session: &Outbox) -> bool {
    session.is_slow()
}

/// Takes the next message off the queue and writes it, as the writer does.
async fn write_next(session: &Outbox, queue: &mut queue::Receiver<Outbound>) {
    let message = queue.recv().await.expect("a queued message");
    session.written(Held::of(&message));
}

/// Whether `send` is still waiting after everything else has had its turn.
async fn still_waiting(waiting: &tokio::task::JoinHandle<bool>) -> bool {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    !waiting.is_finished()
}

#[tokio::test]
async fn every_message_holds_its_whole_length_until_written() {
    let (session, mut queue) = session(1000);
    assert!(session.send(reply(5000)).await);
    session.push_now(&text(300));
    assert_eq!(
        session.held_now(),
        Held {
            events: 300,
            replies: 5000
        }
    );
    write_next(&session, &mut queue).await;
    assert_eq!(session.held_now(), Held::events(300));
    write_next(&session, &mut queue).await;
    assert_eq!(session.held_now(), Held::default());
    assert_eq!(session.metrics.session_outbound_peak_bytes.get(), 5300);
}

#[tokio::test]
async fn the_hubs_total_counts_each_session_in_whole_steps() {
    let (session, mut queue) = session(1 << 20);
    let total = session.metrics.session_outbound_bytes.clone();
    assert!(session.send(reply(HELD_STEP_BYTES + 100)).await);
    session.push_now(&text(HELD_STEP_BYTES - 50));
    assert_eq!(total.get(), 2 * HELD_STEP_BYTES as i64);
    write_next(&session, &mut queue).await;
    assert_eq!(total.get(), 0, "less than a step is held");
    assert!(session.send(reply(HELD_STEP_BYTES)).await);
    assert_eq!(total.get(), HELD_STEP_BYTES as i64);
    // What is still queued when the session goes is taken out of the total.
    drop((session, queue));
    assert_eq!(total.get(), 0);
}

#[tokio::test]
async fn replies_wait_once_they_hold_half_the_budget() {
    let (session, mut queue) = session(1000);
    // Under half the budget, a reply goes in at once, and may take the replies past it.
    assert!(session.send(reply(300)).await);
    assert!(session.send(reply(300)).await);
    // At half, the next one waits...
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.send(reply(10)).await })
    };
    assert!(still_waiting(&waiting).await);
    // ...until the writer has written enough to bring them under it.
    write_next(&session, &mut queue).await;
    assert!(waiting.await.unwrap());
    assert_eq!(session.held_now(), Held::replies(310));
}

#[tokio::test]
async fn a_close_holds_nothing_and_never_waits_for_room() {
    let (session, mut queue) = session(1000);
    assert!(session.send(reply(600)).await);
    assert!(session.send(Outbound::Close(1000, "bye")).await);
    write_next(&session, &mut queue).await;
    assert!(matches!(
        queue.recv().await,
        Some(Outbound::Close(1000, "bye"))
    ));
}

#[tokio::test]
async fn events_have_half_the_budget_beside_any_reply() {
    let (session, _queue) = session(1000);
    // A reply far larger than the budget goes out alone...
    assert!(session.send(reply(5000)).await);
    // ...and leaves pushed events half the budget: a session that reads is not closed
    // for its own large reply.
    session.push_now(&text(450));
    session.push_now(&text(50));
    assert!(!slow(&session), "no room beside a large reply");
    // One more byte does not fit.
    session.push_now(&text(1));
    assert!(slow(&session));
    assert_eq!(
        session.held_now(),
        Held {
            events: 500,
            replies: 5000
        }
    );
}

#[tokio::test]
async fn events_take_what_the_replies_leave_of_the_budget() {
    let (session, _queue) = session(1000);
    assert!(session.send(reply(200)).await);
    session.push_now(&text(800));
    assert!(!slow(&session));
    session.push_now(&text(1));
    assert!(
        slow(&session),
        "the replies and events held more than the budget"
    );
    assert_eq!(session.held_now().total(), 1000);
}

#[tokio::test]
async fn the_budget_is_passed_by_one_reply_at_most() {
    let (session, _queue) = session(1000);
    // Events fill what they may while no reply is held...
    session.push_now(&text(1000));
    // ...a reply still goes in (the replies hold less than half)...
    assert!(session.send(reply(700)).await);
    // ...and then nothing more does: no event, and no reply.
    session.push_now(&text(1));
    assert!(slow(&session));
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.send(reply(1)).await })
    };
    assert!(still_waiting(&waiting).await);
    assert_eq!(session.held_now().total(), 1700);
    assert_eq!(session.metrics.session_outbound_peak_bytes.get(), 1700);
    waiting.abort();
}

#[tokio::test]
async fn a_reply_waiting_for_room_gives_up_when_the_writer_is_gone() {
    let (session, _queue) = session(1000);
    assert!(session.send(reply(800)).await);
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.send(reply(500)).await })
    };
    assert!(still_waiting(&waiting).await);
    session.close_queue();
    assert!(!waiting.await.unwrap());
    assert_eq!(
        session.held_now(),
        Held::replies(800),
        "the refused reply holds nothing"
    );
}

#[tokio::test]
async fn a_reply_waits_for_a_place_in_a_queue_full_by_messages_holding_its_bytes() {
    let (session, mut queue) = session(1_000_000);
    for _ in 0..64 {
        assert!(session.queue_reply(reply(10)).await);
    }
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.queue_reply(reply(500)).await })
    };
    assert!(still_waiting(&waiting).await);
    assert_eq!(session.held_now(), Held::replies(64 * 10 + 500));
    write_next(&session, &mut queue).await;
    assert!(waiting.await.unwrap(), "queued once a place was free");
    assert_eq!(session.held_now(), Held::replies(63 * 10 + 500));

    // Full again: a reply that waits gives its bytes back when the writer goes.
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move { session.queue_reply(reply(700)).await })
    };
    assert!(still_waiting(&waiting).await);
    assert_eq!(session.held_now(), Held::replies(63 * 10 + 500 + 700));
    drop(queue);
    assert!(!waiting.await.unwrap(), "the writer is gone");
    assert_eq!(session.held_now(), Held::replies(63 * 10 + 500));
    assert!(
        !session.queue_reply(reply(900)).await,
        "refused at once once the writer is gone"
    );
    assert_eq!(session.held_now(), Held::replies(63 * 10 + 500));
}
