//! A session's outbound queue, whatever transport drains it: the bounded queue of
//! replies, pushed events and a close, the byte budget that bounds what it holds, the
//! direct writes of events into the socket while nothing waits, and eviction of a
//! session that falls a full queue behind.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use futures::future::Either;
use tokio::sync::Notify;

use super::queue::{self, Receiver, Sender, TrySendError};
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::wire::{Direct, Wire};
use crate::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

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

/// A session's outbound: the sending end of its queue and everything that bounds it.
///
/// Laid out in order (`repr(C)`), the fields a fan-out reads for every session first: it
/// reads thousands in a row, and every cache line they are spread over is one more fetch
/// from memory per session.
#[repr(C)]
pub struct Outbox {
    /// Bytes held for the session's outbound (a packed [`Held`]): every message counts its
    /// whole length from when it is queued until the writer has written it, and a direct
    /// write's unflushed rest until it is flushed. Zero means nothing is queued or in flight.
    ///
    /// Together at most the byte budget, except that the replies may pass half of it by
    /// one message: the reader queues a reply whatever its size, but runs the next call
    /// (or queues the next replayed event) only once the replies hold less than half.
    /// Pushed events get whatever the replies leave, and never less than half.
    held: AtomicU64,
    /// The session's TCP stream (`None` in unit tests, and for a transport that takes no
    /// direct writes): [`Outbox::push_direct`] writes into it while nothing is queued.
    wire: Option<Wire>,
    sender: Sender<Outbound>,
    /// Messages the queue holds at most.
    capacity: usize,
    /// Bytes held at most, but for one reply.
    byte_budget: usize,
    /// Bytes of a direct write the socket did not take at once (the socket was full); they
    /// are held as events until the writer has flushed them.
    pub(super) unflushed: AtomicUsize,
    /// Raised when a direct write left bytes for the writer to flush.
    pub(super) flush_wanted: Notify,
    /// Raised when the session fell a full queue behind; its writer closes it.
    pub(super) evicted: Notify,
    /// Raised when held bytes are given back (or the queue closes), for the reader waiting
    /// for room for its replies.
    room: Notify,
    closed: AtomicBool,
    /// Set once the session is marked a slow consumer (counted once).
    slow: AtomicBool,
    metrics: OutboxMetrics,
    /// The session's id, for the log.
    session: u64,
}

/// The few of the hub's metrics an outbox counts in. Every session holds its own copy, so
/// it holds these and not the whole [`Metrics`].
struct OutboxMetrics {
    events_delivered: Counter,
    events_dropped: Counter,
    slow_consumer_closes: Counter,
    dashboard_events_dropped: Counter,
    session_outbound_bytes: Gauge,
    session_outbound_peak_bytes: Gauge,
}

impl From<Metrics> for OutboxMetrics {
    fn from(metrics: Metrics) -> Self {
        Self {
            events_delivered: metrics.events_delivered,
            events_dropped: metrics.events_dropped,
            slow_consumer_closes: metrics.slow_consumer_closes,
            dashboard_events_dropped: metrics.dashboard_events_dropped,
            session_outbound_bytes: metrics.session_outbound_bytes,
            session_outbound_peak_bytes: metrics.session_outbound_peak_bytes,
        }
    }
}

/// What a new outbox starts with.
pub struct OutboxSettings {
    /// The session's id, for the log.
    pub session: u64,
    /// Messages the queue holds at most.
    pub capacity: usize,
    /// Bytes held at most, but for one reply (the byte budget).
    pub byte_budget: usize,
    pub metrics: Metrics,
    /// The session's TCP stream, for direct writes.
    pub wire: Option<Wire>,
}

impl Outbox {
    /// An outbox and the receiving end of its queue, which the session's writer drains.
    pub fn new(settings: OutboxSettings) -> (Outbox, Receiver<Outbound>) {
        let (sender, receiver) = queue::channel(settings.capacity);
        let outbox = Outbox {
            held: AtomicU64::new(0),
            wire: settings.wire,
            sender,
            capacity: settings.capacity,
            byte_budget: settings.byte_budget,
            unflushed: AtomicUsize::new(0),
            flush_wanted: Notify::new(),
            evicted: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            metrics: settings.metrics.into(),
            session: settings.session,
        };
        (outbox, receiver)
    }

