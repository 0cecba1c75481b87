//! Who on a hub wants dashboard events, kept apart from the session map so that passing
//! one on never walks every session.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::session::SessionHandle;
use crate::sync::lock;

/// Who on this hub wants dashboard events (`quorum.vote.recorded`, `instance.*`), and
/// whether the listener receives them: every vote publishes one, so a hub subscribes to
/// them only while one of its sessions wants them.
pub(super) struct Dashboards {
    /// Sessions subscribed to any event beyond decisions, in the order they subscribed:
    /// a dashboard event goes to these alone, never through every open session.
    watchers: Mutex<Arc<[Arc<SessionHandle>]>>,
    /// Whether any session wants dashboard events; the listener follows it.
    pub(super) wanted: watch::Sender<bool>,
    /// Whether the listener is subscribed to the dashboard channels right now.
    pub(super) live: watch::Sender<bool>,
}

impl Dashboards {
    pub(super) fn new() -> Self {
        Self {
            watchers: Mutex::new(Arc::new([])),
            wanted: watch::Sender::new(false),
            live: watch::Sender::new(false),
        }
    }

    pub(super) fn watcher_added(&self, session: Arc<SessionHandle>) {
        {
            let mut watchers = lock(&self.watchers);
            let mut list = watchers.to_vec();
            list.push(session);
            *watchers = list.into();
        }
        self.update_wanted();
    }

    pub(super) fn watcher_removed(&self, session: u64) {
        {
            let mut watchers = lock(&self.watchers);
            let list: Vec<_> = watchers
                .iter()
                .filter(|s| s.id != session)
                .cloned()
                .collect();
            *watchers = list.into();
        }
        self.update_wanted();
    }

    /// The sessions subscribed to dashboard events right now.
    pub(super) fn watchers(&self) -> Arc<[Arc<SessionHandle>]> {
        lock(&self.watchers).clone()
    }

    /// Sets `wanted` from the watchers as they are now. Done under the watch's lock, so of
    /// two sessions racing (one leaving, one arriving) the last to update sees the final
    /// list.
    fn update_wanted(&self) {
        self.wanted.send_if_modified(|wanted| {
            let now = !lock(&self.watchers).is_empty();
            std::mem::replace(wanted, now) != now
        });
    }
}
