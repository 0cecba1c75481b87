//! One WebSocket session: reads JSON-RPC frames in order, writes replies and pushed
//! events from a bounded queue, keeps the peer alive with pings, and closes with a code
//! that says why.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Grant;
use crate::decision::EventId;
use crate::events;
use crate::hub::{Hub, Outbound, SessionHandle, SessionSlot};
use crate::methods::{self, Caller};

/// Longest one write to a client may take before the session is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the hub tries to deliver a close frame before dropping the connection.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pings a peer may leave unanswered before its session is closed.
pub const MAX_UNANSWERED_PINGS: u32 = 2;
/// Most queued messages written with one flush.
pub const WRITE_BATCH: usize = 64;
/// Close code for a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Everything a new session starts with, decided at the upgrade.
pub struct Opening {
    pub slot: SessionSlot,
    pub grant: Grant,
    /// Replay the decision events after this id before going live.
    pub resume_after: Option<EventId>,
}

/// Serves one upgraded socket until the client leaves, the hub stops, or the session is
/// closed for cause. Calls on a session run one at a time, in the order they arrive.
pub async fn serve(hub: Arc<Hub>, socket: WebSocket, opening: Opening) {
    let Opening {
        slot,
        grant,
        resume_after,
    } = opening;
    let (session, outbound) = hub.open_session(slot, grant, resume_after.is_some());
    // A debug span costs nothing per session unless debug logging is on; the few
    // info-level lines below name their session themselves.
    let span = tracing::debug_span!("session", id = session.id);
    async {
        tracing::debug!("opened");
        let (sink, stream) = socket.split();
        let reader_done = CancellationToken::new();
        let writer_done = CancellationToken::new();
        tokio::join!(
            async {
                if let Some(since) = resume_after
                    && let Err(err) = Box::pin(events::replay(&hub, &session, since)).await
                {
                    tracing::warn!(session = session.id, %err, "could not replay missed decision events");
                }
                read_calls(&hub, &session, stream, &writer_done).await;
                reader_done.cancel();
            },
            write_outbound(&hub, &session, sink, outbound, &reader_done, &writer_done),
        );
        // Boxed like every Redis call here: the session's own future stays small while idle.
        Box::pin(hub.close_session(&session)).await;
        tracing::debug!("closed");
    }
    .instrument(span)
    .await
}

async fn read_calls(
    hub: &Hub,
    session: &SessionHandle,
    mut stream: futures::stream::SplitStream<WebSocket>,
    writer_done: &CancellationToken,
) {
    // Created once, not on every frame: a busy session is polled often.
    let shutdown = hub.shutdown.cancelled();
    let writer_gone = writer_done.cancelled();
    tokio::pin!(shutdown, writer_gone);
    loop {
        let frame = tokio::select! {
            _ = &mut shutdown => {
                session.send(Outbound::Close(close_code::AWAY, "hub shutting down")).await;
                break;
            }
            _ = &mut writer_gone => break,
            frame = stream.next() => frame,
        };
        // Any frame shows the peer is alive.
        session.unanswered_pings.store(0, Ordering::Release);
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                let reason = "binary frames are not supported; send JSON-RPC as text";
                session
                    .send(Outbound::Close(close_code::UNSUPPORTED, reason))
                    .await;
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(err)) => {
                if err.to_string().contains("Message too long") {
                    tracing::info!(session = session.id, %err, "message over the size limit");
                    session
                        .send(Outbound::Close(CLOSE_TOO_BIG, "message too big"))
                        .await;
                } else {
                    tracing::debug!(%err, "read failed");
                }
                break;
            }
        };
        // Boxed: a call's future is large and lives only while the call runs, so an idle
        // session does not carry its space.
        let call = Box::pin(methods::handle_frame(
            hub,
            Caller::Session(session),
            text.as_str(),
        ));
        if let Some(reply) = call.await
            && !session.send(Outbound::Text(reply.into())).await
        {
            break;
        }
        if session.flooding.load(Ordering::Acquire) {
            tracing::info!(session = session.id, "session keeps flooding; closing it");
            session
                .send(Outbound::Close(
                    close_code::POLICY,
                    "flooding: too many calls",
                ))
                .await;
            break;
        }
    }
}

async fn write_outbound(
    hub: &Hub,
    session: &SessionHandle,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut outbound: mpsc::Receiver<Outbound>,
    reader_done: &CancellationToken,
    writer_done: &CancellationToken,
) {
    let close = |code: u16, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
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
    loop {
        let message = match pending_close.take() {
            Some(message) => message,
            None => tokio::select! {
                biased;
                _ = &mut evicted => close(close_code::POLICY, "slow consumer"),
                next = outbound.recv() => match next {
                    Some(Outbound::Text(text)) => Message::Text(text),
                    Some(Outbound::Close(code, reason)) => close(code, reason),
                    None => break,
                },
                // Everything the reader queued has been written (the queue is polled first).
                _ = &mut reader_gone => break,
                _ = pings.tick(), if !ping_every.is_zero() => {
                    if session.unanswered_pings.fetch_add(1, Ordering::AcqRel) >= MAX_UNANSWERED_PINGS {
                        tracing::info!(session = session.id, "peer left {MAX_UNANSWERED_PINGS} pings unanswered; closing");
                        close(close_code::POLICY, "ping timeout")
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
                    match outbound.try_recv() {
                        Ok(Outbound::Text(text)) => sink.feed(Message::Text(text)).await?,
                        Ok(Outbound::Close(code, reason)) => {
                            pending_close = Some(close(code, reason));
                            break;
                        }
                        Err(_) => break,
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
        let Some(written) = written else {
            let slow = close(close_code::POLICY, "slow consumer");
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(slow)).await;
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
    writer_done.cancel();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}
