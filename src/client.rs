//! An agent's client: one WebSocket to a hub that survives drops. It reconnects with
//! backoff, registers its instance again, and resumes decision events (decisions made,
//! [`Notification::DecisionMade`], and decisions that expired without quorum,
//! [`Notification::DecisionExpired`], one sequence in the hub's event log) from the last
//! `eventId` it saw, so a caller sees each of them once and in order. Everything else
//! the hub pushes (`system.events.incomplete`, subscribed dashboard events) is passed on
//! too, never dropped. After a notice that the hub's event log was `rewound` (a Redis
//! failover lost events), the decisions that follow may have ids below ones already seen:
//! the client passes them on. After a notice that the hub could not read its event log to
//! resume (`unreadable`), the client leaves that session and resumes again from the same
//! event. Its reconnections are jittered ([`RECONNECT_FIRST_WINDOW`]), and
//! [`Client::link`] tells a caller when one happened.

mod backoff;
mod driver;
mod token;

use driver::Driver;
pub use token::{REFRESH_RETRY, TokenSource};

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::policy::Policy;
use crate::protocol::peer::{CallError, RpcError};
use crate::protocol::policy::{PolicyChanged, PolicyList, PolicyPatternParams, PolicySetParams};
use crate::protocol::webhook::{
    WebhookAddParams, WebhookChanged, WebhookDeliveries, WebhookDeliveriesParams, WebhookIdParams,
    WebhookList, WebhookSecret,
};
use crate::protocol::{
    DecisionStatus, EventId, NoParams, Notification, RegisterParams, Registered, State,
    StateParams, StatusParams, SubscribeParams, Subscribed, VoteParams, VoteReply, method,
};

/// After a drop, the first reconnection attempt comes at a uniform random point within
/// this window ("full jitter"), so that the sessions of a hub that went away come back
/// spread over it rather than all at once.
pub const RECONNECT_FIRST_WINDOW: Duration = Duration::from_millis(1000);
/// The window doubles after each failed attempt, up to this; each pause is again a uniform
/// random point within it.
pub const RECONNECT_MAX_WINDOW: Duration = Duration::from_secs(5);
/// A connection that stayed open at least this long starts the window over when it
/// drops; one that ended sooner (the hub closed it at once, or could not read its event
/// log to resume it) goes on doubling it, so a hub that keeps turning the client away is
/// not asked again at the first window's pace.
pub const LASTING_CONNECTION: Duration = RECONNECT_MAX_WINDOW;
/// Read buffer of the client's WebSocket; it grows as a large message needs. Tungstenite's
/// default, 128 KiB, is zero-filled at the first read: a quarter of the CPU of 10,000
/// clients reconnecting in one process went to clearing those pages (`bench storm`).
pub const READ_BUFFER_BYTES: usize = 4096;
/// Notifications the client buffers for a caller that is not reading them.
pub const EVENT_BUFFER: usize = 1024;
/// Calls waiting to be sent.
const CALL_QUEUE: usize = 256;
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid hub URL: {0}")]
    Url(String),
    /// The hub answered with a JSON-RPC error.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The connection dropped before the reply came; the call may or may not have taken
    /// effect (a repeated vote is answered truthfully).
    #[error("the connection to the hub dropped before the reply")]
    Disconnected,
    /// No hub listens at the address (connection refused or timed out): it is down or
    /// restarting.
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The hub answered the WebSocket upgrade with this HTTP status instead (e.g. 503 at
    /// its session cap, 401 for a bad token).
    #[error("the hub refused the connection with HTTP {0}")]
    Refused(u16),
    #[error("the hub's reply did not parse: {0}")]
    Malformed(String),
    #[error("the client is closed")]
    Closed,
    #[error("no token: {0}")]
    Token(String),
}

impl From<CallError> for ClientError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Rpc(err) => ClientError::Rpc(err),
            CallError::Closed => ClientError::Disconnected,
            CallError::Malformed(why) => ClientError::Malformed(why),
        }
    }
}

/// How to reach the hub and who to be there.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The hub's WebSocket endpoint, e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// Register as this instance on every (re)connection.
    pub instance: Option<String>,
    pub roles: Vec<String>,
    /// Where the token sent as `Authorization: Bearer` comes from, when the hub needs one.
    pub token: Option<TokenSource>,
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

/// A reply on its way back to the caller.
type Reply = oneshot::Sender<Result<Value, ClientError>>;

struct Call {
    method: &'static str,
    params: Value,
    reply: Reply,
}

/// How the client's connection has fared so far, as [`Client::link`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Connections made, each counted once it is registered (when an instance is
    /// configured): 1 after [`Client::connect`], one more per reconnection. The events a
    /// reconnection replays follow on the notification stream.
    pub connections: u64,
    /// Reconnection attempts that failed: the hub was unreachable, refused the upgrade,
    /// dropped the connection, or refused the registration.
    pub failed_attempts: u64,
    /// Of those, the attempts that found no hub listening ([`ClientError::Unreachable`]).
    pub unreachable_attempts: u64,
    /// Of those, the attempts the hub answered with an HTTP refusal
    /// ([`ClientError::Refused`]).
    pub refused_attempts: u64,
}

