//! Where a session stands in the decision event stream: which events it has had, which
//! reach it live, and the live events held while a replay runs, so that a resuming
//! session gets every event once and in order.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::EventId;

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

/// What becomes of a live event at a session's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it now.
    Send,
    /// The session had it already (by replay).
    Had,
    /// Held until the replay that runs ends.
    Held,
    /// A replay runs and `limit` events are held already: the session cannot keep up.
    HoldFull,
}

/// How a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayEnd {
    /// The session's cursor from now on: it never gets an event at or before it.
    pub floor: EventId,
    /// The last event the replay sent.
    pub last_replayed: Option<EventId>,
    /// The replay covered every event after this one up to where live delivery starts
    /// (`None`: it did not finish, or had nothing it could cover).
    pub covered_after: Option<EventId>,
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

    /// Every event after this id reaches the session live (`None`: not known yet).
    pub fn live_after(&self) -> Option<EventId> {
        self.live_after
    }

    /// Takes a live event: whether to send it now, or not (it was had, or is held here
    /// while a replay runs; at most `limit` are held).
    pub fn admit(&mut self, id: EventId, text: &Utf8Bytes, limit: usize) -> Admission {
        if self.live_after.is_none() {
            self.live_after = Some(id.predecessor());
        }
        if id <= self.floor {
            return Admission::Had;
        }
        match self.held.as_mut() {
            None => Admission::Send,
            Some(held) if held.len() >= limit => Admission::HoldFull,
            Some(held) => {
                held.push((id, text.clone()));
                Admission::Held
            }
        }
    }

    /// Moves the cursor back to `to` (the hub's event log is not a continuation of the one
    /// it delivered from), so that the events after `to` in the log as it is now reach the
    /// session.
    pub fn rewind(&mut self, to: EventId) {
        self.floor = self.floor.min(to);
        self.live_after = self.live_after.map(|live_after| live_after.min(to));
        if self.held.is_some() {
            self.rewound_to = Some(self.rewound_to.map_or(to, |before| before.min(to)));
        }
    }

    /// Starts holding live events for a replay of the events after `since` (they may be
    /// held already, from the session's start) and returns the last id the replay must
    /// cover: `Some(None)` means up to the newest, `None` means nothing to replay because
    /// the session gets everything after `since` live. Always followed by `end_replay`.
    pub fn begin_replay(&mut self, since: EventId) -> Option<Option<EventId>> {
        self.held.get_or_insert_with(Vec::new);
        match self.live_after {
            Some(live_after) if since >= live_after => None,
            live_after => Some(live_after),
        }
    }

    /// Ends a replay: raises the cursor to `end.floor` and records what the replay covered.
    /// Returns the last held event to skip: those after it are to be sent, in order
    /// ([`EventCursor::take_held`]).
    ///
    /// A replay that did not finish leaves the covered range where it was, so that a later
    /// replay from the last event the session got covers the rest.
    ///
    /// If the hub rewound meanwhile, the cursor stays at or below where it went back to and
    /// every held event after that point is to be sent: the replay may have read either
    /// log, so the session may get some events twice (it was told, with the rewind's
    /// notice), but none of the log as it is now is skipped.
    pub fn end_replay(&mut self, end: ReplayEnd) -> EventId {
        self.floor = self.floor.max(end.floor);
        if let Some(after) = end.covered_after {
            self.live_after = Some(match self.live_after {
                Some(live_after) => live_after.min(after),
                None => after,
            });
        }
        let skip_upto = end
            .last_replayed
            .map_or(self.floor, |last| last.max(self.floor));
        match self.rewound_to.take() {
            Some(to) => {
                self.floor = self.floor.min(to);
                self.live_after = self.live_after.map(|live_after| live_after.min(to));
                skip_upto.min(to)
            }
            None => skip_upto,
        }
    }

    /// The live events held so far, oldest first; `None` once none are left, which ends
    /// the hold (live events are sent at once again).
    pub fn take_held(&mut self) -> Option<Vec<(EventId, Utf8Bytes)>> {
        match self.held.as_mut() {
            Some(held) if !held.is_empty() => Some(std::mem::take(held)),
            _ => {
                self.held = None;
                None
            }
        }
    }

    /// Ends the hold, dropping what it held: the session is gone.
    pub fn drop_held(&mut self) {
        self.held = None;
    }
}
