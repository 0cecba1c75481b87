//! The task that drives a client's connection: it owns the socket, serves the calls,
//! passes notifications on once each, refreshes the token, and reconnects with backoff.

use std::collections::HashMap;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::backoff;
use super::token::HeldToken;
use super::{Call, ClientConfig, ClientError, Link, READ_BUFFER_BYTES, Reply};
use crate::protocol::peer::{self, Incoming, PeerSocket, RpcError};
use crate::protocol::{
    DecisionEvent, DecisionExpired, EventId, GapReason, Notification, RefreshParams, Refreshed,
    RegisterParams, Registered, State, StateParams, method,
};

/// Owns the socket; runs in its own task.
pub(super) struct Driver {
    config: ClientConfig,
    /// The newest decision event (made or expired) passed to the caller.
    last_event: Option<EventId>,
    /// Where the hub's delivery stood when this client first connected without a cursor:
    /// a reconnection before any event has been passed on resumes from here, so the
    /// decisions made while it was away still reach it.
    joined_at: Option<EventId>,
    /// The token the current connection was opened or refreshed with.
    token: Option<HeldToken>,
    events: mpsc::Sender<Notification>,
    /// What [`Client::link`](super::Client::link) reports.
    link: watch::Sender<Link>,
}

impl Driver {
    /// Makes the first connection (registered, if an instance is configured) and spawns
    /// the task that drives it from then on.
    pub(super) async fn start(
        config: ClientConfig,
        events: mpsc::Sender<Notification>,
        link: watch::Sender<Link>,
        calls: mpsc::Receiver<Call>,
    ) -> Result<(), ClientError> {
        let mut driver = Driver {
            last_event: config.since,
            joined_at: None,
            token: None,
            config,
            events,
            link,
        };
        let (socket, early) = driver.open().await?;
        driver.link.send_modify(|link| link.connections = 1);
        tokio::spawn(driver.run(socket, early, calls));
        Ok(())
    }