/// A connected client. Cloning is cheap; every clone shares the one connection.
#[derive(Clone)]
pub struct Client {
    calls: mpsc::Sender<Call>,
    link: watch::Receiver<Link>,
}

impl Client {
    /// Connects (and registers, if an instance is configured) and returns the client with
    /// the stream of what the hub pushes: each decision made or expired once, in order, and
    /// every other notification as it came. Fails only if the first connection cannot be made; after
    /// that the client reconnects by itself.
    pub async fn connect(
        config: ClientConfig,
    ) -> Result<(Client, mpsc::Receiver<Notification>), ClientError> {
        let (calls_tx, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let (link_tx, link_rx) = watch::channel(Link::default());
        Driver::start(config, events_tx, link_tx, calls_rx).await?;
        Ok((
            Client {
                calls: calls_tx,
                link: link_rx,
            },
            events_rx,
        ))
    }

    /// Watches the connection: wait for [`watch::Receiver::changed`] to learn of each
    /// reconnection (e.g. to subscribe to dashboard events again, which a new session
    /// does not inherit) and of each failed attempt.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.link.clone()
    }

    /// Sends one request and waits for its result.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: &'static str,
        params: &impl Serialize,
    ) -> Result<R, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method,
            params,
            reply,
        };
        self.calls
            .send(call)
            .await
            .map_err(|_| ClientError::Closed)?;
        let result = answer.await.map_err(|_| ClientError::Closed)??;
        serde_json::from_value(result).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    pub async fn register(&self, instance: &str) -> Result<Registered, ClientError> {
        let params = RegisterParams {
            instance_id: instance,
            roles: &[],
            metadata: None,
        };
        self.call(method::REGISTER, &params).await
    }

    pub async fn vote(
        &self,
        instance: &str,
        decision: &str,
        value: &str,
        total_instances: Option<u64>,
    ) -> Result<VoteReply, ClientError> {
        self.vote_with(&VoteParams {
            instance_id: instance,
            decision,
            value,
            total_instances,
            close_after_ms: None,
        })
        .await
    }

    /// A vote with every parameter the method takes, e.g. a deadline (`close_after_ms`)
    /// for the decision it opens.
    pub async fn vote_with(&self, params: &VoteParams<'_>) -> Result<VoteReply, ClientError> {
        self.call(method::VOTE, params).await
    }

    pub async fn status(&self, decision: &str) -> Result<DecisionStatus, ClientError> {
        self.call(method::STATUS, &StatusParams { decision }).await
    }

    pub async fn state(&self) -> Result<State, ClientError> {
        self.call(method::GET_STATE, &StateParams::default()).await
    }

    pub async fn subscribe(&self, events: &[&str]) -> Result<Subscribed, ClientError> {
        let params = SubscribeParams {
            events,
            since: None,
        };
        self.call(method::SUBSCRIBE, &params).await
    }

    /// Adds a webhook endpoint (an admin's call); the result holds its secret, shown only
    /// here. `events` empty: both decision events.
    pub async fn add_webhook(
        &self,
        url: &str,
        events: &[String],
        description: Option<&str>,
    ) -> Result<WebhookSecret, ClientError> {
        let params = WebhookAddParams {
            url,
            events,
            description,
        };
        self.call(method::WEBHOOKS_ADD, &params).await
    }

    /// Every webhook endpoint, without secrets (an admin's call).
    pub async fn webhooks(&self) -> Result<WebhookList, ClientError> {
        self.call(method::WEBHOOKS_LIST, &NoParams {}).await
    }

    /// Removes a webhook endpoint (an admin's call).
    pub async fn remove_webhook(&self, id: &str) -> Result<WebhookChanged, ClientError> {
        self.call(method::WEBHOOKS_REMOVE, &WebhookIdParams { id })
            .await
    }

    /// Sets the decision policy of `pattern` (an admin's call).
    pub async fn set_policy(
        &self,
        pattern: &str,
        policy: &Policy,
    ) -> Result<PolicyChanged, ClientError> {
        self.call(method::POLICIES_SET, &PolicySetParams { pattern, policy })
            .await
    }

    /// The decision policies the hub applies (an admin's call).
    pub async fn policies(&self) -> Result<PolicyList, ClientError> {
        self.call(method::POLICIES_LIST, &NoParams {}).await
    }

    /// Removes the decision policy of `pattern` (an admin's call).
    pub async fn remove_policy(&self, pattern: &str) -> Result<PolicyChanged, ClientError> {
        self.call(method::POLICIES_REMOVE, &PolicyPatternParams { pattern })
            .await
    }

    /// A page of a webhook endpoint's attempt log, newest first (an admin's call).
    pub async fn webhook_deliveries(
        &self,
        params: &WebhookDeliveriesParams<'_>,
    ) -> Result<WebhookDeliveries, ClientError> {
        self.call(method::WEBHOOKS_DELIVERIES, params).await
    }
}
