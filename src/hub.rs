//! Shared state of one hub process: the store, the open sessions, and the in-order,
//! exactly-once delivery of decision events to them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Authority, Grant};
use crate::config::{Config, RateLimit};
use crate::decision::EventId;
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::metrics::Metrics;
use crate::request::pattern_matches;
use crate::store::Store;

/// A session that makes this many times its call allowance in one window is flooding,
/// and is closed (1008).
pub const FLOOD_FACTOR: u32 = 2;

/// What a session's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Close the socket with this code and reason, after everything queued before it.
    Close(u16, &'static str),
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where a session stands in the decision event stream.
#[derive(Debug)]
struct EventCursor {
    /// Every event after this id reaches the session live (or is held for it);
    /// a replay covers what lies before. `None` until the hub knows its own position.
    live_after: Option<EventId>,
    /// While a replay runs, live events wait here so that they follow the replayed ones.
    held: Option<Vec<(EventId, Utf8Bytes)>>,
}

/// Whether a session may make one more call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAdmission {
    Allowed,
    /// Over the session's allowance; the call is refused.
    Refused {
        retry_after_ms: u64,
    },
    /// Far over it: refused, and the session is to be closed.
    Flooding {
        retry_after_ms: u64,
    },
}

/// Calls counted in the current fixed window.
#[derive(Debug)]
struct CallWindow {
    started: Instant,
    calls: u32,
}

/// The part of a session that the rest of the hub sees.
pub struct SessionHandle {
    pub id: u64,
    /// What the session's token allows.
    pub grant: Grant,
    /// Identifies this session in Redis as the owner of its bound instance.
    pub token: String,
    outbound: mpsc::Sender<Outbound>,
    /// Raised when the session fell a full queue behind; its writer closes it.
    pub evicted: Notify,
    /// The instance this session registered as, if any. One per session.
    binding: Mutex<Option<Registration>>,
    events: Mutex<EventCursor>,
    /// Event patterns this session asked for (beyond the decisions every session gets).
    subscriptions: Mutex<Vec<String>>,
    call_limit: RateLimit,
    calls: Mutex<CallWindow>,
    /// Set when the session floods; its reader closes it.
    pub flooding: AtomicBool,
    /// Pings sent since the peer last showed it is alive.
    pub unanswered_pings: AtomicU32,
    queue_len: usize,
    metrics: Metrics,
    /// Set once the session is marked a slow consumer (counted once).
    slow: AtomicBool,
    /// Holds one of the hub's session slots while the session exists.
    _slot: SessionSlot,
}

impl SessionHandle {
    /// Counts one call against the session's allowance.
    pub fn admit_call(&self) -> CallAdmission {
        if self.call_limit.is_off() {
            return CallAdmission::Allowed;
        }
        let mut window = lock(&self.calls);
        let elapsed = window.started.elapsed();
        if elapsed >= self.call_limit.window {
            *window = CallWindow {
                started: Instant::now(),
                calls: 0,
            };
        }
        window.calls = window.calls.saturating_add(1);
        if window.calls <= self.call_limit.max {
            return CallAdmission::Allowed;
        }
        let retry_after_ms = self
            .call_limit
            .window
            .saturating_sub(window.started.elapsed())
            .as_millis() as u64
            + 1;
        if window.calls > self.call_limit.max.saturating_mul(FLOOD_FACTOR) {
            self.flooding.store(true, Ordering::Release);
            CallAdmission::Flooding { retry_after_ms }
        } else {
            CallAdmission::Refused { retry_after_ms }
        }
    }

    /// Queues a message, waiting while the queue is full (the caller's own backpressure).
    pub async fn send(&self, message: Outbound) -> bool {
        self.outbound.send(message).await.is_ok()
    }

    pub fn bound(&self) -> Option<InstanceId> {
        lock(&self.binding).as_ref().map(|r| r.instance.clone())
    }

    pub fn binding(&self) -> Option<Registration> {
        lock(&self.binding).clone()
    }

    pub fn bind(&self, registration: Registration) {
        *lock(&self.binding) = Some(registration);
    }

    pub fn unbind(&self) -> Option<Registration> {
        lock(&self.binding).take()
    }

    /// Whether this session holds `instance` (checked without copying the binding).
    pub fn holds(&self, instance: &InstanceId) -> bool {
        lock(&self.binding)
            .as_ref()
            .is_some_and(|r| r.instance == *instance)
    }

    /// The owner token to present for `instance`: this session's, if it holds it.
    pub fn owner_token_for(&self, instance: &InstanceId) -> Option<&str> {
        self.holds(instance).then_some(self.token.as_str())
    }

    /// Whether the session subscribed to the event `name`.
    fn wants(&self, name: &str) -> bool {
        lock(&self.subscriptions)
            .iter()
            .any(|p| pattern_matches(p, name))
    }

