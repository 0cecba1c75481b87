//! The writing half of a session: drains the outbound queue to the socket in batches,
//! finishes direct writes the socket had no room for, pings the peer, and closes slow
//! consumers and silent peers.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::queue;
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::sync::futures::Notified;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

use super::SessionSocket;
use super::outbox::{Held, Outbound};
use super::signal::Signal;
use super::state::SessionHandle;
use crate::protocol::close::{self as reason, code};

/// The writing half of a session's WebSocket, the writer task's own.
pub type Sink = SplitSink<SessionSocket, Message>;

/// Longest one write to a client may take before the session is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the hub tries to deliver a close frame before dropping the connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pings a peer may leave unanswered before its session is closed.
pub const MAX_UNANSWERED_PINGS: u32 = 2;
/// Most queued messages written with one flush.
pub const WRITE_BATCH: usize = 64;
/// Longest WebSocket frame the writer sends: a longer message goes as fragments of this
/// size, so the WebSocket's write buffer (which writes once it holds 128 KiB, and keeps its
/// largest size) never holds more than that plus one fragment.
pub const WRITE_FRAGMENT_BYTES: usize = 16 * 1024;

/// What a session's writer is told by the hub's configuration.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// How often the writer pings its peer (zero: never).
    pub ping_interval: Duration,
}

/// Writes a session's outbound queue to its WebSocket until the session ends: the reader
/// is done (`reader_done`) and everything it queued is written, the session is evicted,
/// the peer stops reading or answering pings, or a close goes out. Raises `writer_done`
/// when it stops writing.
///
/// While the session is idle, this future waits for the next message; everything it
/// does with one (a write, a flush, a close) runs in a future of its own, boxed, so that
/// an idle session does not carry their space. An `async move` block rather than an
/// `async fn`, which would keep its arguments twice.
#[allow(clippy::manual_async_fn)]
pub fn write_outbound<'a>(
    settings: WriterSettings,
    session: &'a SessionHandle,
    sink: &'a mut Sink,
    outbound: &'a mut queue::Receiver<Outbound>,
    reader_done: &'a Signal,
    writer_done: &'a Signal,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        // A zero interval turns pings off.
        let ping_every = settings.ping_interval;
        let mut pings = tokio::time::interval(ping_every.max(Duration::from_millis(1)));
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pings.reset();
        // Created once, not per message; the session ends when either fires.
        let evicted = session.outbox.evicted.notified();
        let reader_gone = reader_done.raised();
        tokio::pin!(evicted, reader_gone);
        let mut pending_close = None;
        loop {
            // The next message, and the bytes of the queue it holds until it is written.
            let (message, held) = match pending_close.take() {
                Some((code, reason)) => (close(code, reason), Held::default()),
                None => tokio::select! {
                    biased;
                    _ = &mut evicted => (close(code::POLICY_VIOLATION, reason::SLOW_CONSUMER), Held::default()),
                    // A direct write left bytes on the wire: they go before anything queued.
                    () = session.outbox.flush_wanted.notified() => {
                        match Box::pin(flush_direct(session, sink, evicted.as_mut())).await {
                            Flushed::Done => continue,
                            Flushed::Evicted => {
                                pending_close = Some((code::POLICY_VIOLATION, reason::SLOW_CONSUMER));
                                continue;
                            }
                            Flushed::Failed => break,
                        }
                    }
                    next = outbound.recv() => match next {
                        Some(message) => {
                            let held = Held::of(&message);
                            (Message::from(message), held)
                        }
                        None => break,
                    },
                    // Everything the reader queued has been written (the queue is polled first).
                    _ = &mut reader_gone => break,
                    _ = pings.tick(), if !settings.ping_interval.is_zero() => {
                        if session.ping_sent() >= MAX_UNANSWERED_PINGS {
                            tracing::info!(session = session.id, "peer left {MAX_UNANSWERED_PINGS} pings unanswered; closing");
                            (close(code::POLICY_VIOLATION, reason::PING_TIMEOUT), Held::default())
                        } else {
                            (Message::Ping(Default::default()), Held::default())
                        }
                    }
                },
            };
            let batch = Batch {
                session,
                sink: &mut *sink,
                outbound: &mut *outbound,
                pending_close: &mut pending_close,
            };
            if !Box::pin(batch.write(message, held, evicted.as_mut())).await {
                break;
            }
        }
        // Nothing is written any more: whoever waits for room in the queue gives up now.
        session.outbox.close_queue();
        writer_done.raise();
        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, sink.close())).await;
    }
}

/// A close frame with `code` and `reason`.
fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

impl From<Outbound> for Message {
    fn from(message: Outbound) -> Message {
        match message {
            Outbound::Pushed(text) | Outbound::Reply(text) => Message::Text(text),
            Outbound::Close(code, reason) => close(code, reason),
        }
    }
}

/// What became of flushing what a direct write left on the wire.
enum Flushed {
    /// Flushed: the writer goes on.
    Done,
    /// The session was evicted meanwhile: the writer closes it.
    Evicted,
    /// The write failed or timed out: the session ends.
    Failed,
}

