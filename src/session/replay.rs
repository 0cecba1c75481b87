//! Where a session stands in the decision event stream: live events held while a replay
//! runs, and the replay itself, so a resuming session gets every event once and in order.

use axum::extract::ws::Utf8Bytes;

use super::state::{Outbound, SessionHandle, lock};
use crate::error::Error;
use crate::hub::Hub;
use crate::protocol::{EventId, frame};

/// Where a session stands in the decision event stream.
#[derive(Debug)]
pub struct EventCursor {
    /// Every event after this id reaches the session live (or is held for it);
    /// a replay covers what lies before. `None` until the hub knows its own position.
    live_after: Option<EventId>,
    /// While a replay runs, live events wait here so that they follow the replayed ones.
    held: Option<Vec<(EventId, Utf8Bytes)>>,
}

impl EventCursor {
    /// A cursor at `live_after`; with `hold`, live events are held from the start.
    pub fn new(live_after: Option<EventId>, hold: bool) -> Self {
        Self {
            live_after,
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

    /// Ends a replay that delivered events up to `last_replayed`: releases the held live
    /// events that come after it, in order, and makes `since` the new start of what the
    /// session has seen.
    fn end_replay(&self, since: EventId, last_replayed: Option<EventId>) {
        let mut cursor = lock(&self.events);
        let held = cursor.held.take().unwrap_or_default();
        cursor.live_after = Some(match cursor.live_after {
            Some(live_after) => live_after.min(since),
            None => since,
        });
        drop(cursor);
        for (id, text) in held {
            if last_replayed.is_none_or(|last| id > last) {
                self.push_now(&text);
            }
        }
    }
}

/// Sends a session every decision event after `since` that it has not had, in order,
/// before any live event that arrives meanwhile; first a notice if some of them are no
/// longer kept. Returns how many events it replayed.
pub async fn replay(hub: &Hub, session: &SessionHandle, since: EventId) -> Result<usize, Error> {
    let plan = session.begin_replay(since);
    let mut last = None;
    let mut replayed = 0;
    let result = async {
        let Some(upto) = plan else { return Ok(()) };
        if hub.store.events_missing_after(since).await? {
            let notice = frame::events_incomplete(since);
            session.send(Outbound::Text(notice.into())).await;
        }
        let mut after = since;
        loop {
            let page = hub.store.events_after(after, upto).await?;
            for event in &page.events {
                session
                    .send(Outbound::Text(frame::decision_made(event).into()))
                    .await;
                (last, after) = (Some(event.event_id), event.event_id);
                replayed += 1;
            }
            if !page.more {
                return Ok(());
            }
        }
    }
    .await;
    session.end_replay(since, last);
    result.map(|()| replayed)
}
