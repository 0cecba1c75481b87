//! Serving one WebSocket connection: opens its session on the hub, reads its calls in
//! order and hands each to the methods, and closes it when the client leaves, the hub
//! stops, its token expires or it floods.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::SplitStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Instrument;

use crate::auth::{self, Grant};
use crate::hub::Hub;
use crate::methods::{self, Caller};
use crate::protocol::close;
use crate::session::signal::Signal;
use crate::session::wire::{SessionIo, Wire, WireSocket};
use crate::session::writer::{self, WriterSettings};
use crate::session::{
    self, Outbound, Resume, SessionHandle, SessionSlot, SessionSocket, footprint, queue,
};
use crate::upgrade::Upgraded;

/// Everything a new session starts with, decided at the upgrade.
pub struct Opening {
    pub slot: SessionSlot,
    pub grant: Grant,
    /// When the session's token expires, in ms since the Unix epoch (`None`: never).
    pub expires_at_ms: Option<u64>,
    /// Where to resume in the decision events before going live (`?lastEventId=`).
    pub resume: Option<Resume>,
}

/// Opens the session of one upgraded connection and starts its task, which serves it
/// until the client leaves, the hub stops, or the session is closed for cause. Calls on a
/// session run one at a time, in the order they arrive.
///
/// The session runs in a task of its own, spawned here: the task that upgraded the
/// connection ends, and with it everything it held for the upgrade, so an idle session's
/// task holds only what serving it needs.
pub async fn serve(hub: Arc<Hub>, upgraded: Upgraded, config: WebSocketConfig, opening: Opening) {
    let Opening {
        slot,
        grant,
        expires_at_ms,
        resume,
    } = opening;
    let wire = Wire::new(upgraded.tcp);
    let (session, outbound) =
        hub.open_session(slot, grant, expires_at_ms, resume.is_some(), Some(wire));
    let socket = WebSocketStream::from_partially_read(
        SessionIo(session.clone()),
        upgraded.read_buf,
        Role::Server,
        Some(config),
    )
    .await;
    let (sink, stream) = WireSocket::new(socket).split();
    // A debug span costs nothing per session unless debug logging is on; the few
    // info-level lines below name their session themselves.
    let span = tracing::debug_span!("session", id = session.id);
    let task = run(hub.clone(), session, sink, stream, outbound, resume).instrument(span);
    footprint::report(
        &hub.metrics,
        std::mem::size_of_val(&task),
        config.read_buffer_size,
        !hub.config.ping_interval.is_zero(),
    );
    // Tracked like the upgrade that spawns it: the hub waits for it when it stops.
    hub.tracker.spawn(task);
}

/// The session's task: its reader and its writer, joined; then the session's close.
///
/// An `async move` block rather than an `async fn`: the block keeps what it captures in
/// one place, where an `async fn` keeps its arguments twice.
#[allow(clippy::manual_async_fn)]
fn run(
    hub: Arc<Hub>,
    session: Arc<SessionHandle>,
    mut sink: writer::Sink,
    mut stream: SplitStream<SessionSocket>,
    mut outbound: queue::Receiver<Outbound>,
    resume: Option<Resume>,
) -> impl Future<Output = ()> + Send {
    async move {
        tracing::debug!("opened");
        let writer_settings = WriterSettings {
            ping_interval: hub.config.ping_interval,
        };
        let reader_done = Signal::default();
        let writer_done = Signal::default();
        // Both halves borrow what they use: the task holds each part once.
        tokio::join!(
            async {
                if let Some(from) = resume {
                    Box::pin(session::resume(&hub.store, &session, from)).await;
                }
                read_calls(&hub, &session, &mut stream, &writer_done).await;
                reader_done.raise();
            },
            writer::write_outbound(
                writer_settings,
                &session,
                &mut sink,
                &mut outbound,
                &reader_done,
                &writer_done
            ),
        );
        // Others may hold the session (and its wire) a little longer; the peer need not
        // wait.
        if let Some(wire) = session.outbox.wire() {
            wire.shut_down();
        }
        tracing::debug!("closing");
        // Boxed like every Redis call here: the session's own future stays small while idle.
        Box::pin(hub.close_session(&session)).await;
        tracing::debug!("closed");
    }
}