    /// Queues a live event without waiting; a full queue marks the session a slow consumer.
    fn push_live(&self, id: EventId, text: &Utf8Bytes) {
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

    fn push_now(&self, text: &Utf8Bytes) {
        match self.outbound.try_send(Outbound::Text(text.clone())) {
            Ok(()) => {
                self.metrics.events_delivered.inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.evict(),
        }
    }

    fn evict(&self) {
        self.metrics.events_dropped.inc();
        if !self.slow.swap(true, Ordering::AcqRel) {
            tracing::warn!(session = self.id, "slow consumer: closing session");
            self.metrics.slow_consumer_closes.inc();
        }
        self.evicted.notify_one();
    }

    /// Starts holding live events for a replay of the events after `since` (they may be
    /// held already, from the session's start) and returns the last id the replay must
    /// cover: `Some(None)` means up to the newest, `None` means nothing to replay because
    /// the session gets everything after `since` live. Always followed by `end_replay`.
    pub fn begin_replay(&self, since: EventId) -> Option<Option<EventId>> {
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
    pub fn end_replay(&self, since: EventId, last_replayed: Option<EventId>) {
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

/// One of the hub's limited session places, given back when dropped.
pub struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One hub process.
pub struct Hub {
    pub store: Store,
    pub config: Config,
    /// Random id of this process, part of every session token.
    pub id: String,
    sessions: DashMap<u64, Arc<SessionHandle>>,
    /// Sessions subscribed to any event beyond decisions.
    watchers: AtomicUsize,
    /// Whether any session is subscribed to dashboard events; the listener follows it.
    watched: tokio::sync::watch::Sender<bool>,
    /// Whether the listener is subscribed to the dashboard channels right now.
    dashboards_live: tokio::sync::watch::Sender<bool>,
    /// Session places taken, counted from the upgrade on (before a session exists).
    session_slots: Arc<AtomicUsize>,
    next_session: AtomicU64,
    /// Checks tokens when the hub runs with a secret.
    pub authority: Option<Authority>,
    pub metrics: Metrics,
    registry: prometheus_client::registry::Registry,
    /// The last decision event this hub delivered. Held while delivering and while
    /// opening a session, so a new session gets each event either live or by replay.
    delivered: Mutex<Option<EventId>>,
    /// True while the decision listener is subscribed; part of readiness.
    listening: AtomicBool,
    /// Cancelled when the hub stops: sessions close with 1001, background tasks end.
    pub shutdown: CancellationToken,
    /// Sessions and background tasks, awaited (bounded) on shutdown.
    pub tracker: TaskTracker,
    started: Instant,
}

impl Hub {
    pub fn new(
        store: Store,
        config: Config,
        authority: Option<Authority>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry: metrics.registry(),
            metrics,
            store,
            config,
            id: random_id(),
            sessions: DashMap::new(),
            session_slots: Arc::new(AtomicUsize::new(0)),
            watchers: AtomicUsize::new(0),
            watched: tokio::sync::watch::Sender::new(false),
            dashboards_live: tokio::sync::watch::Sender::new(false),
            authority,
            next_session: AtomicU64::new(1),
            delivered: Mutex::new(None),
            listening: AtomicBool::new(false),
            shutdown,
            tracker: TaskTracker::new(),
            started: Instant::now(),
        }
    }

    /// Takes a session place, or `None` when the hub holds `--max-sessions` already.
    pub fn reserve_session(&self) -> Option<SessionSlot> {
        let taken = self.session_slots.fetch_add(1, Ordering::AcqRel);
        let slot = SessionSlot(self.session_slots.clone());
        (taken < self.config.max_sessions).then_some(slot)
    }

    /// Opens a session: returns its handle and the receiving end of its outbound queue.
    /// With `hold`, live events are held from the start, for a replay to follow.
    pub fn open_session(
        &self,
        slot: SessionSlot,
        grant: Grant,
        hold: bool,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let queue_len = self.config.session_queue as usize;
        let (tx, rx) = mpsc::channel(queue_len);
        let delivered = lock(&self.delivered);
        let handle = Arc::new(SessionHandle {
            id,
            grant,
            token: format!("{}:{id}", self.id),
            outbound: tx,
            evicted: Notify::new(),
            binding: Mutex::new(None),
            events: Mutex::new(EventCursor {
                live_after: *delivered,
                held: hold.then(Vec::new),
            }),
            subscriptions: Mutex::new(Vec::new()),
            call_limit: self.config.session_rate_limit,
            calls: Mutex::new(CallWindow {
                started: Instant::now(),
                calls: 0,
            }),
            flooding: AtomicBool::new(false),
            unanswered_pings: AtomicU32::new(0),
            queue_len,
            metrics: self.metrics.clone(),
            slow: AtomicBool::new(false),
            _slot: slot,
        });
        self.sessions.insert(id, handle.clone());
        drop(delivered);
        self.metrics.sessions_open.inc();
        (handle, rx)
    }

    /// Forgets a closed session and frees its instance binding in Redis.
    /// The session counts as open until its binding is released, so a session count that
    /// has dropped means the instance is free again.
    pub async fn close_session(&self, session: &SessionHandle) {
        let subscribed = lock(&session.subscriptions).clone();
        self.unsubscribe(session, &subscribed);
        if let Some(registration) = session.unbind()
            && let Err(err) = self
                .store
                .release(&registration.instance, &session.token)
                .await
        {
            // The binding then lapses with its TTL.
            tracing::warn!(%err, instance = %registration.instance, "could not release binding");
        }
        if self.sessions.remove(&session.id).is_some() {
            self.metrics.sessions_open.dec();
        }
    }

    /// Adds event patterns to a session; returns everything it is subscribed to.
    pub fn subscribe(&self, session: &SessionHandle, patterns: Vec<String>) -> Vec<String> {
        let mut subscriptions = lock(&session.subscriptions);
        let was_empty = subscriptions.is_empty();
        for pattern in patterns {
            if !subscriptions.contains(&pattern) {
                subscriptions.push(pattern);
            }
        }
        if was_empty
            && !subscriptions.is_empty()
            && self.watchers.fetch_add(1, Ordering::AcqRel) == 0
        {
            self.watched.send_replace(true);
        }
        subscriptions.clone()
    }

    /// Removes event patterns from a session; returns what remains.
    pub fn unsubscribe(&self, session: &SessionHandle, patterns: &[String]) -> Vec<String> {
        let mut subscriptions = lock(&session.subscriptions);
        let was_empty = subscriptions.is_empty();
        subscriptions.retain(|p| !patterns.contains(p));
        if !was_empty
            && subscriptions.is_empty()
            && self.watchers.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.watched.send_replace(false);
        }
        subscriptions.clone()
    }

    /// Whether any session is subscribed to dashboard events right now.
    pub fn has_watchers(&self) -> bool {
        self.watchers.load(Ordering::Acquire) > 0
    }

    /// Follows whether any session is subscribed to dashboard events.
    pub fn watched(&self) -> tokio::sync::watch::Receiver<bool> {
        self.watched.subscribe()
    }

    /// Records whether the listener is subscribed to the dashboard channels.
    pub fn set_dashboards_live(&self, live: bool) {
        self.dashboards_live.send_replace(live);
    }

    /// Waits (at most `limit`) until dashboard events flow to this hub.
    pub async fn dashboards_flowing(&self, limit: std::time::Duration) {
        let mut live = self.dashboards_live.subscribe();
        let _ = tokio::time::timeout(limit, live.wait_for(|live| *live)).await;
    }

    /// Sends a live event to the sessions subscribed to it (dashboards). These events are
    /// not replayed: a client that missed some reads `system.get_state`.
    pub fn broadcast_subscribed(&self, name: &str, text: &Utf8Bytes) {
        for session in self.sessions.iter() {
            if session.wants(name) {
                session.push_now(text);
            }
        }
    }

    /// Where this hub stands in the event stream, if it knows yet.
    pub fn delivered(&self) -> Option<EventId> {
        *lock(&self.delivered)
    }

    /// Sets the hub's starting point in the event stream, unless it already has one.
    pub fn start_delivery_at(&self, id: EventId) {
        lock(&self.delivered).get_or_insert(id);
    }

    /// Delivers one decision event to every open session, unless it was delivered
    /// before (events arrive both live and from gap reads). Returns whether it was new.
    pub fn deliver(&self, id: EventId, text: &Utf8Bytes) -> bool {
        let mut delivered = lock(&self.delivered);
        if delivered.is_some_and(|last| id <= last) {
            return false;
        }
        *delivered = Some(id);
        for session in self.sessions.iter() {
            session.push_live(id, text);
        }
        true
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions bound to an instance, with their bindings.
    pub fn bound_sessions(&self) -> Vec<(Arc<SessionHandle>, Registration)> {
        self.sessions
            .iter()
            .filter_map(|s| s.binding().map(|r| (s.clone(), r)))
            .collect()
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Ready: the breaker is closed, Redis answers, the scripts are loaded, and decision
    /// events are subscribed.
    pub async fn check_ready(&self) -> Result<(), String> {
        if self.store.breaker().state() == crate::breaker::BreakerState::Open {
            return Err("circuit breaker open after repeated Redis failures".into());
        }
        self.store
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
            crate::breaker::BreakerState::Closed => 0,
            crate::breaker::BreakerState::HalfOpen => 1,
            crate::breaker::BreakerState::Open => 2,
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
