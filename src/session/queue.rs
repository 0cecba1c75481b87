//! A session's outbound queue: bounded in messages like a tokio channel, with one sender
//! and one receiver, but holding no memory while nothing waits in it. A tokio channel
//! allocates its first block of 32 places (1.3 KiB of `Outbound`s) when it is made, the
//! largest part of an idle session's memory; this queue allocates when a message waits,
//! and gives the memory back once it has drained past [`KEPT_PLACES`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::sync::lock;

/// Places a drained queue keeps allocated; a queue that grew past them frees its memory
/// once it is empty again.
pub const KEPT_PLACES: usize = 8;

/// Why [`Sender::try_send`] gave the message back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its capacity.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The queue's two ends; `capacity` messages wait at most.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_gone: false,
            receiver_gone: false,
        }),
        readable: Notify::new(),
        place: Notify::new(),
        capacity: capacity.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Bytes of the state the two ends share (behind an `Arc`).
pub const fn shared_size<T>() -> usize {
    std::mem::size_of::<Shared<T>>()
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Raised when a message is queued or the sender goes: the receiver waits on it.
    readable: Notify,
    /// Raised when a place frees up or the receiver goes: a sender waiting for a place.
    place: Notify,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// The sending end (the session's outbox holds it).
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end (the session's writer drains it).
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `message` if there is a place and the receiver is there.
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let mut state = lock(&self.shared.state);
        if state.receiver_gone {
            return Err(TrySendError::Closed(message));
        }
        if state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(message));
        }
        // One place first, not the four a first push takes: most queues of an idle
        // session only ever hold one message at a time (a reply), and keep its place.
        if state.items.capacity() == 0 {
            state.items.reserve_exact(1);
        }
        state.items.push_back(message);
        drop(state);
        self.shared.readable.notify_one();
        Ok(())
    }

    /// Queues `message`, waiting for a place; gives it back once the receiver is gone.
    pub async fn send(&self, mut message: T) -> Result<(), T> {
        loop {
            // Registered before trying, so a place freed in between is not missed.
            let place = self.shared.place.notified();
            tokio::pin!(place);
            place.as_mut().enable();
            match self.try_send(message) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(back),
                Err(TrySendError::Full(back)) => message = back,
            }
            place.await;
        }
    }

    /// Places free now.
    pub fn capacity(&self) -> usize {
        let len = lock(&self.shared.state).items.len();
        self.shared.capacity.saturating_sub(len)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        lock(&self.shared.state).sender_gone = true;
        self.shared.readable.notify_one();
    }
}

impl<T> Receiver<T> {
    /// The next message, waiting for one; `None` once the queue is empty and the sender
    /// gone.
    pub async fn recv(&mut self) -> Option<T> {
        loop {
            let readable = self.shared.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            match self.take() {
                Ok(message) => return Some(message),
                Err(true) => return None,
                Err(false) => readable.await,
            }
        }
    }

    /// The next message if one waits.
    pub fn try_recv(&mut self) -> Result<T, ()> {
        self.take().map_err(|_| ())
    }

    /// The first message; else whether the sender is gone.
    fn take(&self) -> Result<T, bool> {
        let mut state = lock(&self.shared.state);
        let Some(message) = state.items.pop_front() else {
            return Err(state.sender_gone);
        };
        if state.items.is_empty() && state.items.capacity() > KEPT_PLACES {
            state.items = VecDeque::new();
        }
        drop(state);
        self.shared.place.notify_one();
        Ok(message)
    }
}

impl<T> Drop for Receiver<T> {
    /// Senders fail from now on, also one waiting for a place; what waits is dropped.
    fn drop(&mut self) {
        let items = {
            let mut state = lock(&self.shared.state);
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        drop(items);
        self.shared.place.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_come_out_in_order_up_to_the_capacity() {
        let (sender, mut receiver) = channel(3);
        for n in 0..3 {
            sender.try_send(n).unwrap();
        }
        assert_eq!(sender.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(sender.capacity(), 0);
        assert_eq!(receiver.recv().await, Some(0));
        assert_eq!(sender.capacity(), 1);
        sender.try_send(3).unwrap();
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(receiver.recv().await, Some(2));
        assert_eq!(receiver.recv().await, Some(3));
        assert_eq!(receiver.try_recv(), Err(()));
        drop(sender);
        assert_eq!(receiver.recv().await, None, "the sender is gone");
    }

    #[tokio::test]
    async fn a_sender_waits_for_a_place_and_fails_once_the_receiver_is_gone() {
        let (sender, mut receiver) = channel(1);
        let sender = Arc::new(sender);
        sender.try_send(1).unwrap();
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "sent into a full queue");
        assert_eq!(receiver.recv().await, Some(1));
        assert_eq!(waiting.await.unwrap(), Ok(()));
        assert_eq!(receiver.recv().await, Some(2));

        sender.try_send(3).unwrap();
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(4).await }
        });
        tokio::task::yield_now().await;
        drop(receiver);
        assert_eq!(waiting.await.unwrap(), Err(4), "the receiver went");
        assert_eq!(sender.try_send(5), Err(TrySendError::Closed(5)));
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_a_message_sent_while_it_waits() {
        let (sender, mut receiver) = channel(4);
        let reading = tokio::spawn(async move { receiver.recv().await });
        tokio::task::yield_now().await;
        sender.try_send("hello").unwrap();
        assert_eq!(reading.await.unwrap(), Some("hello"));
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (sender, mut receiver) = channel(1024);
        for n in 0..100 {
            sender.try_send(n).unwrap();
        }
        while receiver.try_recv().is_ok() {}
        assert_eq!(lock(&sender.shared.state).items.capacity(), 0);
        sender.try_send(1).unwrap();
        let kept = lock(&sender.shared.state).items.capacity();
        assert_eq!(kept, 1, "a first message takes one place");
        receiver.try_recv().unwrap();
        assert_eq!(
            lock(&sender.shared.state).items.capacity(),
            kept,
            "a small queue keeps its places"
        );
    }
}