    /// Messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the session was marked a slow consumer.
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Acquire)
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

    /// Queues an event the session's own reader delivers (a replayed one, or one held
    /// behind a replay) like a reply, waiting for room; counts it delivered. Returns false
    /// once the writer is gone.
    pub async fn send_event(&self, text: Utf8Bytes) -> bool {
        let sent = self.send(Outbound::Reply(text)).await;
        if sent {
            self.metrics.events_delivered.inc();
        }
        sent
    }

    /// Waits until the session's replies hold less than half the byte budget; false when
    /// the writer is gone instead. The reader waits here before it runs a call, so a call's
    /// reply is held only in the queue, counted, never beside it.
    pub async fn room_for_replies(&self) -> bool {
        // The common case, room at once, takes no waiter; the wait is boxed, so that a
        // reader waiting for its next frame does not carry its space.
        if self.held_now().replies < self.reply_share() {
            return !self.closed.load(Ordering::Acquire);
        }
        Box::pin(self.wait_for_room()).await
    }

    /// Waits until the replies hold less than half the byte budget, or the writer is gone.
    async fn wait_for_room(&self) -> bool {
        loop {
            // Registered before checking, so a release in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
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
    ///
    /// The message is queued, or found unwanted, when this is called; the future returned
    /// only waits for a place in a full queue (boxed: a reader holding it between calls
    /// does not carry the wait's space).
    pub fn queue_reply(&self, message: Outbound) -> impl Future<Output = bool> + Send + '_ {
        let held = Held::of(&message);
        self.hold(held);
        match self.sender.try_send(message) {
            Ok(()) => Either::Left(std::future::ready(true)),
            Err(TrySendError::Closed(_)) => {
                self.release(held);
                Either::Left(std::future::ready(false))
            }
            Err(TrySendError::Full(message)) => Either::Right(Box::pin(async move {
                let queued = self.sender.send(message).await.is_ok();
                if !queued {
                    self.release(held);
                }
                queued
            })),
        }
    }

    /// Queues a pushed message without waiting; `Full` when the queue is full, by messages,
    /// or by bytes: an event fits while the events held stay within what the replies leave
    /// of the budget, which is never less than half of it.
    fn try_queue(&self, message: Outbound) -> Result<(), TrySendError<()>> {
        let held = Held::of(&message);
        if held.total() > 0 && !self.reserve_event(held.events) {
            return Err(TrySendError::Full(()));
        }
        self.sender.try_send(message).map_err(|err| {
            self.release(held);
            match err {
                TrySendError::Full(_) => TrySendError::Full(()),
                TrySendError::Closed(_) => TrySendError::Closed(()),
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
        let before = Held::unpack(self.held.fetch_add(held.pack(), Ordering::AcqRel));
        self.account(before.total(), before.total() + held.total());
    }

    fn release(&self, held: Held) {
        let before = Held::unpack(self.held.fetch_sub(held.pack(), Ordering::AcqRel));
        self.account(before.total(), before.total() - held.total());
        self.room.notify_waiters();
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
        Held::unpack(self.held.load(Ordering::Acquire))
    }

    /// Ends the queue once the writer is gone: a sender waiting for room fails instead of
    /// waiting forever.
    pub fn close_queue(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    /// Gives back the bytes of messages the writer has written (or given up on).
    pub(super) fn written(&self, held: Held) {
        if held != Held::default() {
            self.release(held);
        }
    }

    /// The session's TCP stream.
    pub fn wire(&self) -> Option<&Wire> {
        self.wire.as_ref()
    }

    /// Writes an event's frame into the socket from the calling (delivering) task, without
    /// the queue and without waking the writer, when nothing is queued or being written:
    /// it cannot overtake anything, and the socket has room. Returns false when it did
    /// not, and the event must be queued.
    fn write_direct(&self, text: &Utf8Bytes, frame: &Bytes) -> bool {
        // Held bytes count until written, so zero means nothing is waiting or in flight.
        if self.held.load(Ordering::Acquire) != 0 {
            return false;
        }
        let Some(wire) = self.wire.as_ref() else {
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
            Err(TrySendError::Closed(())) => {}
            Err(TrySendError::Full(())) => self.evict(),
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
        let spare_messages = self.capacity / 2;
        let held = Held::unpack(self.held.load(Ordering::Acquire)).total();
        let room = held + text.len() <= spare_bytes && self.sender.capacity() > spare_messages;
        if room && self.try_queue(Outbound::Pushed(text.clone())).is_ok() {
            return true;
        }
        self.metrics.dashboard_events_dropped.inc();
        false
    }

    /// Queues a notice without waiting (it is not a decision event, so it is not counted as
    /// one); a full queue marks the session a slow consumer.
    pub fn push_notice(&self, text: &Utf8Bytes) {
        if let Err(TrySendError::Full(())) = self.try_queue(Outbound::Pushed(text.clone())) {
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
        if let Err(TrySendError::Full(())) = queued {
            self.evict();
        }
    }

    /// Marks the session a slow consumer; its writer closes it (1008).
    pub(super) fn evict(&self) {
        self.metrics.events_dropped.inc();
        if !self.slow.swap(true, Ordering::AcqRel) {
            tracing::warn!(session = self.session, "slow consumer: closing session");
            self.metrics.slow_consumer_closes.inc();
        }
        self.evicted.notify_one();
    }
}

impl Drop for Outbox {
    /// Takes the session's share out of the hub's total: messages still queued when the
    /// writer stopped are dropped without being written.
    fn drop(&mut self) {
        let held = self.held_now().total();
        self.account(held, 0);
    }
}

#[cfg(test)]
mod tests;
