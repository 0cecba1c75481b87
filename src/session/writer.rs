//! The writing half of a session: drains the outbound queue to the socket in batches,
//! finishes direct writes the socket had no room for, pings the peer, and closes slow
//! consumers and silent peers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::SinkExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

use super::state::{Outbound, SessionHandle};
use super::{CLOSE_TIMEOUT, MAX_UNANSWERED_PINGS, Sink, WRITE_BATCH, WRITE_TIMEOUT};
use crate::hub::Hub;
use crate::protocol::close::{self as reason, code};

pub(super) async fn write_outbound(
    hub: &Hub,
    session: &SessionHandle,
    mut sink: Sink,
    mut outbound: mpsc::Receiver<Outbound>,
    reader_done: &CancellationToken,
    writer_done: &CancellationToken,
) {
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    };
    // A zero interval turns pings off.
    let ping_every = hub.config.ping_interval;
    let mut pings = tokio::time::interval(ping_every.max(Duration::from_millis(1)));
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pings.reset();
    // Created once, not per message; the session ends when either fires.
    let evicted = session.evicted.notified();
    let reader_gone = reader_done.cancelled();
    tokio::pin!(evicted, reader_gone);
    let mut pending_close = None;
    // Bytes taken off the queue for the current write: they count against the session's
    // byte budget until written, so a blocked write holds the queue's room too.
    let mut in_write = 0;
    loop {
        let message = match pending_close.take() {
            Some(message) => message,
            None => tokio::select! {
                biased;
                _ = &mut evicted => close(code::POLICY_VIOLATION, reason::SLOW_CONSUMER),
                // A direct write left bytes on the wire: they go before anything queued.
                () = session.flush_wanted.notified() => {
                    let flushed = tokio::select! {
                        flushed = tokio::time::timeout(WRITE_TIMEOUT, sink.flush()) => flushed,
                        _ = &mut evicted => {
                            pending_close = Some(close(code::POLICY_VIOLATION, reason::SLOW_CONSUMER));
                            continue;
                        }
                    };
                    session.written(session.unflushed.swap(0, Ordering::AcqRel));
                    match flushed {
                        Ok(Ok(())) => continue,
                        Ok(Err(err)) => tracing::debug!(%err, "write failed"),
                        Err(_) => tracing::info!(
                            session = session.id,
                            "client stopped reading for {WRITE_TIMEOUT:?}; dropping session"
                        ),
                    }
                    break;
                }
                next = outbound.recv() => match next {
                    Some(message) => {
                        in_write += session.counted(&message);
                        match message {
                            Outbound::Text(text) => Message::Text(text),
                            Outbound::Close(code, reason) => close(code, reason),
                        }
                    }
                    None => break,
                },
                // Everything the reader queued has been written (the queue is polled first).
                _ = &mut reader_gone => break,
                _ = pings.tick(), if !ping_every.is_zero() => {
                    if session.unanswered_pings.fetch_add(1, Ordering::AcqRel) >= MAX_UNANSWERED_PINGS {
                        tracing::info!(session = session.id, "peer left {MAX_UNANSWERED_PINGS} pings unanswered; closing");
                        close(code::POLICY_VIOLATION, reason::PING_TIMEOUT)
                    } else {
                        Message::Ping(Default::default())
                    }
                }
            },
        };
        let closing = matches!(message, Message::Close(_));
        let limit = if closing {
            CLOSE_TIMEOUT
        } else {
            WRITE_TIMEOUT
        };
        // Whatever else is already queued goes out in the same write.
        let write = async {
            sink.feed(message).await?;
            if !closing {
                for _ in 1..WRITE_BATCH {
                    let Ok(message) = outbound.try_recv() else {
                        break;
                    };
                    in_write += session.counted(&message);
                    match message {
                        Outbound::Text(text) => sink.feed(Message::Text(text)).await?,
                        Outbound::Close(code, reason) => {
                            pending_close = Some(close(code, reason));
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
            _ = &mut evicted, if !closing => None,
        };
        session.written(std::mem::take(&mut in_write));
        let Some(written) = written else {
            let slow = close(code::POLICY_VIOLATION, reason::SLOW_CONSUMER);
            let send = async {
                sink.feed(slow).await?;
                sink.flush().await
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, send).await;
            break;
        };
        match written {
            Ok(Ok(())) if !closing => {}
            Ok(Ok(())) => break,
            Ok(Err(err)) => {
                tracing::debug!(%err, "write failed");
                break;
            }
            Err(_) => {
                tracing::info!(
                    session = session.id,
                    "client stopped reading for {limit:?}; dropping session"
                );
                break;
            }
        }
    }
    // Nothing is written any more: whoever waits for room in the queue gives up now.
    session.close_queue();
    writer_done.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}
