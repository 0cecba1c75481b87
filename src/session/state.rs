//! A session's own state, as the rest of the hub sees it: its outbound queue, its
//! instance binding, its call allowance and its dashboard subscriptions.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
use crate::sync::lock;

/// The expiry of a session whose token never expires.
const NEVER: u64 = u64::MAX;

/// Steps in which a session's held bytes count towards the hub's total
/// (`quorum_session_outbound_bytes`): a session's share changes only when its bytes cross
/// one, so a session that keeps up (a few small messages at a time) never touches the
/// shared total.
pub(crate) const HELD_STEP_BYTES: usize = 64 * 1024;

/// What a session's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    /// An event or notice the hub pushed: it never waits for room, and counts in the
    /// events' part of the session's byte budget.
    Pushed(Utf8Bytes),
    /// Something the session's own reader queued for its calls, a reply or a replayed event:
    /// it counts in the replies' part (see [`SessionHandle::send`]).
    Reply(Utf8Bytes),
    /// Close the socket with this code and reason, after everything queued before it.
    Close(u16, &'static str),
}

/// Bytes held for a session's outbound, events and replies apart: queued, taken by the
/// writer and not yet written, or left on the wire by a direct write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) events: usize,
    pub(super) replies: usize,
}

impl Held {
    /// Where the replies start in the packed word; each part stays far below 2^32 bytes,
    /// since the budget is at most 1 GiB (`--session-queue-bytes`) and the replies pass
    /// half of it by one reply at most.
    const REPLY_SHIFT: u32 = 32;
    const PART: u64 = (1 << Self::REPLY_SHIFT) - 1;

    /// The bytes a queued message holds: its whole length.
    pub(super) fn of(message: &Outbound) -> Held {
        match message {
            Outbound::Pushed(text) => Held::events(text.len()),
            Outbound::Reply(text) => Held::replies(text.len()),
            Outbound::Close(..) => Held::default(),
        }
    }

    pub(super) fn events(bytes: usize) -> Held {
        Held {
            events: bytes,
            replies: 0,
        }
    }

    pub(super) fn replies(bytes: usize) -> Held {
        Held {
            events: 0,
            replies: bytes,
        }
    }

    pub(super) fn total(self) -> usize {
        self.events + self.replies
    }

    fn pack(self) -> u64 {
        debug_assert!(self.events as u64 <= Self::PART && self.replies as u64 <= Self::PART);
        self.events as u64 | ((self.replies as u64) << Self::REPLY_SHIFT)
    }

    fn unpack(word: u64) -> Held {
        Held {
            events: (word & Self::PART) as usize,
            replies: (word >> Self::REPLY_SHIFT) as usize,
        }
    }
}

impl std::ops::AddAssign for Held {
    fn add_assign(&mut self, other: Held) {
        self.events += other.events;
        self.replies += other.replies;
    }
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
    /// are held as events until the writer has flushed them.
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
    /// Bytes held for the session's outbound, at most (see [`Live::held`]).
    byte_budget: usize,
    /// Raised when held bytes are given back (or the queue closes), for the reader waiting
    /// for room for its replies.
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
    /// Bytes held for the session's outbound (a packed [`Held`]): every message counts its
    /// whole length from when it is queued until the writer has written it, and a direct
    /// write's unflushed rest until it is flushed. Zero means nothing is queued or in flight.
    ///
    /// Together at most the byte budget, except that the replies may pass half of it by
    /// one message: the reader queues a reply whatever its size, but runs the next call
    /// (or queues the next replayed event) only once the replies hold less than half.
    /// Pushed events get whatever the replies leave, and never less than half.
    pub(super) held: AtomicU64,
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
                held: AtomicU64::new(0),
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

    /// Queues a message of the session's own (an [`Outbound::Reply`] or a close): first
    /// waits until its replies hold less than half the byte budget (the caller's own
    /// backpressure; a close holds nothing and does not wait), then queues it whatever its
    /// size, waiting only for a place if the queue is full by messages. Returns false once
    /// the writer is gone.
    pub async fn send(&self, message: Outbound) -> bool {
        if Held::of(&message).total() > 0 && !self.room_for_replies().await {
            return false;
        }
        self.queue_reply(message).await
    }

