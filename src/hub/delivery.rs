//! Where a hub stands in the event log: the last event it delivered, the log's epoch, and
//! the recent deliveries it checks a changed log against.

use std::collections::VecDeque;
use std::hash::Hasher;
use std::sync::Arc;

use crate::protocol::EventId;
use crate::session::SessionHandle;

/// Decision events a hub remembers having delivered (id and fingerprint), newest last: when
/// the event log turns out not to be a continuation of the one it delivered from, the
/// newest of them the log still holds is where delivery picks up again.
pub const RECENT_DELIVERIES: usize = 1024;

/// Where a hub stands in the event log.
#[derive(Default)]
pub(super) struct Delivery {
    /// The last decision event this hub delivered (or started after).
    pub(super) last: Option<EventId>,
    /// The epoch of the log it delivers from, once read.
    pub(super) epoch: Option<String>,
    /// The last [`RECENT_DELIVERIES`] events it delivered, oldest first.
    pub(super) recent: VecDeque<(EventId, u64)>,
    /// The open sessions, as the last delivery listed them, in the order they opened;
    /// dropped whenever a session opens or closes. Between those, deliveries share one
    /// list instead of copying the session map (and touching every session) for each event.
    pub(super) listeners: Option<Arc<[Arc<SessionHandle>]>>,
}

impl Delivery {
    pub(super) fn remember(&mut self, id: EventId, fingerprint: u64) {
        if self.recent.len() == RECENT_DELIVERIES {
            self.recent.pop_front();
        }
        self.recent.push_back((id, fingerprint));
    }
}

/// Tells one delivered event from another event under the same id (a promoted replica can
/// reuse ids): a hash of its notification's text.
pub fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(text.as_bytes());
    hasher.finish()
}
