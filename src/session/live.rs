//! Live delivery to a session: each decision event at its cursor, sent at once, held
//! behind a replay, or skipped as had; and the replay's own steps at the cursor.

use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::cursor::{Admission, ReplayEnd};
use super::state::SessionHandle;
use crate::protocol::EventId;
use crate::sync::lock;

impl SessionHandle {
    /// Sends a live event without waiting, through the session's queue; a full queue (or
    /// a full hold) marks the session a slow consumer.
    pub fn push_live(&self, id: EventId, text: &Utf8Bytes) {
        if self.admit_live(id, text) {
            self.outbox.push_now(text);
        }
    }

    /// Sends a live event without waiting, given its WebSocket frame: straight into the
    /// socket when it can (see [`super::outbox::Outbox::push_direct`], which says what the
    /// returned value means), else like [`SessionHandle::push_live`].
    #[must_use = "direct writes are counted by the caller"]
    pub fn push_live_direct(&self, id: EventId, text: &Utf8Bytes, frame: &Bytes) -> bool {
        self.admit_live(id, text) && self.outbox.push_direct(text, frame)
    }

    /// Whether a live event is to be sent now: not one the session has had (by replay),
    /// and not held while a replay runs (it is held then, as many as the queue holds).
    fn admit_live(&self, id: EventId, text: &Utf8Bytes) -> bool {
        let admission = lock(&self.cursor).admit(id, text, self.outbox.capacity());
        if admission == Admission::HoldFull {
            self.outbox.evict();
        }
        admission == Admission::Send
    }

    /// Moves the session's cursor back to `to` when the hub's event log is not a
    /// continuation of the one it delivered from, so that the events after `to` in the log
    /// as it is now reach the session, and queues `notice` ahead of them.
    pub fn rewind(&self, to: EventId, notice: Option<&Utf8Bytes>) {
        lock(&self.cursor).rewind(to);
        if let Some(notice) = notice {
            self.outbox.push_notice(notice);
        }
    }

    /// Every event after this id reaches the session live (`None`: not known yet).
    pub(super) fn live_after(&self) -> Option<EventId> {
        lock(&self.cursor).live_after()
    }

    /// Starts holding live events for a replay of the events after `since`; see
    /// [`super::cursor::EventCursor::begin_replay`]. Always followed by `end_replay`.
    pub(super) fn begin_replay(&self, since: EventId) -> Option<Option<EventId>> {
        lock(&self.cursor).begin_replay(since)
    }

    /// Ends a replay (see [`super::cursor::EventCursor::end_replay`]) and sends the held
    /// live events that come after what the session has had, in order. They are sent like
    /// the replay, waiting for room in the queue: a reader that keeps up is not closed for
    /// the replay's own volume. Live events that arrive meanwhile stay held until the hold
    /// is empty.
    pub(super) async fn end_replay(&self, end: ReplayEnd) {
        let skip_upto = lock(&self.cursor).end_replay(end);
        loop {
            let Some(batch) = lock(&self.cursor).take_held() else {
                return;
            };
            for (id, text) in batch {
                if id <= skip_upto {
                    continue;
                }
                if !self.outbox.send_event(text).await {
                    lock(&self.cursor).drop_held(); // the session is gone
                    return;
                }
            }
        }
    }
}
