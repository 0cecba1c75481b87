//! Shared state of one hub process: the store, the open sessions, and the in-order,
//! exactly-once delivery of decision events (decisions made or expired, the entries of the
//! event log) to them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authority, Grant};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::protocol::{BreakerState, EventId, LoggedEvent, frame};
use crate::push::Push;
use crate::session::wire::Wire;
use crate::session::{Outbound, SessionHandle, SessionSettings, SessionSlot};
use crate::store::Store;
use crate::sync::lock;

mod dashboards;
mod delivery;
mod fan_out;

use dashboards::Dashboards;
use delivery::Delivery;
pub use delivery::fingerprint;
use fan_out::fan_out;

/// Most `system.get_state` calls a hub builds pages for at once: each may hold a few
/// hundred KiB while it reads and serializes.
pub const MAX_STATE_CALLS: usize = 4;

/// One hub process.
pub struct Hub {
    pub store: Store,
    pub config: Config,
    /// Random id of this process, part of every session's owner tag.
    pub id: String,
    sessions: DashMap<u64, Arc<SessionHandle>>,
    dashboards: Dashboards,
    /// Session places taken, counted from the upgrade on (before a session exists).
    session_slots: Arc<AtomicUsize>,
    next_session: AtomicU64,
    /// Checks tokens when the hub runs with a secret.
    pub authority: Option<Authority>,
    /// Places for `system.get_state` calls building their pages at once
    /// ([`MAX_STATE_CALLS`]); others wait their turn.
    pub state_calls: tokio::sync::Semaphore,
    pub metrics: Metrics,
    /// This hub's copy of the decision policies (kept by [`crate::tasks::policies`]).
    pub policies: crate::policy::PolicyBook,
    registry: prometheus_client::registry::Registry,
    /// Where this hub stands in the event log. Held while delivering and while opening a
    /// session, so a new session gets each event either live or by replay.
    delivered: Mutex<Delivery>,
    /// True while the decision listener is subscribed; part of readiness.
    listening: AtomicBool,
    /// Cancelled when the hub stops: sessions close with 1001, background tasks end.
    pub shutdown: CancellationToken,
    /// Sessions and background tasks, awaited (bounded) on shutdown.
    pub tracker: TaskTracker,
    /// Raised when this hub delivers a decision event: the webhook dispatcher wakes on it.
    pub event_delivered: Arc<Notify>,
    /// Web Push, unless it is off on this hub.
    pub push: Option<Arc<Push>>,
    started: Instant,
}

impl Hub {
    pub fn new(
        store: Store,
        config: Config,
        authority: Option<Authority>,
        metrics: Metrics,
        shutdown: CancellationToken,
        push: Option<Arc<Push>>,
    ) -> Self {
        Self {
            registry: metrics.registry(),
            metrics,
            store,
            config,
            id: random_id(),
            sessions: DashMap::new(),
            session_slots: Arc::new(AtomicUsize::new(0)),
            dashboards: Dashboards::new(),
            authority,
            state_calls: tokio::sync::Semaphore::new(MAX_STATE_CALLS),
            policies: Default::default(),
            next_session: AtomicU64::new(1),
            delivered: Mutex::new(Delivery::default()),
            listening: AtomicBool::new(false),
            shutdown,
            tracker: TaskTracker::new(),
            event_delivered: Arc::new(Notify::new()),
            push,
            started: Instant::now(),
        }
    }

    /// Takes a session place, or `None` when the hub holds `--max-sessions` already.
    pub fn reserve_session(&self) -> Option<SessionSlot> {
        SessionSlot::reserve(&self.session_slots, self.config.max_sessions)
    }