    /// Connects, resuming after the last event, and registers the instance. Returns the
    /// socket and the notifications that arrived before the registration's reply (a
    /// resumed session's replay), for the driver's task to pass on: the caller may not
    /// hold the receiving end yet, and a long replay must not wait for it here.
    async fn open(&mut self) -> Result<(PeerSocket, Vec<Notification>), ClientError> {
        let mut url = self.config.url.clone();
        if let Some(id) = self.last_event.or(self.joined_at) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("lastEventId={id}"));
        }
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Url(e.to_string()))?;
        if let Some(source) = &self.config.token {
            let token = HeldToken::new(source.get().await.map_err(ClientError::Token)?);
            let value = format!("Bearer {}", token.value)
                .parse()
                .map_err(|_| ClientError::Token("it is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
            self.token = Some(token);
        }
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .map_err(connect_error)?;
        let mut early = Vec::new();
        if let Some(instance) = &self.config.instance {
            let params = RegisterParams {
                instance_id: instance,
                roles: &self.config.roles,
                metadata: None,
            };
            // A resumed session replays what it missed before it reads this call, so the
            // replayed events arrive first.
            let _: Registered =
                peer::call(&mut socket, 0, method::REGISTER, &params, |n| early.push(n)).await?;
        }
        if self.last_event.is_none() && self.joined_at.is_none() {
            // Every event after the session opened reaches it live, and the hub's position
            // is at or after the session's start, so nothing between is skipped. (Not the
            // cursor itself: an event passed on from `early` must not look seen already.)
            let params = StateParams {
                limit: Some(1),
                ..StateParams::default()
            };
            let state: Result<State, _> =
                peer::call(&mut socket, 1, method::GET_STATE, &params, |n| {
                    early.push(n)
                })
                .await;
            if let Ok(state) = state {
                self.joined_at = Some(state.hub.last_event_id.unwrap_or(EventId::ZERO));
            }
        }
        Ok((socket, early))
    }

    /// Passes a notification to the caller; a decision made or expired only once per event.
    /// Says whether to stay on the session it came from.
    async fn pass_on(&mut self, notification: Notification) -> Session {
        let mut next = Session::Stay;
        match &notification {
            Notification::DecisionMade(DecisionEvent { event_id, .. })
            | Notification::DecisionExpired(DecisionExpired { event_id, .. }) => {
                if self.last_event.is_some_and(|last| *event_id <= last) {
                    return next;
                }
                self.last_event = Some(*event_id);
            }
            // The hub could not place the cursor (its Redis never had that event), or its
            // event log went back after a failover: the events that follow continue from
            // the one it names, even where their ids are below ones already passed on.
            Notification::EventsIncomplete(notice)
                if matches!(
                    notice.reason,
                    GapReason::Ahead | GapReason::Malformed | GapReason::Rewound
                ) =>
            {
                self.last_event = Some(notice.since);
            }
            // The hub could not read the events after the cursor: they are still owed, and
            // a live event on this session would move the cursor past them.
            Notification::EventsIncomplete(notice) if notice.reason == GapReason::Unreadable => {
                next = Session::Leave;
            }
            _ => {}
        }
        // Backpressure: while the caller does not read, the socket is not read either.
        let _ = self.events.send(notification).await;
        next
    }

    async fn run(
        mut self,
        mut socket: PeerSocket,
        mut early: Vec<Notification>,
        mut calls: mpsc::Receiver<Call>,
    ) {
        let mut backoff = backoff::Backoff::new();
        let mut opened_at = Instant::now();
        loop {
            let mut next = Session::Stay;
            for notification in std::mem::take(&mut early) {
                // What followed a notice to leave came on the session left behind.
                next = self.pass_on(notification).await;
                if next == Session::Leave {
                    break;
                }
            }
            if next == Session::Stay && self.serve(&mut socket, &mut calls).await {
                let _ = socket.close(None).await;
                return;
            }
            // The connection is gone: release its socket now, not once a new one is made.
            // Held, it kept its local port for the whole backoff, and with 10,000 clients
            // of one process reconnecting, the kernel's search for a free port took 40%
            // of that process's CPU (`bench storm`).
            drop(socket);
            backoff.dropped_after(opened_at.elapsed());
            // Reconnect until it works or every handle to the client is gone.
            loop {
                tokio::time::sleep(backoff.next_pause()).await;
                if calls.is_closed() {
                    return;
                }
                match self.open().await {
                    Ok((fresh, replayed)) => {
                        (socket, early) = (fresh, replayed);
                        opened_at = Instant::now();
                        self.link.send_modify(|link| link.connections += 1);
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(%err, "reconnect failed");
                        self.link.send_modify(|link| {
                            link.failed_attempts += 1;
                            match &err {
                                ClientError::Unreachable(_) => link.unreachable_attempts += 1,
                                ClientError::Refused(_) => link.refused_attempts += 1,
                                _ => {}
                            }
                        });
                    }
                }
            }
        }
    }

    /// Serves calls on one connection. Returns true when the client was closed, false
    /// when the connection dropped or is to be left.
    async fn serve(&mut self, socket: &mut PeerSocket, calls: &mut mpsc::Receiver<Call>) -> bool {
        let mut pending: HashMap<u64, Reply> = HashMap::new();
        let mut next_id = 1u64;
        // A refresh on its way: its request id and the token it sent.
        let mut refreshing: Option<(u64, HeldToken)> = None;
        let dropped = loop {
            let refresh_at = match (&self.token, &self.config.token, &refreshing) {
                (Some(held), Some(source), None) if source.can_change() => held.refresh_at,
                _ => None,
            };
            tokio::select! {
                () = sleep_until(refresh_at) => {
                    let id = next_id;
                    next_id += 1;
                    match self.start_refresh(socket, id).await {
                        Ok(Some(sent)) => refreshing = Some((id, sent)),
                        Ok(None) => {}
                        Err(()) => break true,
                    }
                }
                call = calls.recv() => {
                    let Some(call) = call else { break false };
                    let id = next_id;
                    next_id += 1;
                    let request = peer::request(id, call.method, &call.params);
                    if socket.send(Message::text(request)).await.is_err() {
                        let _ = call.reply.send(Err(ClientError::Disconnected));
                        break true;
                    }
                    pending.insert(id, call.reply);
                }
                frame = socket.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break true,
                        Some(Ok(_)) => continue,
                    };
                    match Incoming::parse(&text) {
                        Some(Incoming::Notification(notification)) => {
                            match self.pass_on(notification).await {
                                Session::Stay => {}
                                Session::Leave => break true,
                            }
                        }
                        Some(Incoming::Reply { id: Some(id), outcome })
                            if refreshing.as_ref().is_some_and(|(sent, _)| *sent == id) =>
                        {
                            let (_, sent) = refreshing.take().expect("checked above");
                            self.end_refresh(sent, outcome);
                        }
                        Some(Incoming::Reply { id: Some(id), outcome }) => {
                            if let Some(reply) = pending.remove(&id) {
                                let _ = reply.send(outcome.map_err(ClientError::Rpc));
                            }
                        }
                        _ => {}
                    }
                }
            }
        };
        for (_, reply) in pending {
            let _ = reply.send(Err(ClientError::Disconnected));
        }
        !dropped
    }

    /// Asks the token source for a newer token and, if it has one, sends it to the hub
    /// as request `id`. Returns the token sent (`None`: nothing newer yet, asked again
    /// later), or `Err` when the connection dropped.
    async fn start_refresh(
        &mut self,
        socket: &mut PeerSocket,
        id: u64,
    ) -> Result<Option<HeldToken>, ()> {
        let (Some(source), Some(held)) = (&self.config.token, self.token.as_mut()) else {
            return Ok(None);
        };
        let fresh = match source.get().await {
            Ok(value) => HeldToken::new(value),
            Err(err) => {
                tracing::warn!(%err, "could not get a newer token");
                held.retry_later();
                return Ok(None);
            }
        };
        if fresh.expires_at_ms <= held.expires_at_ms {
            held.retry_later();
            return Ok(None);
        }
        let params = RefreshParams {
            token: &fresh.value,
        };
        let request = peer::request(id, method::AUTH_REFRESH, &params);
        if socket.send(Message::text(request)).await.is_err() {
            return Err(());
        }
        Ok(Some(fresh))
    }

    /// Takes the hub's answer to a refresh: the session now runs on `sent`, or keeps its
    /// token and asks again later.
    fn end_refresh(&mut self, sent: HeldToken, outcome: Result<Value, RpcError>) {
        match outcome.map(serde_json::from_value::<Refreshed>) {
            Ok(Ok(_)) => {
                self.token = Some(sent);
                return;
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "the hub's answer to a token refresh did not parse")
            }
            Err(err) => tracing::warn!(%err, "the hub refused a newer token"),
        }
        if let Some(held) = self.token.as_mut() {
            held.retry_later();
        }
    }
}

/// Whether the driver stays on a session after a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Stay,
    /// Leave it and resume again from the same event: the hub could not read its event
    /// log to resume this session (`unreadable`).
    Leave,
}

/// What a connection attempt that did not become a WebSocket ran into.
fn connect_error(err: tokio_tungstenite::tungstenite::Error) -> ClientError {
    use std::io::ErrorKind;
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Url(e) => ClientError::Url(e.to_string()),
        Error::Http(response) => ClientError::Refused(response.status().as_u16()),
        Error::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::TimedOut
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ) =>
        {
            ClientError::Unreachable(e.to_string())
        }
        _ => ClientError::Disconnected,
    }
}

/// Completes at `at`; never, without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
