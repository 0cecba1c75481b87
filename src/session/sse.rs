//! The Server-Sent Events transport's writer: drains a session's outbound queue into an
//! HTTP response body, one SSE event per notification, with a heartbeat comment while
//! idle. The stream ends when the session is closed or evicted (a client that cannot keep
//! up resumes with `Last-Event-ID`), when its token expires, or when the hub stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::queue;
use futures::Stream;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_util::sync::CancellationToken;

use super::outbox::{Held, Outbound};
use super::state::SessionHandle;
use crate::protocol::sse;

/// What an SSE stream is told by the hub.
pub struct SseSettings {
    /// How often a heartbeat comment goes out on an idle stream.
    pub heartbeat: Duration,
    /// Cancelled when the hub stops: the stream ends (its client reconnects elsewhere).
    pub stop: CancellationToken,
    /// When the session's token expires (`None`: never).
    pub deadline: Option<tokio::time::Instant>,
}

struct Writer {
    session: Arc<SessionHandle>,
    outbound: queue::Receiver<Outbound>,
    settings: SseSettings,
    heartbeat: tokio::time::Interval,
    opened: bool,
}

/// The body of a session's `GET /events` response.
pub fn event_stream(
    session: Arc<SessionHandle>,
    outbound: queue::Receiver<Outbound>,
    settings: SseSettings,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    let writer = Writer {
        session,
        outbound,
        settings,
        heartbeat,
        opened: false,
    };
    futures::stream::unfold(writer, |mut writer| async move {
        let chunk = writer.next_chunk().await?;
        Some((Ok(chunk), writer))
    })
}

impl Writer {
    /// The next bytes of the body; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.opened {
            self.opened = true;
            return Some(Bytes::from(sse::opening()));
        }
        loop {
            let deadline = async {
                match self.settings.deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                biased;
                _ = self.settings.stop.cancelled() => None,
                _ = self.session.outbox.evicted.notified() => None,
                () = deadline => None,
                message = self.outbound.recv() => message,
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(sse::HEARTBEAT.as_bytes())),
            };
            let Some(message) = message else {
                self.session.outbox.close_queue();
                return None;
            };
            self.session.outbox.written(Held::of(&message));
            match message {
                Outbound::Pushed(text) | Outbound::Reply(text) => {
                    if let Some(event) = sse::event(&text) {
                        self.heartbeat.reset();
                        return Some(Bytes::from(event));
                    }
                }
                Outbound::Close(..) => {
                    self.session.outbox.close_queue();
                    return None;
                }
            }
        }
    }
}
