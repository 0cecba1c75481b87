//! Where a session stands in the decision event stream: live events held while a replay
//! runs, and the replay itself, so a resuming session gets every event once and in order.

use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::state::{Outbound, SessionHandle};
use crate::error::Error;
use crate::protocol::{EventId, EventsIncomplete, GapReason, frame};
use crate::store::{CursorPlace, Store};
use crate::sync::lock;

/// Longest a notice about a malformed cursor waits to learn which events the log holds;
/// past it the notice goes out without them.
const LOG_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// Set when the hub rewound while a replay ran: how far back the session's cursor went.
    rewound_to: Option<EventId>,
}

impl EventCursor {
    /// A cursor at `live_after`; with `hold`, live events are held from the start.
    pub fn new(live_after: Option<EventId>, hold: bool) -> Self {
        Self {
            live_after,
            floor: EventId::ZERO,
            held: hold.then(Vec::new),
            rewound_to: None,
        }
    }
}

impl SessionHandle {
    /// Sends a live event without waiting, through the session's queue; a full queue (or
    /// a full hold) marks the session a slow consumer.
    pub fn push_live(&self, id: EventId, text: &Utf8Bytes) {
        if self.admit_live(id, text) {
            self.push_now(text);
        }
    }

    /// Sends a live event without waiting, given its WebSocket frame: straight into the
    /// socket when it can (see [`SessionHandle::push_direct`], which says what the
    /// returned value means), else like [`SessionHandle::push_live`].
    #[must_use = "direct writes are counted by the caller"]
    pub fn push_live_direct(&self, id: EventId, text: &Utf8Bytes, frame: &Bytes) -> bool {
        self.admit_live(id, text) && self.push_direct(text, frame)
    }

    /// Whether a live event is to be sent now: not one the session has had (by replay),
    /// and not held while a replay runs (it is held here then).
    fn admit_live(&self, id: EventId, text: &Utf8Bytes) -> bool {
        let mut cursor = lock(&self.live.events);
        if cursor.live_after.is_none() {
            cursor.live_after = Some(id.predecessor());
        }
        if id <= cursor.floor {
            return false;
        }
        if let Some(held) = cursor.held.as_mut() {
            if held.len() >= self.queue_len {
                self.evict();
            } else {
                held.push((id, text.clone()));
            }
            return false;
        }
        true
    }

    /// Moves the session's cursor back to `to` when the hub's event log is not a
    /// continuation of the one it delivered from, so that the events after `to` in the log
    /// as it is now reach the session, and queues `notice` ahead of them.
    pub fn rewind(&self, to: EventId, notice: Option<&Utf8Bytes>) {
        let mut cursor = lock(&self.live.events);
        cursor.floor = cursor.floor.min(to);
        cursor.live_after = cursor.live_after.map(|live_after| live_after.min(to));
        if cursor.held.is_some() {
            cursor.rewound_to = Some(cursor.rewound_to.map_or(to, |before| before.min(to)));
        }
        drop(cursor);
        if let Some(notice) = notice {
            self.push_notice(notice);
        }
    }

    /// Starts holding live events for a replay of the events after `since` (they may be
    /// held already, from the session's start) and returns the last id the replay must
    /// cover: `Some(None)` means up to the newest, `None` means nothing to replay because
    /// the session gets everything after `since` live. Always followed by `end_replay`.
    fn begin_replay(&self, since: EventId) -> Option<Option<EventId>> {
        let mut cursor = lock(&self.live.events);
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
    ///
    /// If the hub rewound meanwhile, the cursor stays at or below where it went back to and
    /// every held event after that point is sent: the replay may have read either log, so
    /// the session may get some events twice (it was told, with the rewind's notice), but
    /// none of the log as it is now is skipped.
    async fn end_replay(&self, end: ReplayEnd) {
        let skip_upto = {
            let mut cursor = lock(&self.live.events);
            cursor.floor = cursor.floor.max(end.floor);
            if let Some(after) = end.covered_after {
                cursor.live_after = Some(match cursor.live_after {
                    Some(live_after) => live_after.min(after),
                    None => after,
                });
            }
            let skip_upto = end
                .last_replayed
                .map_or(cursor.floor, |last| last.max(cursor.floor));
            match cursor.rewound_to.take() {
                Some(to) => {
                    cursor.floor = cursor.floor.min(to);
                    cursor.live_after = cursor.live_after.map(|live_after| live_after.min(to));
                    skip_upto.min(to)
                }
                None => skip_upto,
            }
        };
        loop {
            let batch = {
                let mut cursor = lock(&self.live.events);
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
                if !self.send(Outbound::Reply(text)).await {
                    lock(&self.live.events).held = None; // the session is gone
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
            session.send(Outbound::Reply(text.into())).await;
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
        session.send(Outbound::Reply(text.into())).await;
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
            let live_after = lock(&session.live.events)
                .live_after
                .unwrap_or(EventId::ZERO);
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
            session.send(Outbound::Reply(text.into())).await;
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
            assert!(session.send(Outbound::Reply(text.into())).await);
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
        assert!(!session.slow.load(std::sync::atomic::Ordering::Acquire));
    }

    /// The texts queued so far.
    fn queued(queue: &mut tokio::sync::mpsc::Receiver<Outbound>) -> Vec<String> {
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
        assert!(session.send(Outbound::Reply("replayed-3".into())).await);
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