    /// Waits until the session's replies hold less than half the byte budget; false when
    /// the writer is gone instead. The reader waits here before it runs a call, so a call's
    /// reply is held only in the queue, counted, never beside it.
    pub async fn room_for_replies(&self) -> bool {
        // The common case, room at once, takes no waiter.
        if self.held_now().replies < self.reply_share() {
            return !self.queue_closed.load(Ordering::Acquire);
        }
        loop {
            // Registered before checking, so a release in between is not missed.
            let room = self.queue_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.queue_closed.load(Ordering::Acquire) {
                return false;
            }
            if self.held_now().replies < self.reply_share() {
                return true;
            }
            room.await;
        }
    }

    /// Queues a reply (or a close) at once, whatever its size: its bytes are held from here
    /// on, also while it waits for a place in a queue full by messages.
    pub async fn queue_reply(&self, message: Outbound) -> bool {
        let held = Held::of(&message);
        self.hold(held);
        if self.outbound.send(message).await.is_ok() {
            return true;
        }
        self.release(held);
        false
    }

    /// Queues a pushed message without waiting; `Full` when the queue is full, by messages,
    /// or by bytes: an event fits while the events held stay within what the replies leave
    /// of the budget, which is never less than half of it.
    fn try_queue(&self, message: Outbound) -> Result<(), mpsc::error::TrySendError<()>> {
        let held = Held::of(&message);
        if held.total() > 0 && !self.reserve_event(held.events) {
            return Err(mpsc::error::TrySendError::Full(()));
        }
        self.outbound.try_send(message).map_err(|err| {
            self.release(held);
            match err {
                mpsc::error::TrySendError::Full(_) => mpsc::error::TrySendError::Full(()),
                mpsc::error::TrySendError::Closed(_) => mpsc::error::TrySendError::Closed(()),
            }
        })
    }

    /// The replies' part of the byte budget: the reader waits while they hold this much.
    fn reply_share(&self) -> usize {
        (self.byte_budget / 2).max(1)
    }

