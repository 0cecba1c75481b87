//! The replay of what a resuming session missed: every decision event after its cursor,
//! read from the event log page by page, before the live events held meanwhile.

use super::cursor::ReplayEnd;
use super::outbox::Outbound;
use super::state::SessionHandle;
use crate::error::Error;
use crate::protocol::{EventId, EventsIncomplete, GapReason, frame};
use crate::store::{CursorPlace, Store};

/// Longest a notice about a malformed cursor waits to learn which events the log holds;
/// past it the notice goes out without them.
const LOG_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends a session every decision event after `since` that it has not had, in order,
/// before any live event that arrives meanwhile; first a notice if some of them are no
/// longer kept, if `since` is not an event of the log, or if `since` is ahead of every event
/// (then the session's cursor moves back to the newest event). Returns how many events it
/// replayed.
pub async fn replay(
    store: &Store,
    session: &SessionHandle,
    since: EventId,
) -> Result<usize, Error> {
    replay_then(store, session, since, false).await
}

/// [`replay`], and with `notify_failure`, a `system.events.incomplete` notice when Redis
/// cannot be read, queued before the held live events are released, so that the session
/// learns of the gap before it sees anything newer.
async fn replay_then(
    store: &Store,
    session: &SessionHandle,
    since: EventId,
    notify_failure: bool,
) -> Result<usize, Error> {
    let plan = session.begin_replay(since);
    let mut end = ReplayEnd {
        floor: since,
        last_replayed: None,
        covered_after: None,
    };
    let mut replayed = 0;
    let result = async {
        let placed = store.place_cursor(since).await?;
        let notice = match placed.place {
            CursorPlace::Kept => None,
            CursorPlace::Trimmed => Some(EventsIncomplete::after(since)),
            // The events after a missing id, in id order, are still the ones that follow it.
            CursorPlace::Missing => Some(EventsIncomplete::unknown(since)),
            CursorPlace::Ahead { newest } => {
                end.floor = newest;
                Some(EventsIncomplete::ahead(since, newest))
            }
        };
        if let Some(notice) = notice {
            let notice = notice.holding(placed.oldest, placed.newest);
            let ahead = notice.reason == GapReason::Ahead;
            let text = frame::events_incomplete(&notice);
            session.outbox.send(Outbound::Reply(text.into())).await;
            if ahead {
                return Ok(());
            }
        }
        if let Some(upto) = plan {
            let mut after = since;
            loop {
                let page = store.events_after(after, upto).await?;
                for event in &page.events {
                    session
                        .outbox
                        .send(Outbound::Reply(frame::logged_event(event).into()))
                        .await;
                    end.last_replayed = Some(event.event_id());
                    after = event.event_id();
                    replayed += 1;
                }
                if !page.more {
                    break;
                }
            }
        }
        end.covered_after = Some(since);
        Ok(())
    }
    .await;
    if result.is_err() && notify_failure {
        let notice = EventsIncomplete::unreadable(end.last_replayed.unwrap_or(since));
        let text = frame::events_incomplete(&notice);
        session.outbox.send(Outbound::Reply(text.into())).await;
    }
    session.end_replay(end).await;
    result.map(|()| replayed)
}

/// Where a session that opens with a cursor resumes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Replay the decision events after this one before going live.
    After(EventId),
    /// The cursor given is not an event id: the session is told so, then goes live.
    Malformed(String),
}

