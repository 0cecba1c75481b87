//! A session's own state, as the rest of the hub sees it: its outbound queue, its
//! instance binding, its call allowance and its dashboard subscriptions.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::replay::EventCursor;
use super::wire::{Direct, HoldsWire, Wire};
use crate::auth::Grant;
use crate::budget::{CallAdmission, CallBudget};
use crate::config::RateLimit;
use crate::instance::{InstanceId, Registration};
use crate::metrics::Metrics;
use crate::protocol::{EventId, event};

/// The expiry of a session whose token never expires.
const NEVER: u64 = u64::MAX;

/// What a session's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Close the socket with this code and reason, after everything queued before it.
    Close(u16, &'static str),
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
pub struct SessionHandle {
    pub id: u64,
    /// What the session's token allows.
    pub grant: Grant,
    /// When the session's token expires, in ms since the Unix epoch ([`NEVER`]: it does
    /// not); `system.auth.refresh` moves it later.
    expires_at_ms: AtomicU64,
    /// Identifies this session in Redis as the owner of its bound instance
    /// (`<hub id>:<session id>`).
    pub owner_tag: String,
    outbound: mpsc::Sender<Outbound>,
    /// What delivering a live event reads.
    pub(super) live: Live,
    /// Bytes of a direct write the socket did not take at once (the socket was full); they
    /// count against the queue's budget until the writer has flushed them.
    pub(super) unflushed: AtomicUsize,
    /// Raised when a direct write left bytes for the writer to flush.
    pub(super) flush_wanted: Notify,
    /// Raised when the session fell a full queue behind; its writer closes it.
    pub evicted: Notify,
    /// The instance this session registered as, if any. One per session.
    binding: Mutex<Option<Registration>>,
    /// Held across every change of the binding and its Redis write (register, unregister,
    /// close, the keepalive's refresh), so no refresh rewrites a binding that its session
    /// let go of meanwhile.
    pub binding_change: tokio::sync::Mutex<()>,
    /// Event patterns this session asked for (beyond the decisions every session gets).
    subscriptions: Mutex<Vec<String>>,
    calls: CallBudget,
    /// Set when the session floods; its reader closes it.
    pub flooding: AtomicBool,
    /// Pings sent since the peer last showed it is alive.
    pub unanswered_pings: AtomicU32,
    /// Messages the outbound queue holds at most.
    pub(super) queue_len: usize,
    byte_budget: usize,
    /// Raised when bytes leave the queue (or it closes), for replies waiting for room.
    queue_room: Notify,
    queue_closed: AtomicBool,
    pub(super) metrics: Metrics,
    /// Set once the session is marked a slow consumer (counted once).
    pub(super) slow: AtomicBool,
    /// Holds one of the hub's session slots while the session exists.
    _slot: SessionSlot,
}

/// What delivering a live event reads of a session, side by side: a fan-out reads it for
/// thousands of sessions in a row, and every cache line it is spread over is one more
/// fetch from memory per session.
pub(super) struct Live {
    /// Where the session stands in the decision event stream.
    pub(super) events: Mutex<EventCursor>,
    /// Bytes in the outbound queue: counted when a message is queued, given back when the
    /// writer takes it off; at most the session's byte budget.
    pub(super) queued_bytes: AtomicUsize,
    /// The session's TCP stream (`None` only in unit tests): its WebSocket runs on it, and
    /// [`SessionHandle::push_direct`] writes into it while nothing is queued.
    pub(super) wire: Option<Wire>,
}

impl HoldsWire for Arc<SessionHandle> {
    fn wire(&self) -> Option<&Wire> {
        self.live.wire.as_ref()
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
    /// Bytes the outbound queue holds at most.
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
    pub fn new(settings: SessionSettings) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(settings.queue_len);
        let handle = Arc::new(SessionHandle {
            id: settings.id,
            grant: settings.grant,
            expires_at_ms: AtomicU64::new(settings.expires_at_ms.unwrap_or(NEVER)),
            owner_tag: settings.owner_tag,
            outbound: tx,
            live: Live {
                events: Mutex::new(EventCursor::new(settings.live_after, settings.hold)),
                queued_bytes: AtomicUsize::new(0),
                wire: settings.wire,
            },
            unflushed: AtomicUsize::new(0),
            flush_wanted: Notify::new(),
            evicted: Notify::new(),
            binding: Mutex::new(None),
            binding_change: tokio::sync::Mutex::new(()),
            subscriptions: Mutex::new(Vec::new()),
            calls: CallBudget::new(settings.call_limit),
            flooding: AtomicBool::new(false),
            unanswered_pings: AtomicU32::new(0),
            queue_len: settings.queue_len,
            byte_budget: settings.queue_bytes,
            queue_room: Notify::new(),
            queue_closed: AtomicBool::new(false),
            metrics: settings.metrics,
            slow: AtomicBool::new(false),
            _slot: settings.slot,
        });
        (handle, rx)
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

    /// The session's call allowance.
    pub fn call_limit(&self) -> RateLimit {
        self.calls.limit()
    }

    /// Queues a message, waiting while the queue is full, by messages or by bytes (the
    /// caller's own backpressure).
    pub async fn send(&self, message: Outbound) -> bool {
        let bytes = self.counted(&message);
        // The common case, room at once, takes no waiter.
        while !self.reserve_bytes(bytes) {
            // Registered before checking again, so a release in between is not missed.
            let room = self.queue_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.queue_closed.load(Ordering::Acquire) {
                return false;
            }
            if self.reserve_bytes(bytes) {
                break;
            }
            room.await;
        }
        if self.outbound.send(message).await.is_ok() {
            return true;
        }
        self.release_bytes(bytes);
        false
    }

    /// Queues a message without waiting; `Full` when the queue is full, by messages or by
    /// bytes.
    fn try_queue(&self, message: Outbound) -> Result<(), mpsc::error::TrySendError<()>> {
        let bytes = self.counted(&message);
        if !self.reserve_bytes(bytes) {
            return Err(mpsc::error::TrySendError::Full(()));
        }
        self.outbound.try_send(message).map_err(|err| {
            self.release_bytes(bytes);
            match err {
                mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
            }
        })
    }

    /// Counts `bytes` into the queue if they fit in the budget. A reply waiting for room
    /// holds nothing meanwhile: pushed events that fit still go in.
    fn reserve_bytes(&self, bytes: usize) -> bool {
        self.live
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.byte_budget).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release_bytes(&self, bytes: usize) {
        self.live.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.queue_room.notify_waiters();
    }

    /// Ends the queue once the writer is gone: a sender waiting for room fails instead of
    /// waiting forever.
    pub(super) fn close_queue(&self) {
        self.queue_closed.store(true, Ordering::Release);
        self.queue_room.notify_waiters();
    }

    /// The bytes a queued message counts for: its length, but at most half the budget, so
    /// that a large reply being written still leaves pushed events room.
    pub(super) fn counted(&self, message: &Outbound) -> usize {
        match message {
            Outbound::Text(text) => self.counted_len(text.len()),
            Outbound::Close(..) => 0,
        }
    }

    fn counted_len(&self, len: usize) -> usize {
        len.min(self.byte_budget / 2)
    }

    /// Gives back the bytes of messages the writer has written (or given up on).
    pub(super) fn written(&self, bytes: usize) {
        self.release_bytes(bytes);
    }

    pub fn bound(&self) -> Option<InstanceId> {
        lock(&self.binding).as_ref().map(|r| r.instance.clone())
    }

    pub fn is_bound(&self) -> bool {
        lock(&self.binding).is_some()
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

    /// The owner tag to present for `instance`: this session's, if it holds it.
    pub fn owner_tag_for(&self, instance: &InstanceId) -> Option<&str> {
        self.holds(instance).then_some(self.owner_tag.as_str())
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

    /// The session's TCP stream.
    pub fn wire(&self) -> Option<&Wire> {
        self.live.wire.as_ref()
    }

    /// Writes an event's frame into the socket from the calling (delivering) task, without
    /// the queue and without waking the writer, when nothing is queued or being written:
    /// it cannot overtake anything, and the socket has room. Returns false when it did
    /// not, and the event must be queued.
    fn write_direct(&self, text: &Utf8Bytes, frame: &Bytes) -> bool {
        // Queued bytes count until written, so zero means nothing is waiting or in flight.
        if self.live.queued_bytes.load(Ordering::Acquire) != 0 {
            return false;
        }
        let Some(wire) = self.live.wire.as_ref() else {
            return false;
        };
        match wire.write_frame(frame) {
            Direct::Written => true,
            Direct::Partly => {
                // The socket is full: the rest waits on the wire for the writer, and
                // counts as queued meanwhile, so later events queue behind it.
                let bytes = self.counted_len(text.len());
                self.live.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
                self.unflushed.fetch_add(bytes, Ordering::AcqRel);
                self.flush_wanted.notify_one();
                true
            }
            Direct::Refused => false,
        }
    }

    /// Sends an event straight into the socket when possible (see `write_direct`; `frame`
    /// is `text` as a WebSocket frame), else through the queue like [`Self::push_now`].
    /// Returns whether it was written directly: the caller counts those deliveries (one
    /// counter shared by the cores of a fan-out would bounce between their caches).
    #[must_use = "direct writes are counted by the caller"]
    pub fn push_direct(&self, text: &Utf8Bytes, frame: &Bytes) -> bool {
        if self.write_direct(text, frame) {
            return true;
        }
        self.push_now(text);
        false
    }

    /// Queues a message without waiting; a full queue marks the session a slow consumer.
    pub fn push_now(&self, text: &Utf8Bytes) {
        match self.try_queue(Outbound::Text(text.clone())) {
            Ok(()) => {
                self.metrics.events_delivered.inc();
            }
            Err(mpsc::error::TrySendError::Closed(())) => {}
            Err(mpsc::error::TrySendError::Full(())) => self.evict(),
        }
    }

    /// Queues a dashboard event (`quorum.vote.recorded`, `instance.*`) without waiting, if
    /// the queue has room to spare: it may fill at most half the queue, in messages and in
    /// bytes, so that decision events always find the other half. Dashboard events are
    /// best effort: one that finds no room is dropped and counted, and the session stays
    /// open (a dashboard reads `system.get_state` for the truth). Returns whether it went in.
    pub fn push_dashboard(&self, text: &Utf8Bytes) -> bool {
        let spare_bytes = self.byte_budget / 2;
        let spare_messages = self.queue_len / 2;
        let room = self.live.queued_bytes.load(Ordering::Acquire) + text.len() <= spare_bytes
            && self.outbound.capacity() > spare_messages;
        if room && self.try_queue(Outbound::Text(text.clone())).is_ok() {
            return true;
        }
        self.metrics.dashboard_events_dropped.inc();
        false
    }

    /// Queues a notice without waiting (it is not a decision event, so it is not counted as
    /// one); a full queue marks the session a slow consumer.
    pub fn push_notice(&self, text: &Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(())) =
            self.try_queue(Outbound::Text(text.clone()))
        {
            self.evict();
        }
    }

    /// Queues a notice and then a close, without waiting: for the hub's own tasks, which
    /// must not wait on one session. A full queue marks the session a slow consumer,
    /// which closes it too.
    pub fn close_with_notice(&self, notice: Utf8Bytes, code: u16, reason: &'static str) {
        let queued = self
            .try_queue(Outbound::Text(notice))
            .and_then(|()| self.try_queue(Outbound::Close(code, reason)));
        if let Err(mpsc::error::TrySendError::Full(())) = queued {
            self.evict();
        }
    }

    /// Marks the session a slow consumer; its writer closes it (1008).
    pub(super) fn evict(&self) {
        self.metrics.events_dropped.inc();
        if !self.slow.swap(true, Ordering::AcqRel) {
            tracing::warn!(session = self.id, "slow consumer: closing session");
            self.metrics.slow_consumer_closes.inc();
        }
        self.evicted.notify_one();
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
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session(queue_bytes: usize) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        SessionHandle::for_test(64, queue_bytes, None, false)
    }

    fn text(len: usize) -> Utf8Bytes {
        "x".repeat(len).into()
    }

    #[tokio::test]
    async fn a_reply_waiting_for_room_does_not_crowd_out_events_that_fit() {
        let (session, mut queue) = session(1000);
        for _ in 0..3 {
            session.push_now(&text(300));
        }
        // A reply that does not fit waits...
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.send(Outbound::Text(text(500))).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...while an event that fits still goes in, and the session is not evicted.
        session.push_now(&text(50));
        assert!(
            !session.slow.load(Ordering::Acquire),
            "evicted with room left"
        );
        // One that does not fit evicts.
        session.push_now(&text(100));
        assert!(session.slow.load(Ordering::Acquire));
        // Once the writer takes messages off, the reply goes in.
        for _ in 0..2 {
            let message = queue.recv().await.unwrap();
            session.written(session.counted(&message));
        }
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_large_message_counts_for_half_the_budget() {
        let (session, mut queue) = session(1000);
        assert!(session.send(Outbound::Text(text(5000))).await);
        // Room is left for events beside it...
        session.push_now(&text(400));
        assert!(
            !session.slow.load(Ordering::Acquire),
            "no room beside a large reply"
        );
        // ...but no more than the budget.
        session.push_now(&text(200));
        assert!(session.slow.load(Ordering::Acquire));
        let message = queue.recv().await.unwrap();
        session.written(session.counted(&message));
        assert!(session.send(Outbound::Text(text(500))).await);
    }

    #[tokio::test]
    async fn a_reply_waiting_for_room_gives_up_when_the_writer_is_gone() {
        let (session, _queue) = session(1000);
        session.push_now(&text(400));
        session.push_now(&text(400));
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.send(Outbound::Text(text(500))).await })
        };
        tokio::task::yield_now().await;
        session.close_queue();
        assert!(!waiting.await.unwrap());
    }
}
