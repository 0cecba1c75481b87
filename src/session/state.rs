//! What the rest of the hub sees of a session, whatever transport carries it: its id and
//! grant, its token's expiry, its call allowance, its outbox, its cursor in the event
//! stream, its instance binding and its dashboard subscriptions.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::queue;

use super::binding::Binding;
use super::cursor::EventCursor;
use super::outbox::{Outbound, Outbox, OutboxSettings};
use super::wire::{HoldsWire, Wire};
use crate::auth::Grant;
use crate::budget::{CallAdmission, CallBudget};
use crate::config::RateLimit;
use crate::instance::InstanceId;
use crate::metrics::Metrics;
use crate::protocol::{EventId, event};
use crate::sync::lock;

/// The expiry of a session whose token never expires.
const NEVER: u64 = u64::MAX;

/// One of the hub's limited session places, given back when dropped.
pub struct SessionSlot(Arc<AtomicUsize>);

impl SessionSlot {
    /// Takes a place from `taken` if fewer than `max` are taken.
    pub fn reserve(taken: &Arc<AtomicUsize>, max: usize) -> Option<SessionSlot> {
        let before = taken.fetch_add(1, Ordering::AcqRel);
        let slot = SessionSlot(taken.clone());
        (before < max).then_some(slot)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The part of a session that the rest of the hub sees.
///
/// Laid out in order (`repr(C)`): what delivering a live event reads (the cursor, then the
/// outbox, whose own first fields are what a direct write reads) side by side, since a
/// fan-out reads it for thousands of sessions in a row.
#[repr(C)]
pub struct SessionHandle {
    /// Where the session stands in the decision event stream.
    pub(super) cursor: Mutex<EventCursor>,
    /// Everything queued for the session, and what bounds it.
    pub outbox: Outbox,
    pub id: u64,
    /// What the session's token allows.
    pub grant: Grant,
    /// When the session's token expires, in ms since the Unix epoch ([`NEVER`]: it does
    /// not); `system.auth.refresh` moves it later.
    expires_at_ms: AtomicU64,
    /// Identifies this session in Redis as the owner of its bound instance
    /// (`<hub id>:<session id>`).
    pub owner_tag: String,
    /// The instance this session registered as, if any.
    pub binding: Binding,
    /// Event patterns this session asked for (beyond the decisions every session gets).
    subscriptions: Mutex<Vec<String>>,
    calls: CallBudget,
    /// Set when the session floods; its reader closes it.
    flooding: AtomicBool,
    /// Pings sent since the peer last showed it is alive.
    unanswered_pings: AtomicU32,
    /// Holds one of the hub's session slots while the session exists.
    _slot: SessionSlot,
}

impl HoldsWire for Arc<SessionHandle> {
    fn wire(&self) -> Option<&Wire> {
        self.outbox.wire()
    }
}

/// What a new session starts with.
pub struct SessionSettings {
    pub id: u64,
    pub grant: Grant,
    /// When the session's token expires, in ms since the Unix epoch (`None`: never).
    pub expires_at_ms: Option<u64>,
    pub owner_tag: String,
    pub slot: SessionSlot,
    pub queue_len: usize,
    /// Bytes held for the session's outbound at most, but for one reply (its byte budget).
    pub queue_bytes: usize,
    pub call_limit: RateLimit,
    pub metrics: Metrics,
    /// Every event after this id reaches the session live (`None`: not known yet).
    pub live_after: Option<EventId>,
    /// Hold live events from the start, for a replay to follow.
    pub hold: bool,
    /// The session's TCP stream.
    pub wire: Option<Wire>,
}

impl SessionHandle {
    /// A session and the receiving end of its outbound queue.
    pub fn new(settings: SessionSettings) -> (Arc<SessionHandle>, queue::Receiver<Outbound>) {
        let (outbox, receiver) = Outbox::new(OutboxSettings {
            session: settings.id,
            capacity: settings.queue_len,
            byte_budget: settings.queue_bytes,
            metrics: settings.metrics,
            wire: settings.wire,
        });
        let handle = Arc::new(SessionHandle {
            cursor: Mutex::new(EventCursor::new(settings.live_after, settings.hold)),
            outbox,
            id: settings.id,
            grant: settings.grant,
            expires_at_ms: AtomicU64::new(settings.expires_at_ms.unwrap_or(NEVER)),
            owner_tag: settings.owner_tag,
            binding: Binding::default(),
            subscriptions: Mutex::new(Vec::new()),
            calls: CallBudget::new(settings.call_limit),
            flooding: AtomicBool::new(false),
            unanswered_pings: AtomicU32::new(0),
            _slot: settings.slot,
        });
        (handle, receiver)
    }

    /// When the session's token expires, in ms since the Unix epoch (`None`: never).
    pub fn expires_at_ms(&self) -> Option<u64> {
        let at = self.expires_at_ms.load(Ordering::Acquire);
        (at != NEVER).then_some(at)
    }

    /// Moves the session's expiry to `at_ms` if that is later; returns the expiry now.
    pub fn extend_expiry(&self, at_ms: u64) -> u64 {
        let before = self.expires_at_ms.fetch_max(at_ms, Ordering::AcqRel);
        before.max(at_ms)
    }

    /// Counts one call against the session's allowance; far over it, marks the session
    /// flooding (its reader closes it).
    pub fn admit_call(&self) -> CallAdmission {
        let admission = self.calls.admit();
        if let CallAdmission::Flooding { .. } = admission {
            self.flooding.store(true, Ordering::Release);
        }
        admission
    }

    /// Whether the session made far more calls than its allowance (its reader closes it).
    pub fn is_flooding(&self) -> bool {
        self.flooding.load(Ordering::Acquire)
    }

    /// Records that the peer showed it is alive (any frame does).
    pub fn peer_heard(&self) {
        self.unanswered_pings.store(0, Ordering::Release);
    }

    /// Records a ping sent to the peer; returns how many were unanswered before it.
    pub fn ping_sent(&self) -> u32 {
        self.unanswered_pings.fetch_add(1, Ordering::AcqRel)
    }

    /// The session's call allowance.
    pub fn call_limit(&self) -> RateLimit {
        self.calls.limit()
    }

    /// The owner tag to present for `instance`: this session's, if it holds it.
    pub fn owner_tag_for(&self, instance: &InstanceId) -> Option<&str> {
        self.binding
            .holds(instance)
            .then_some(self.owner_tag.as_str())
    }

    /// Adds event patterns; returns whether the session had none before and everything
    /// it is subscribed to now.
    pub fn subscribe(&self, patterns: Vec<String>) -> (bool, Vec<String>) {
        let mut subscriptions = lock(&self.subscriptions);
        let was_empty = subscriptions.is_empty();
        for pattern in patterns {
            if !subscriptions.contains(&pattern) {
                subscriptions.push(pattern);
            }
        }
        (
            was_empty && !subscriptions.is_empty(),
            subscriptions.clone(),
        )
    }

    /// Removes event patterns (`None`: all of them); returns whether that left the session
    /// with none, having had some, and what remains.
    pub fn unsubscribe(&self, patterns: Option<&[String]>) -> (bool, Vec<String>) {
        let mut subscriptions = lock(&self.subscriptions);
        let was_empty = subscriptions.is_empty();
        match patterns {
            Some(patterns) => subscriptions.retain(|p| !patterns.contains(p)),
            None => subscriptions.clear(),
        }
        (
            !was_empty && subscriptions.is_empty(),
            subscriptions.clone(),
        )
    }

    /// Whether the session subscribed to the event `name`.
    pub fn wants(&self, name: &str) -> bool {
        lock(&self.subscriptions)
            .iter()
            .any(|p| event::pattern_matches(p, name))
    }
}

#[cfg(test)]
impl SessionHandle {
    /// A session for unit tests: open grant, no call limit, and its own session place.
    pub(super) fn for_test(
        queue_len: usize,
        queue_bytes: usize,
        live_after: Option<EventId>,
        hold: bool,
    ) -> (Arc<SessionHandle>, queue::Receiver<Outbound>) {
        let slots = Arc::new(AtomicUsize::new(0));
        SessionHandle::new(SessionSettings {
            id: 1,
            grant: Grant::Open,
            expires_at_ms: None,
            owner_tag: "hub:1".into(),
            slot: SessionSlot::reserve(&slots, 1).expect("a free place"),
            queue_len,
            queue_bytes,
            call_limit: RateLimit::OFF,
            metrics: Metrics::new(),
            live_after,
            hold,
            wire: None,
        })
    }
}