    /// Opens a session: returns its handle and the receiving end of its outbound queue, for
    /// the transport's writer to drain. `wire` is the TCP stream that live events may be
    /// written into directly (`None`: a transport that takes only queued messages). With
    /// `hold`, live events are held from the start, for a replay to follow.
    pub fn open_session(
        &self,
        slot: SessionSlot,
        grant: Grant,
        expires_at_ms: Option<u64>,
        hold: bool,
        wire: Option<Wire>,
    ) -> (
        Arc<SessionHandle>,
        crate::session::queue::Receiver<Outbound>,
    ) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        // Held while the session joins, so it gets each event either live or by replay.
        let mut delivered = lock(&self.delivered);
        let (handle, rx) = SessionHandle::new(SessionSettings {
            id,
            grant,
            expires_at_ms,
            owner_tag: format!("{}:{id}", self.id),
            slot,
            queue_len: self.config.session_queue as usize,
            queue_bytes: self.config.session_queue_bytes as usize,
            call_limit: self.config.session_rate_limit,
            metrics: self.metrics.clone(),
            live_after: delivered.last,
            hold,
            wire,
        });
        self.sessions.insert(id, handle.clone());
        delivered.listeners = None;
        drop(delivered);
        self.metrics.sessions_open.inc();
        (handle, rx)
    }

    /// Forgets a closed session and frees its instance binding in Redis.
    /// The session counts as open until its binding is released, so a session count that
    /// has dropped means the instance is free again.
    pub async fn close_session(&self, session: &SessionHandle) {
        self.unsubscribe(session, None);
        // Waits for a keepalive round that holds the binding, so that the release is
        // written after its refresh, never before.
        let _binding = session.binding.change().await;
        if let Some(registration) = session.binding.take()
            && let Err(err) = self
                .store
                .release(&registration.instance, &session.owner_tag)
                .await
        {
            // The binding then lapses with its TTL.
            tracing::warn!(%err, instance = %registration.instance, "could not release binding");
        }
        if self.sessions.remove(&session.id).is_some() {
            self.metrics.sessions_open.dec();
        }
        lock(&self.delivered).listeners = None;
    }

    /// Adds event patterns to a session; returns everything it is subscribed to.
    pub fn subscribe(&self, session: &SessionHandle, patterns: Vec<String>) -> Vec<String> {
        let (first, subscribed) = session.subscribe(patterns);
        if first && let Some(open) = self.sessions.get(&session.id) {
            self.dashboards.watcher_added(open.clone());
        }
        subscribed
    }

    /// Removes event patterns from a session (`None`: all); returns what remains.
    pub fn unsubscribe(&self, session: &SessionHandle, patterns: Option<&[String]>) -> Vec<String> {
        let (emptied, remaining) = session.unsubscribe(patterns);
        if emptied {
            self.dashboards.watcher_removed(session.id);
        }
        remaining
    }

    /// Whether any session is subscribed to dashboard events right now.
    pub fn has_watchers(&self) -> bool {
        !self.dashboards.watchers().is_empty()
    }

    /// Follows whether any session is subscribed to dashboard events.
    pub fn dashboards_wanted(&self) -> watch::Receiver<bool> {
        self.dashboards.wanted.subscribe()
    }

    /// Records whether the listener is subscribed to the dashboard channels.
    pub fn set_dashboards_live(&self, live: bool) {
        self.dashboards.live.send_replace(live);
    }

    /// Waits (at most `limit`) until dashboard events flow to this hub.
    pub async fn dashboards_flowing(&self, limit: Duration) {
        let mut live = self.dashboards.live.subscribe();
        let _ = tokio::time::timeout(limit, live.wait_for(|live| *live)).await;
    }

    /// Sends a live event to the sessions subscribed to it (dashboards), as far as each has
    /// room to spare (`Outbox::push_dashboard`). These events are best effort and
    /// not replayed: a client that missed some reads `system.get_state`.
    pub fn broadcast_subscribed(&self, name: &str, text: &Utf8Bytes) {
        for session in self.dashboards.watchers().iter() {
            if session.wants(name) {
                session.outbox.push_dashboard(text);
            }
        }
    }

    /// Where this hub stands in the event stream, if it knows yet.
    pub fn delivered(&self) -> Option<EventId> {
        lock(&self.delivered).last
    }

    /// Sets the hub's starting point in the event stream, unless it already has one: after
    /// `newest` (the newest event when the hub starts), or from the beginning.
    pub fn start_delivery_at(&self, newest: Option<&LoggedEvent>) {
        let mut delivery = lock(&self.delivered);
        if delivery.last.is_some() {
            return;
        }
        delivery.last = Some(newest.map_or(EventId::ZERO, LoggedEvent::event_id));
        // Remembered like a delivered event: if a failover loses the events after it, it is
        // where delivery picks up again.
        if let Some(event) = newest {
            delivery.remember(event.event_id(), fingerprint(&frame::logged_event(event)));
        }
    }

    /// The epoch of the event log this hub delivers from, once it has read it.
    pub fn log_epoch(&self) -> Option<String> {
        lock(&self.delivered).epoch.clone()
    }

    /// Records the epoch of the event log this hub delivers from.
    pub fn set_log_epoch(&self, epoch: String) {
        lock(&self.delivered).epoch = Some(epoch);
    }

    /// The events this hub delivered most recently, newest id first, each id once.
    pub fn recent_deliveries(&self) -> Vec<(EventId, u64)> {
        let mut recent: Vec<(EventId, u64)> =
            lock(&self.delivered).recent.iter().copied().collect();
        // Stable, so that of two deliveries under one id the later one is kept.
        recent.reverse();
        recent.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        recent.dedup_by_key(|(id, _)| *id);
        recent
    }

    /// Moves the hub's position back to `to` (the event log is not a continuation of the
    /// one it delivered from), so that the events after `to` in the log as it is now are
    /// delivered even where their ids are at or below ones delivered before. Every open
    /// session's cursor goes back with it, and gets `notice` ahead of those events.
    pub fn rewind(&self, to: EventId, notice: Option<&Utf8Bytes>) {
        let mut delivery = lock(&self.delivered);
        delivery.last = Some(to);
        // What was delivered after `to` belongs to a log that is gone: the next check
        // compares against the events delivered from the log as it is now.
        delivery.recent.retain(|(id, _)| *id <= to);
        for session in self.sessions.iter() {
            session.rewind(to, notice);
        }
    }

    /// Queues a notice on every open session, in line with the events delivered to it.
    pub fn notify_all(&self, notice: &Utf8Bytes) {
        let _delivery = lock(&self.delivered);
        for session in self.sessions.iter() {
            session.outbox.push_notice(notice);
        }
    }

    /// Delivers one decision event to every open session, unless it was delivered
    /// before (events arrive both live and from gap reads). Returns whether it was new.
    ///
    /// The session list is taken under the delivery lock, so that a session opening
    /// meanwhile gets the event either here or by replay; the writes happen outside it,
    /// directly and split across the cores when the list is long, and the next event
    /// starts only once every session has this one.
    pub async fn deliver(&self, id: EventId, text: &Utf8Bytes) -> bool {
        let print = fingerprint(text);
        let sessions = {
            let mut delivery = lock(&self.delivered);
            if delivery.last.is_some_and(|last| id <= last) {
                return false;
            }
            delivery.last = Some(id);
            delivery.remember(id, print);
            delivery
                .listeners
                .get_or_insert_with(|| {
                    // Sized up front: grown by doubling, a list of 10,000 passes the
                    // allocator's threshold for fresh pages from the kernel.
                    let mut list = Vec::with_capacity(self.sessions.len());
                    list.extend(self.sessions.iter().map(|s| s.value().clone()));
                    // In the order the sessions opened, which is the order the kernel
                    // allocated their sockets: written in that order, one socket's memory
                    // is next to the last one's. In the map's hash order, the kernel's
                    // work per `send` grows (16% more CPU per fan-out at 10,000 sessions).
                    list.sort_unstable_by_key(|s| s.id);
                    list.into()
                })
                .clone()
        };
        self.event_delivered.notify_one();
        let written = fan_out(sessions, id, text).await;
        self.metrics.events_delivered.inc_by(written);
        self.metrics.events_written_direct.inc_by(written);
        true
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions bound to an instance.
    pub fn bound_sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions
            .iter()
            .filter(|s| s.binding.is_bound())
            .map(|s| s.clone())
            .collect()
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Ready: the breaker is closed, Redis answers, the scripts are loaded, and decision
    /// events are subscribed.
    pub async fn check_ready(&self) -> Result<(), String> {
        if self.store.breaker().state() == BreakerState::Open {
            return Err("circuit breaker open after repeated Redis failures".into());
        }
        // A probe is not a caller: its failures do not count towards the breaker.
        self.store
            .unguarded()
            .check_ready()
            .await
            .map_err(|e: Error| format!("Redis: {e}"))?;
        if !self.listening.load(Ordering::Acquire) {
            return Err("decision listener is not subscribed yet".into());
        }
        Ok(())
    }

    /// The metrics as OpenMetrics text.
    pub fn render_metrics(&self) -> String {
        let state = match self.store.breaker().state() {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.metrics.breaker_state.set(state);
        crate::metrics::encode(&self.registry)
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// 64 random bits as hex, from the OS; falls back to time and pid.
fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
