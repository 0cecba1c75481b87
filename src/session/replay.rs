//! Where a session stands in the decision event stream: live events held while a replay
//! runs, and the replay itself, so a resuming session gets every event once and in order.

use axum::extract::ws::Utf8Bytes;

use super::state::{Outbound, SessionHandle, lock};
use crate::error::Error;
use crate::hub::Hub;
use crate::protocol::{EventId, EventsIncomplete, GapReason, frame};
use crate::store::CursorPlace;

/// Where a session stands in the decision event stream.
#[derive(Debug)]
pub struct EventCursor {
    /// Every event after this id reaches the session live (or is held for it);
    /// a replay covers what lies before. `None` until the hub knows its own position.
    live_after: Option<EventId>,
    /// The session's own cursor: it never gets an event at or before this one.
    floor: EventId,
    /// While a replay runs, live events wait here so that they follow the replayed ones.
    held: Option<Vec<(EventId, Utf8Bytes)>>,
}

impl EventCursor {
    /// A cursor at `live_after`; with `hold`, live events are held from the start.
    pub fn new(live_after: Option<EventId>, hold: bool) -> Self {
        Self {
            live_after,
            floor: EventId::ZERO,
            held: hold.then(Vec::new),
        }
    }
}

impl SessionHandle {
    /// Queues a live event without waiting; a full queue (or a full hold) marks the
    /// session a slow consumer.
    pub fn push_live(&self, id: EventId, text: &Utf8Bytes) {
        let mut cursor = lock(&self.events);
        if cursor.live_after.is_none() {
            cursor.live_after = Some(id.predecessor());
        }
        if id <= cursor.floor {
            return;
        }
        if let Some(held) = cursor.held.as_mut() {
            if held.len() >= self.queue_len {
                self.evict();
            } else {
                held.push((id, text.clone()));
            }
            return;
        }
        drop(cursor);
        self.push_now(text);
    }

    /// Starts holding live events for a replay of the events after `since` (they may be
    /// held already, from the session's start) and returns the last id the replay must
    /// cover: `Some(None)` means up to the newest, `None` means nothing to replay because
    /// the session gets everything after `since` live. Always followed by `end_replay`.
    fn begin_replay(&self, since: EventId) -> Option<Option<EventId>> {
        let mut cursor = lock(&self.events);
        cursor.held.get_or_insert_with(Vec::new);
        match cursor.live_after {
            Some(live_after) if since >= live_after => None,
            live_after => Some(live_after),
        }
    }

    /// Ends a replay: raises the session's cursor to `end.floor`, records what the replay
    /// covered and sends the held live events that come after both, in order. They are sent
    /// like the replay, waiting for room in the queue: a reader that keeps up is not closed
    /// for the replay's own volume. Live events that arrive meanwhile stay held until the
    /// hold is empty.
    ///
    /// A replay that did not finish leaves the covered range where it was, so that a later
    /// replay from the last event the session got covers the rest.
    async fn end_replay(&self, end: ReplayEnd) {
        let skip_upto = {
            let mut cursor = lock(&self.events);
            cursor.floor = cursor.floor.max(end.floor);
            if let Some(after) = end.covered_after {
                cursor.live_after = Some(match cursor.live_after {
                    Some(live_after) => live_after.min(after),
                    None => after,
                });
            }
            end.last_replayed
                .map_or(cursor.floor, |last| last.max(cursor.floor))
        };
        loop {
            let batch = {
                let mut cursor = lock(&self.events);
                match cursor.held.as_mut() {
                    Some(held) if !held.is_empty() => std::mem::take(held),
                    _ => {
                        cursor.held = None;
                        return;
                    }
                }
            };
            for (id, text) in batch {
                if id <= skip_upto {
                    continue;
                }
                if !self.send(Outbound::Text(text)).await {
                    lock(&self.events).held = None; // the session is gone
                    return;
                }
                self.metrics.events_delivered.inc();
            }
        }
    }
}

/// How a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplayEnd {
    /// The session's cursor from now on: it never gets an event at or before it.
    floor: EventId,
    /// The last event the replay sent.
    last_replayed: Option<EventId>,
    /// The replay covered every event after this one up to where live delivery starts
    /// (`None`: it did not finish, or had nothing it could cover).
    covered_after: Option<EventId>,
}

/// Sends a session every decision event after `since` that it has not had, in order,
/// before any live event that arrives meanwhile; first a notice if some of them are no
/// longer kept, or if `since` is ahead of every event (then the session's cursor moves
/// back to the newest event). Returns how many events it replayed.
pub async fn replay(hub: &Hub, session: &SessionHandle, since: EventId) -> Result<usize, Error> {
    replay_then(hub, session, since, false).await
}

/// [`replay`], and with `notify_failure`, a `system.events.incomplete` notice when Redis
/// cannot be read, queued before the held live events are released, so that the session
/// learns of the gap before it sees anything newer.
async fn replay_then(
    hub: &Hub,
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
        let notice = match hub.store.place_cursor(since).await? {
            CursorPlace::Kept => None,
            CursorPlace::Trimmed => Some(EventsIncomplete::after(since)),
            CursorPlace::Ahead { newest } => {
                end.floor = newest;
                Some(EventsIncomplete::ahead(since, newest))
            }
        };
        if let Some(notice) = notice {
            let ahead = notice.reason == GapReason::Ahead;
            let text = frame::events_incomplete(&notice);
            session.send(Outbound::Text(text.into())).await;
            if ahead {
                return Ok(());
            }
        }
        if let Some(upto) = plan {
            let mut after = since;
            loop {
                let page = hub.store.events_after(after, upto).await?;
                for event in &page.events {
                    session
                        .send(Outbound::Text(frame::decision_made(event).into()))
                        .await;
                    end.last_replayed = Some(event.event_id);
                    after = event.event_id;
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
        session.send(Outbound::Text(text.into())).await;
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
pub async fn resume(hub: &Hub, session: &SessionHandle, from: Resume) {
    match from {
        Resume::After(since) => {
            if let Err(err) = replay_then(hub, session, since, true).await {
                tracing::warn!(session = session.id, %err, "could not replay missed decision events");
            }
        }
        Resume::Malformed(raw) => {
            let live_after = lock(&session.events).live_after.unwrap_or(EventId::ZERO);
            let text = frame::events_incomplete(&EventsIncomplete::malformed(&raw, live_after));
            session.send(Outbound::Text(text.into())).await;
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
    ) -> (Arc<SessionHandle>, tokio::sync::mpsc::Receiver<Outbound>) {
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
        let Some(Outbound::Text(first)) = queue.recv().await else {
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
            assert!(session.send(Outbound::Text(text.into())).await);
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
                    Ok(Some(Outbound::Text(text))) => seen.push(text.to_string()),
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
        assert!(!session.slow.load(std::sync::atomic::Ordering::Acquire));
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