/// Reads the session's calls and runs them, one at a time, until the client leaves, the
/// writer is gone, the hub stops, the token expires or the session floods. An `async move`
/// block, like [`run`]'s.
#[allow(clippy::manual_async_fn)]
fn read_calls<'a>(
    hub: &'a Hub,
    session: &'a SessionHandle,
    stream: &'a mut SplitStream<SessionSocket>,
    writer_done: &'a Signal,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        // Created once, not on every frame: a busy session is polled often.
        let shutdown = hub.shutdown.cancelled();
        let writer_gone = writer_done.raised();
        tokio::pin!(shutdown, writer_gone);
        // Only a session whose token expires carries a timer.
        let mut expiry = Expiry::new(session.expires_at_ms());
        loop {
            // The next call runs only once the replies have room: its reply is then queued at
            // once, whatever its size, and held nowhere else.
            let next_frame = async {
                session.outbox.room_for_replies().await;
                stream.next().await
            };
            let frame = tokio::select! {
                // The hub's own reasons to close come before the next frame.
                biased;
                _ = &mut shutdown => {
                    send_close(session, close::code::GOING_AWAY, close::SHUTTING_DOWN).await;
                    break;
                }
                _ = &mut writer_gone => break,
                () = expiry.reached() => {
                    tracing::info!(session = session.id, "token expired; closing the session");
                    send_close(session, close::code::POLICY_VIOLATION, close::TOKEN_EXPIRED).await;
                    break;
                }
                frame = next_frame => frame,
            };
            // Any frame shows the peer is alive.
            session.peer_heard();
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    send_close(session, close::code::UNSUPPORTED_DATA, close::BINARY).await;
                    break;
                }
                // Pings and pongs are frames like any other: they count against the call budget
                // (the WebSocket layer answers pings).
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    session.admit_call();
                    if close_if_flooding(session).await {
                        break;
                    }
                    continue;
                }
                // A read returns whole messages, never raw frames.
                Some(Ok(Message::Close(_) | Message::Frame(_))) | None => break,
                Some(Err(err)) => {
                    if is_too_long(err) {
                        tracing::info!(session = session.id, "message over the size limit");
                        send_close(session, close::code::MESSAGE_TOO_BIG, close::TOO_BIG).await;
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
                && !session
                    .outbox
                    .queue_reply(Outbound::Reply(reply.into()))
                    .await
            {
                break;
            }
            if close_if_flooding(session).await {
                break;
            }
            // A call may have refreshed the token.
            expiry.follow(session.expires_at_ms());
        }
    }
}

/// The timer that ends a session when its token expires.
struct Expiry {
    at_ms: Option<u64>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Expiry {
    fn new(at_ms: Option<u64>) -> Self {
        Self {
            at_ms,
            timer: at_ms.map(|ms| Box::pin(tokio::time::sleep_until(auth::session_deadline(ms)))),
        }
    }

    /// Re-arms the timer if the token's expiry moved.
    fn follow(&mut self, at_ms: Option<u64>) {
        if at_ms != self.at_ms {
            *self = Self::new(at_ms);
        }
    }

    /// Completes once the token has expired; never, for a session without one.
    async fn reached(&mut self) {
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().await,
            None => std::future::pending().await,
        }
    }
}

/// Closes a session that made far more calls than its budget (1008); returns whether it did.
async fn close_if_flooding(session: &SessionHandle) -> bool {
    if !session.is_flooding() {
        return false;
    }
    tracing::info!(session = session.id, "session keeps flooding; closing it");
    send_close(session, close::code::POLICY_VIOLATION, close::FLOODING).await;
    true
}

/// Queues a close for the session's writer. Boxed: a session closes once, and the reader
/// does not carry the space of queueing while it waits for frames.
async fn send_close(session: &SessionHandle, code: u16, reason: &'static str) {
    Box::pin(session.outbox.send(Outbound::Close(code, reason))).await;
}

/// Whether a read failed because the message is over the size limit (closed with 1009).
fn is_too_long(err: WsError) -> bool {
    let too_long = matches!(err, WsError::Capacity(CapacityError::MessageTooLong { .. }));
    if !too_long {
        tracing::debug!(%err, "read failed");
    }
    too_long
}
