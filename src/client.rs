//! An agent's client: one WebSocket to a hub that survives drops. It reconnects with
//! backoff, registers its instance again, and resumes decision events from the last
//! `eventId` it saw, so a caller sees every decision once and in order.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::decision::{DecisionEvent, EventId};

/// First pause before reconnecting.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Decision events the client buffers for a caller that is not reading them.
pub const EVENT_BUFFER: usize = 1024;
/// Calls waiting to be sent.
const CALL_QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid hub URL: {0}")]
    Url(String),
    #[error("the hub answered with error {code}: {message}")]
    Rpc {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The connection dropped before the reply came; the call may or may not have taken
    /// effect (a repeated vote is answered truthfully).
    #[error("the connection to the hub dropped before the reply")]
    Disconnected,
    #[error("the client is closed")]
    Closed,
}

/// How to reach the hub and who to be there.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The hub's WebSocket endpoint, e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// Register as this instance on every (re)connection.
    pub instance: Option<String>,
    pub roles: Vec<String>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Start from the events after this id (otherwise: live events from now on).
    pub since: Option<EventId>,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            instance: None,
            roles: Vec::new(),
            token: None,
            since: None,
        }
    }
}

struct Call {
    method: String,
    params: Value,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

/// A connected client. Cloning is cheap; every clone shares the one connection.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
}

impl Client {
    /// Connects (and registers, if an instance is configured) and returns the client with
    /// the stream of decision events. Fails only if the first connection cannot be made;
    /// after that the client reconnects by itself.
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::Receiver<DecisionEvent>), ClientError> {
        let (calls_tx, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let mut driver = Driver {
            config,
            last_event: None,
            events: events_tx,
        };
        driver.last_event = driver.config.since;
        let link = driver.open().await?;
        tokio::spawn(driver.run(link, calls_rx));
        Ok((Client { calls: calls_tx }, events_rx))
    }

    /// Sends one request and waits for its result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method: method.to_owned(),
            params,
            reply,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    pub async fn register(&self, instance: &str) -> Result<Value, ClientError> {
        self.call("system.register", json!({ "instanceId": instance }))
            .await
    }

    pub async fn vote(
        &self,
        instance: &str,
        decision: &str,
        value: &str,
        total: Option<u64>,
    ) -> Result<Value, ClientError> {
        let mut params = json!({ "instanceId": instance, "decision": decision, "value": value });
        if let Some(total) = total {
            params["totalInstances"] = total.into();
        }
        self.call("system.quorum.vote", params).await
    }

    pub async fn status(&self, decision: &str) -> Result<Value, ClientError> {
        self.call("system.quorum.status", json!({ "decision": decision }))
            .await
    }

    pub async fn state(&self) -> Result<Value, ClientError> {
        self.call("system.get_state", json!({})).await
    }

    pub async fn subscribe(&self, events: &[&str]) -> Result<Value, ClientError> {
        self.call("system.subscribe", json!({ "events": events }))
            .await
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Owns the socket; runs in its own task.
struct Driver {
    config: ClientConfig,
    /// The newest decision event passed to the caller.
    last_event: Option<EventId>,
    events: mpsc::Sender<DecisionEvent>,
}

impl Driver {
    /// Connects, resuming after the last event, and registers the instance.
    async fn open(&mut self) -> Result<Socket, ClientError> {
        let mut url = self.config.url.clone();
        if let Some(id) = self.last_event {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("lastEventId={id}"));
        }
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Url(e.to_string()))?;
        if let Some(token) = &self.config.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Url("bad token".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (mut socket, _) =
            tokio_tungstenite::connect_async(request)
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Url(e) => {
                        ClientError::Url(e.to_string())
                    }
                    _ => ClientError::Disconnected,
                })?;
        if let Some(instance) = self.config.instance.clone() {
            let params = json!({ "instanceId": instance, "roles": self.config.roles });
            self.request_now(&mut socket, "system.register", params)
                .await?;
        }
        Ok(socket)
    }

    /// Sends one request on a socket no one else uses yet and waits for its reply,
    /// passing on any decision events that arrive first.
    async fn request_now(
        &mut self,
        socket: &mut Socket,
        method: &str,
        params: Value,
    ) -> Result<Value, ClientError> {
        let request = json!({ "jsonrpc": "2.0", "id": 0, "method": method, "params": params });
        socket
            .send(Message::text(request.to_string()))
            .await
            .map_err(|_| ClientError::Disconnected)?;
        while let Some(frame) = socket.next().await {
            let Ok(Message::Text(text)) = frame else {
                continue;
            };
            let Ok(message) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if message.get("method").is_some() {
                self.pass_on(&message).await;
            } else if message["id"] == json!(0) {
                return reply_result(message);
            }
        }
        Err(ClientError::Disconnected)
    }

    /// Passes a decision notification to the caller, once per event.
    async fn pass_on(&mut self, message: &Value) {
        if message["method"] != crate::rpc::DECISION_MADE {
            return;
        }
        let Ok(event) = serde_json::from_value::<DecisionEvent>(message["params"].clone()) else {
            return;
        };
        let Ok(id) = event.event_id.parse::<EventId>() else {
            return;
        };
        if self.last_event.is_some_and(|last| id <= last) {
            return;
        }
        self.last_event = Some(id);
        // Backpressure: while the caller does not read, the socket is not read either.
        let _ = self.events.send(event).await;
    }

    async fn run(mut self, mut socket: Socket, mut calls: mpsc::Receiver<Call>) {
        let mut delay = RECONNECT_MIN_DELAY;
        loop {
            let closed = self.serve(&mut socket, &mut calls).await;
            if closed {
                let _ = socket.close(None).await;
                return;
            }
            // Reconnect until it works or every handle to the client is gone.
            loop {
                tokio::time::sleep(delay).await;
                if calls.is_closed() {
                    return;
                }
                match self.open().await {
                    Ok(fresh) => {
                        socket = fresh;
                        delay = RECONNECT_MIN_DELAY;
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(%err, "reconnect failed");
                        delay = (delay * 2).min(RECONNECT_MAX_DELAY);
                    }
                }
            }
        }
    }

    /// Serves calls on one connection. Returns true when the client was closed, false
    /// when the connection dropped.
    async fn serve(&mut self, socket: &mut Socket, calls: &mut mpsc::Receiver<Call>) -> bool {
        let mut pending: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>> = HashMap::new();
        let mut next_id = 1u64;
        let dropped = loop {
            tokio::select! {
                call = calls.recv() => {
                    let Some(call) = call else { break false };
                    let id = next_id;
                    next_id += 1;
                    let request = json!({ "jsonrpc": "2.0", "id": id, "method": call.method, "params": call.params });
                    if socket.send(Message::text(request.to_string())).await.is_err() {
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
                    let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                    if message.get("method").is_some() {
                        self.pass_on(&message).await;
                    } else if let Some(reply) = message["id"].as_u64().and_then(|id| pending.remove(&id)) {
                        let _ = reply.send(reply_result(message));
                    }
                }
            }
        };
        for (_, reply) in pending {
            let _ = reply.send(Err(ClientError::Disconnected));
        }
        !dropped
    }
}

fn reply_result(message: Value) -> Result<Value, ClientError> {
    if let Some(error) = message.get("error") {
        return Err(ClientError::Rpc {
            code: error["code"].as_i64().unwrap_or_default(),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
            data: error.get("data").cloned(),
        });
    }
    Ok(message["result"].clone())
}
