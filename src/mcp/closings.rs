//! The decisions the hub session sees close, passed to the tool calls waiting on them and
//! announced to the host for the resources it subscribed to.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rmcp::model::ResourceUpdatedNotificationParam;
use rmcp::{Peer, RoleServer};
use tokio::sync::{broadcast, mpsc, watch};

use super::resources;
use crate::client::Link;
use crate::protocol::Notification;
use crate::sync::lock;

/// Changes held for waiting calls that have not looked at them yet; one that falls further
/// behind looks at its decision again (as after [`Change::LookAgain`]).
const BACKLOG: usize = 1024;

/// What a waiting call learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// This decision was made or expired.
    Closed(String),
    /// Any decision may have closed unseen: the hub said some events are not coming (a
    /// trimmed or replaced event log), or the session reconnected. Look again.
    LookAgain,
}

/// Follows the hub session's notifications.
pub(super) struct Closings {
    changes: broadcast::Sender<Change>,
    /// The decisions whose resources the host subscribed to, and the host to tell.
    subscribed: Mutex<Subscribed>,
}

#[derive(Default)]
struct Subscribed {
    decisions: HashSet<String>,
    host: Option<Peer<RoleServer>>,
}

impl Closings {
    /// Starts the task that reads `events` (and watches `link` for reconnections) until the
    /// client closes.
    pub(super) fn follow(
        mut events: mpsc::Receiver<Notification>,
        mut link: watch::Receiver<Link>,
    ) -> Arc<Self> {
        let (changes, _) = broadcast::channel(BACKLOG);
        let closings = Arc::new(Closings {
            changes,
            subscribed: Mutex::default(),
        });
        let follower = Arc::clone(&closings);
        tokio::spawn(async move {
            let mut link_open = true;
            loop {
                tokio::select! {
                    notification = events.recv() => match notification {
                        Some(notification) => follower.take(notification).await,
                        None => return,
                    },
                    changed = link.changed(), if link_open => match changed {
                        Ok(()) => {
                            link.borrow_and_update();
                            let _ = follower.changes.send(Change::LookAgain);
                        }
                        Err(_) => link_open = false,
                    },
                }
            }
        });
        closings
    }

    /// A receiver of every change from now on: take it before looking at a decision, so
    /// that a change after the look is not missed.
    pub(super) fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(super) fn subscribe(&self, decision: String, host: Peer<RoleServer>) {
        let mut subscribed = lock(&self.subscribed);
        subscribed.decisions.insert(decision);
        subscribed.host = Some(host);
    }

    pub(super) fn unsubscribe(&self, decision: &str) {
        lock(&self.subscribed).decisions.remove(decision);
    }

    async fn take(&self, notification: Notification) {
        let closed = match notification {
            Notification::DecisionMade(event) => event.decision,
            Notification::DecisionExpired(event) => event.decision,
            Notification::EventsIncomplete(notice) => {
                tracing::warn!(reason = ?notice.reason, "{}", notice.message);
                let _ = self.changes.send(Change::LookAgain);
                // Any subscribed decision may have closed among the events not coming.
                let (decisions, host) = {
                    let subscribed = lock(&self.subscribed);
                    let decisions: Vec<String> = subscribed.decisions.iter().cloned().collect();
                    (decisions, subscribed.host.clone())
                };
                if let Some(host) = host {
                    for decision in decisions {
                        announce(&host, &decision).await;
                    }
                }
                return;
            }
            _ => return,
        };
        let host = {
            let subscribed = lock(&self.subscribed);
            subscribed
                .decisions
                .contains(&closed)
                .then(|| subscribed.host.clone())
                .flatten()
        };
        if let Some(host) = host {
            announce(&host, &closed).await;
        }
        let _ = self.changes.send(Change::Closed(closed));
    }
}

/// Sends `notifications/resources/updated` for a decision's resource.
async fn announce(host: &Peer<RoleServer>, decision: &str) {
    let uri = resources::uri(decision);
    let param = ResourceUpdatedNotificationParam::new(uri.clone());
    if let Err(err) = host.notify_resource_updated(param).await {
        tracing::debug!(%err, %uri, "the host was not told of an updated resource");
    }
}