/// [`replay`] for a session that resumes as it opens: when Redis cannot be read, or the
/// cursor is not an event id, the session is told with a `system.events.incomplete`
/// notice rather than left to assume it has everything.
pub async fn resume(store: &Store, session: &SessionHandle, from: Resume) {
    match from {
        Resume::After(since) => {
            if let Err(err) = replay_then(store, session, since, true).await {
                tracing::warn!(session = session.id, %err, "could not replay missed decision events");
            }
        }
        Resume::Malformed(raw) => {
            let live_after = session.live_after().unwrap_or(EventId::ZERO);
            // What the log holds, if Redis answers soon; the notice goes out either way.
            let log = tokio::time::timeout(LOG_LOOKUP_TIMEOUT, store.place_cursor(EventId::ZERO))
                .await
                .ok()
                .and_then(Result::ok);
            let notice = EventsIncomplete::malformed(&raw, live_after).holding(
                log.and_then(|log| log.oldest),
                log.and_then(|log| log.newest),
            );
            let text = frame::events_incomplete(&notice);
            session.outbox.send(Outbound::Reply(text.into())).await;
            session
                .end_replay(ReplayEnd {
                    floor: EventId::ZERO,
                    last_replayed: None,
                    covered_after: None,
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(ms: u64) -> EventId {
        EventId { ms, seq: 0 }
    }

    /// A session with a queue of `queue_len` that gets live events after `live_after`.
    fn session(
        queue_len: usize,
        live_after: EventId,
        hold: bool,
    ) -> (
        Arc<SessionHandle>,
        crate::session::queue::Receiver<Outbound>,
    ) {
        SessionHandle::for_test(queue_len, 1 << 20, Some(live_after), hold)
    }

    /// The end of a replay from `since` that finished, having sent up to `last`.
    fn finished(since: EventId, last: Option<EventId>) -> ReplayEnd {
        ReplayEnd {
            floor: since,
            last_replayed: last,
            covered_after: Some(since),
        }
    }

    #[tokio::test]
    async fn a_session_never_gets_a_live_event_at_or_before_its_cursor() {
        // The session resumes from 4, which it had from another hub, while this hub has
        // delivered only up to 2: events 3 and 4 still reach this hub afterwards.
        let (session, mut queue) = session(8, id(2), true);
        assert_eq!(session.begin_replay(id(4)), None);
        session.push_live(id(3), &"live-3".into());
        session.end_replay(finished(id(4), None)).await;
        session.push_live(id(4), &"live-4".into());
        session.push_live(id(5), &"live-5".into());
        let Some(Outbound::Pushed(first)) = queue.recv().await else {
            panic!("nothing queued")
        };
        assert_eq!(first.as_str(), "live-5");
        assert!(queue.try_recv().is_err(), "more than event 5 was queued");
    }

    #[tokio::test]
    async fn live_events_held_behind_a_replay_wait_for_room_instead_of_evicting() {
        let (session, mut queue) = session(2, id(1), true);
        assert_eq!(session.begin_replay(id(0)), Some(Some(id(1))));
        // The replay fills the queue, and two live events arrive meanwhile.
        for text in ["replayed-1", "replayed-2"] {
            assert!(session.outbox.send(Outbound::Reply(text.into())).await);
        }
        session.push_live(id(2), &"live-2".into());
        session.push_live(id(3), &"live-3".into());
        // The reader catches up only after the replay has ended.
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            // Whatever arrives within a generous bound; an evicted session gets no more.
            let bound = std::time::Duration::from_secs(5);
            while seen.len() < 4 {
                match tokio::time::timeout(bound, queue.recv()).await {
                    Ok(Some(Outbound::Reply(text))) => seen.push(text.to_string()),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(_) => break,
                }
            }
            seen
        });
        session.end_replay(finished(id(0), Some(id(1)))).await;
        assert_eq!(
            reader.await.unwrap(),
            ["replayed-1", "replayed-2", "live-2", "live-3"]
        );
        assert!(!session.outbox.is_slow());
    }

    /// The texts queued so far.
    fn queued(queue: &mut crate::session::queue::Receiver<Outbound>) -> Vec<String> {
        std::iter::from_fn(|| match queue.try_recv() {
            Ok(Outbound::Pushed(text) | Outbound::Reply(text)) => Some(text.to_string()),
            _ => None,
        })
        .collect()
    }

    #[tokio::test]
    async fn a_rewind_lets_events_below_the_cursor_through_after_its_notice() {
        // The session resumed from 9; the hub's log then went back to 4.
        let (session, mut queue) = session(8, id(9), false);
        assert_eq!(session.begin_replay(id(9)), None);
        session.end_replay(finished(id(9), None)).await;
        session.push_live(id(7), &"old-7".into());
        session.rewind(id(4), Some(&"notice".into()));
        session.push_live(id(5), &"new-5".into());
        session.push_live(id(6), &"new-6".into());
        assert_eq!(queued(&mut queue), ["notice", "new-5", "new-6"]);
    }

    #[tokio::test]
    async fn a_rewind_during_a_replay_skips_none_of_the_new_log() {
        let (session, mut queue) = session(8, id(5), true);
        assert_eq!(session.begin_replay(id(2)), Some(Some(id(5))));
        assert!(
            session
                .outbox
                .send(Outbound::Reply("replayed-3".into()))
                .await
        );
        // The log went back to 1 while the replay ran; the new log's events are held.
        session.rewind(id(1), Some(&"notice".into()));
        session.push_live(id(2), &"new-2".into());
        session.push_live(id(3), &"new-3".into());
        session.end_replay(finished(id(2), Some(id(3)))).await;
        assert_eq!(
            queued(&mut queue),
            ["replayed-3", "notice", "new-2", "new-3"]
        );
        // The cursor stays where the log went back to.
        session.push_live(id(4), &"new-4".into());
        assert_eq!(queued(&mut queue), ["new-4"]);
    }

    #[tokio::test]
    async fn a_replay_that_failed_leaves_the_cursor_for_the_next_one() {
        let (session, _queue) = session(8, id(5), false);
        assert_eq!(session.begin_replay(id(2)), Some(Some(id(5))));
        session
            .end_replay(ReplayEnd {
                covered_after: None,
                ..finished(id(2), None)
            })
            .await;
        // Nothing was replayed: the events after 2 are still owed, up to the same point.
        assert_eq!(session.begin_replay(id(2)), Some(Some(id(5))));
        session.end_replay(finished(id(2), None)).await;
        assert_eq!(session.begin_replay(id(2)), None);
    }
}