/// Flushes the rest of a direct write, which the socket had no room for, and gives its
/// bytes back.
async fn flush_direct(
    session: &SessionHandle,
    sink: &mut Sink,
    evicted: Pin<&mut Notified<'_>>,
) -> Flushed {
    let flushed = tokio::select! {
        flushed = tokio::time::timeout(WRITE_TIMEOUT, sink.flush()) => flushed,
        _ = evicted => return Flushed::Evicted,
    };
    session.outbox.written(Held::events(
        session.outbox.unflushed.swap(0, Ordering::AcqRel),
    ));
    match flushed {
        Ok(Ok(())) => return Flushed::Done,
        Ok(Err(err)) => tracing::debug!(%err, "write failed"),
        Err(_) => tracing::info!(
            session = session.id,
            "client stopped reading for {WRITE_TIMEOUT:?}; dropping session"
        ),
    }
    Flushed::Failed
}

/// One write of the writer: a message, and whatever else is already queued behind it.
struct Batch<'a> {
    session: &'a SessionHandle,
    sink: &'a mut Sink,
    outbound: &'a mut queue::Receiver<Outbound>,
    /// Where a close taken off the queue behind the batch waits for the next write (its
    /// code and reason).
    pending_close: &'a mut Option<(u16, &'static str)>,
}

impl Batch<'_> {
    /// Writes `message` (which holds `held` of the queue's bytes) and up to [`WRITE_BATCH`]
    /// queued messages after it with one flush, within the write's time limit; returns
    /// whether the writer goes on.
    async fn write(self, message: Message, held: Held, evicted: Pin<&mut Notified<'_>>) -> bool {
        let Batch {
            session,
            sink,
            outbound,
            pending_close,
        } = self;
        let closing = matches!(message, Message::Close(_));
        let limit = if closing {
            CLOSE_TIMEOUT
        } else {
            WRITE_TIMEOUT
        };
        // Bytes taken off the queue for this write: they stay held until written, so a
        // blocked write holds the queue's room too.
        let mut in_write = held;
        // Whatever else is already queued goes out in the same write.
        let write = async {
            feed(sink, message).await?;
            if !closing {
                for _ in 1..WRITE_BATCH {
                    let Ok(message) = outbound.try_recv() else {
                        break;
                    };
                    in_write += Held::of(&message);
                    match message {
                        Outbound::Pushed(text) | Outbound::Reply(text) => {
                            feed(sink, Message::Text(text)).await?;
                        }
                        Outbound::Close(code, reason) => {
                            *pending_close = Some((code, reason));
                            break;
                        }
                    }
                }
            }
            sink.flush().await
        };
        let written = tokio::select! {
            written = tokio::time::timeout(limit, write) => Some(written),
            // A client that stopped reading blocks the write; eviction must not wait for it.
            _ = evicted, if !closing => None,
        };
        if !matches!(written, Some(Ok(Ok(())))) {
            // The write did not finish, and may have stopped between the fragments of a
            // message: the wire takes no more direct writes before its bytes are given back.
            if let Some(wire) = session.outbox.wire() {
                wire.close_begun();
            }
        }
        session.outbox.written(in_write);
        match written {
            Some(Ok(Ok(()))) => !closing,
            None => {
                let slow = close(code::POLICY_VIOLATION, reason::SLOW_CONSUMER);
                let send = async {
                    sink.feed(slow).await?;
                    sink.flush().await
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
                false
            }
            Some(Ok(Err(err))) => {
                tracing::debug!(%err, "write failed");
                false
            }
            Some(Err(_)) => {
                tracing::info!(
                    session = session.id,
                    "client stopped reading for {limit:?}; dropping session"
                );
                false
            }
        }
    }
}

/// Feeds one message to the socket; a text longer than [`WRITE_FRAGMENT_BYTES`] goes as
/// fragments of that size, so the WebSocket's write buffer never holds a copy of a whole
/// large reply, nor keeps its size once it is written.
async fn feed(sink: &mut Sink, message: Message) -> Result<(), WsError> {
    let Message::Text(text) = message else {
        return sink.feed(message).await;
    };
    if text.len() <= WRITE_FRAGMENT_BYTES {
        return sink.feed(Message::Text(text)).await;
    }
    for fragment in fragments(&text) {
        sink.feed(Message::Frame(fragment)).await?;
    }
    Ok(())
}

/// A text message as WebSocket fragments of at most [`WRITE_FRAGMENT_BYTES`] each, sharing
/// its bytes (a fragment may end inside a character: the peer checks the whole message).
fn fragments(text: &Utf8Bytes) -> impl Iterator<Item = Frame> + use<> {
    let bytes: Bytes = AsRef::<Bytes>::as_ref(text).clone();
    let len = bytes.len();
    (0..len).step_by(WRITE_FRAGMENT_BYTES).map(move |start| {
        let end = (start + WRITE_FRAGMENT_BYTES).min(len);
        let opcode = if start == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        Frame::message(bytes.slice(start..end), OpCode::Data(opcode), end == len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_goes_as_fragments_that_rebuild_it() {
        let text: String = (0..WRITE_FRAGMENT_BYTES * 5 / 2)
            .map(|n| char::from(b'a' + (n % 26) as u8))
            .collect();
        let frames: Vec<Frame> = fragments(&text.clone().into()).collect();
        let headers: Vec<(OpCode, bool, usize)> = frames
            .iter()
            .map(|f| (f.header().opcode, f.header().is_final, f.payload().len()))
            .collect();
        assert_eq!(
            headers,
            [
                (OpCode::Data(Data::Text), false, WRITE_FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), false, WRITE_FRAGMENT_BYTES),
                (OpCode::Data(Data::Continue), true, WRITE_FRAGMENT_BYTES / 2),
            ]
        );
        let rebuilt: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
        assert_eq!(rebuilt, text.as_bytes());
    }
}