    /// Holds `bytes` of events if they fit beside what is held (one atomic step, so a
    /// reply queued or written meanwhile is seen either wholly or not at all).
    fn reserve_event(&self, bytes: usize) -> bool {
        let budget = self.byte_budget;
        let share = self.reply_share();
        let reserved = self
            .live
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let held = Held::unpack(word);
                let room = budget.saturating_sub(held.replies.min(share));
                (held.events + bytes <= room).then(|| word + Held::events(bytes).pack())
            });
        match reserved {
            Ok(before) => {
                let before = Held::unpack(before).total();
                self.account(before, before + bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Holds `held` more bytes, unconditionally.
    fn hold(&self, held: Held) {
        let before = Held::unpack(self.live.held.fetch_add(held.pack(), Ordering::AcqRel));
        self.account(before.total(), before.total() + held.total());
    }

    fn release(&self, held: Held) {
        let before = Held::unpack(self.live.held.fetch_sub(held.pack(), Ordering::AcqRel));
        self.account(before.total(), before.total() - held.total());
        self.queue_room.notify_waiters();
    }

    /// Reports a change of the bytes held from `before` to `after` to the hub's metrics:
    /// the total, in steps of [`HELD_STEP_BYTES`], and the most one session has held (read
    /// first: a record is rarely broken, and the shared value stays in every core's cache
    /// meanwhile).
    fn account(&self, before: usize, after: usize) {
        let steps = |bytes: usize| (bytes / HELD_STEP_BYTES) as i64;
        let change = steps(after) - steps(before);
        if change != 0 {
            let total = &self.metrics.session_outbound_bytes;
            total.inc_by(change * HELD_STEP_BYTES as i64);
        }
        let peak = &self.metrics.session_outbound_peak_bytes;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        if after > peak.get() {
            peak.inner().fetch_max(after, Ordering::AcqRel);
        }
    }

    /// What is held for the session's outbound now.
    pub(super) fn held_now(&self) -> Held {
        Held::unpack(self.live.held.load(Ordering::Acquire))
    }

    /// Ends the queue once the writer is gone: a sender waiting for room fails instead of
    /// waiting forever.
    pub(super) fn close_queue(&self) {
        self.queue_closed.store(true, Ordering::Release);
        self.queue_room.notify_waiters();
    }

    /// Gives back the bytes of messages the writer has written (or given up on).
    pub(super) fn written(&self, held: Held) {
        if held != Held::default() {
            self.release(held);
        }
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
        // Held bytes count until written, so zero means nothing is waiting or in flight.
        if self.live.held.load(Ordering::Acquire) != 0 {
            return false;
        }
        let Some(wire) = self.live.wire.as_ref() else {
            return false;
        };
        match wire.write_frame(frame) {
            Direct::Written => true,
            Direct::Partly => {
                // The socket is full: the rest waits on the wire for the writer, and
                // the event is held meanwhile, so later events queue behind it.
                let bytes = text.len();
                self.hold(Held::events(bytes));
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
        match self.try_queue(Outbound::Pushed(text.clone())) {
            Ok(()) => {
                self.metrics.events_delivered.inc();
            }
            Err(mpsc::error::TrySendError::Closed(())) => {}
            Err(mpsc::error::TrySendError::Full(())) => self.evict(),
        }
    }

    /// Queues a dashboard event (`quorum.vote.recorded`, `instance.*`) without waiting, if
    /// the session has room to spare: only while it holds less than half its byte budget
    /// (events and replies together) and half its queue's messages, so that decision events
    /// always find the other half. Dashboard events are
    /// best effort: one that finds no room is dropped and counted, and the session stays
    /// open (a dashboard reads `system.get_state` for the truth). Returns whether it went in.
    pub fn push_dashboard(&self, text: &Utf8Bytes) -> bool {
        let spare_bytes = self.byte_budget / 2;
        let spare_messages = self.queue_len / 2;
        let held = Held::unpack(self.live.held.load(Ordering::Acquire)).total();
        let room = held + text.len() <= spare_bytes && self.outbound.capacity() > spare_messages;
        if room && self.try_queue(Outbound::Pushed(text.clone())).is_ok() {
            return true;
        }
        self.metrics.dashboard_events_dropped.inc();
        false
    }

    /// Queues a notice without waiting (it is not a decision event, so it is not counted as
    /// one); a full queue marks the session a slow consumer.
    pub fn push_notice(&self, text: &Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(())) =
            self.try_queue(Outbound::Pushed(text.clone()))
        {
            self.evict();
        }
    }

    /// Queues a notice and then a close, without waiting: for the hub's own tasks, which
    /// must not wait on one session. A full queue marks the session a slow consumer,
    /// which closes it too.
    pub fn close_with_notice(&self, notice: Utf8Bytes, code: u16, reason: &'static str) {
        let queued = self
            .try_queue(Outbound::Pushed(notice))
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

impl Drop for SessionHandle {
    /// Takes the session's share out of the hub's total: messages still queued when the
    /// writer stopped are dropped without being written.
    fn drop(&mut self) {
        let held = self.held_now().total();
        self.account(held, 0);
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

    fn reply(len: usize) -> Outbound {
        Outbound::Reply(text(len))
    }

    fn slow(session: &SessionHandle) -> bool {
        session.slow.load(Ordering::Acquire)
    }

    /// Takes the next message off the queue and writes it, as the writer does.
    async fn write_next(session: &SessionHandle, queue: &mut mpsc::Receiver<Outbound>) {
        let message = queue.recv().await.expect("a queued message");
        session.written(Held::of(&message));
    }

    /// Whether `send` is still waiting after everything else has had its turn.
    async fn still_waiting(waiting: &tokio::task::JoinHandle<bool>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        !waiting.is_finished()
    }

    #[tokio::test]
    async fn every_message_holds_its_whole_length_until_written() {
        let (session, mut queue) = session(1000);
        assert!(session.send(reply(5000)).await);
        session.push_now(&text(300));
        assert_eq!(
            session.held_now(),
            Held {
                events: 300,
                replies: 5000
            }
        );
        write_next(&session, &mut queue).await;
        assert_eq!(session.held_now(), Held::events(300));
        write_next(&session, &mut queue).await;
        assert_eq!(session.held_now(), Held::default());
        assert_eq!(session.metrics.session_outbound_peak_bytes.get(), 5300);
    }

    #[tokio::test]
    async fn the_hubs_total_counts_each_session_in_whole_steps() {
        let (session, mut queue) = session(1 << 20);
        let total = session.metrics.session_outbound_bytes.clone();
        assert!(session.send(reply(HELD_STEP_BYTES + 100)).await);
        session.push_now(&text(HELD_STEP_BYTES - 50));
        assert_eq!(total.get(), 2 * HELD_STEP_BYTES as i64);
        write_next(&session, &mut queue).await;
        assert_eq!(total.get(), 0, "less than a step is held");
        assert!(session.send(reply(HELD_STEP_BYTES)).await);
        assert_eq!(total.get(), HELD_STEP_BYTES as i64);
        // What is still queued when the session goes is taken out of the total.
        drop((session, queue));
        assert_eq!(total.get(), 0);
    }

    #[tokio::test]
    async fn replies_wait_once_they_hold_half_the_budget() {
        let (session, mut queue) = session(1000);
        // Under half the budget, a reply goes in at once, and may take the replies past it.
        assert!(session.send(reply(300)).await);
        assert!(session.send(reply(300)).await);
        // At half, the next one waits...
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.send(reply(10)).await })
        };
        assert!(still_waiting(&waiting).await);
        // ...until the writer has written enough to bring them under it.
        write_next(&session, &mut queue).await;
        assert!(waiting.await.unwrap());
        assert_eq!(session.held_now(), Held::replies(310));
    }

    #[tokio::test]
    async fn a_close_holds_nothing_and_never_waits_for_room() {
        let (session, mut queue) = session(1000);
        assert!(session.send(reply(600)).await);
        assert!(session.send(Outbound::Close(1000, "bye")).await);
        write_next(&session, &mut queue).await;
        assert!(matches!(
            queue.recv().await,
            Some(Outbound::Close(1000, "bye"))
        ));
    }

    #[tokio::test]
    async fn events_have_half_the_budget_beside_any_reply() {
        let (session, _queue) = session(1000);
        // A reply far larger than the budget goes out alone...
        assert!(session.send(reply(5000)).await);
        // ...and leaves pushed events half the budget: a session that reads is not closed
        // for its own large reply.
        session.push_now(&text(450));
        session.push_now(&text(50));
        assert!(!slow(&session), "no room beside a large reply");
        // One more byte does not fit.
        session.push_now(&text(1));
        assert!(slow(&session));
        assert_eq!(
            session.held_now(),
            Held {
                events: 500,
                replies: 5000
            }
        );
    }

    #[tokio::test]
    async fn events_take_what_the_replies_leave_of_the_budget() {
        let (session, _queue) = session(1000);
        assert!(session.send(reply(200)).await);
        session.push_now(&text(800));
        assert!(!slow(&session));
        session.push_now(&text(1));
        assert!(
            slow(&session),
            "the replies and events held more than the budget"
        );
        assert_eq!(session.held_now().total(), 1000);
    }

    #[tokio::test]
    async fn the_budget_is_passed_by_one_reply_at_most() {
        let (session, _queue) = session(1000);
        // Events fill what they may while no reply is held...
        session.push_now(&text(1000));
        // ...a reply still goes in (the replies hold less than half)...
        assert!(session.send(reply(700)).await);
        // ...and then nothing more does: no event, and no reply.
        session.push_now(&text(1));
        assert!(slow(&session));
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.send(reply(1)).await })
        };
        assert!(still_waiting(&waiting).await);
        assert_eq!(session.held_now().total(), 1700);
        assert_eq!(session.metrics.session_outbound_peak_bytes.get(), 1700);
        waiting.abort();
    }

    #[tokio::test]
    async fn a_reply_waiting_for_room_gives_up_when_the_writer_is_gone() {
        let (session, _queue) = session(1000);
        assert!(session.send(reply(800)).await);
        let waiting = {
            let session = session.clone();
            tokio::spawn(async move { session.send(reply(500)).await })
        };
        assert!(still_waiting(&waiting).await);
        session.close_queue();
        assert!(!waiting.await.unwrap());
        assert_eq!(
            session.held_now(),
            Held::replies(800),
            "the refused reply holds nothing"
        );
    }
}
