//! The peer side of the protocol: a WebSocket to a hub, requests written, and each reply
//! read back by its id while notifications that arrive meanwhile are passed on.

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Notification;

/// A WebSocket to a hub.
pub type PeerSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A JSON-RPC error object, as the hub sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("the hub answered with error {code}: {message}")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    /// `null` when the hub sent none.
    #[serde(default)]
    pub data: Option<Value>,
}

/// Why a call got no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The connection ended before the reply came; the call may or may not have taken
    /// effect (a repeated vote is answered truthfully).
    #[error("the connection to the hub dropped before the reply")]
    Closed,
    #[error("the hub's reply did not parse: {0}")]
    Malformed(String),
}

/// The text of one request.
pub fn request(id: u64, method: &str, params: &impl Serialize) -> String {
    #[derive(Serialize)]
    struct Request<'a, P> {
        jsonrpc: &'static str,
        id: u64,
        method: &'a str,
        params: &'a P,
    }
    serde_json::to_string(&Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
    .expect("request params serialize to JSON")
}

/// One message from the hub.
#[derive(Debug)]
pub enum Incoming {
    /// The reply to the request with this id (`None` when the hub could not read the id).
    Reply {
        id: Option<u64>,
        outcome: Result<Value, RpcError>,
    },
    Notification(Notification),
}

impl Incoming {
    /// Reads one text frame; `None` when it is not a JSON-RPC message.
    pub fn parse(text: &str) -> Option<Incoming> {
        #[derive(Deserialize)]
        struct Message {
            #[serde(default)]
            id: Option<Value>,
            method: Option<String>,
            #[serde(default)]
            params: Value,
            result: Option<Value>,
            error: Option<RpcError>,
        }
        let message: Message = serde_json::from_str(text).ok()?;
        if let (Some(method), None) = (message.method, &message.id) {
            return Some(Incoming::Notification(Notification::parse(
                method,
                message.params,
            )));
        }
        let outcome = match (message.error, message.result) {
            (Some(error), _) => Err(error),
            (None, result) => Ok(result.unwrap_or(Value::Null)),
        };
        Some(Incoming::Reply {
            id: message.id.and_then(|id| id.as_u64()),
            outcome,
        })
    }
}

/// Turns a reply's outcome into the typed result.
pub fn typed<R: DeserializeOwned>(outcome: Result<Value, RpcError>) -> Result<R, CallError> {
    serde_json::from_value(outcome?).map_err(|e| CallError::Malformed(e.to_string()))
}

/// Sends one request and reads until the reply with its id. Notifications that arrive
/// first are handed to `notified`, in order; other replies are skipped.
pub async fn call<R: DeserializeOwned>(
    socket: &mut PeerSocket,
    id: u64,
    method: &str,
    params: &impl Serialize,
    mut notified: impl FnMut(Notification),
) -> Result<R, CallError> {
    socket
        .send(Message::text(request(id, method, params)))
        .await
        .map_err(|_| CallError::Closed)?;
    while let Some(frame) = socket.next().await {
        let text = match frame {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match Incoming::parse(&text) {
            Some(Incoming::Notification(notification)) => notified(notification),
            Some(Incoming::Reply {
                id: Some(replied),
                outcome,
            }) if replied == id => return typed(outcome),
            _ => {}
        }
    }
    Err(CallError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_notifications_are_told_apart() {
        let reply = r#"{"jsonrpc":"2.0","result":{"alive":true},"id":7}"#;
        let Some(Incoming::Reply { id, outcome }) = Incoming::parse(reply) else {
            panic!()
        };
        assert_eq!(id, Some(7));
        assert_eq!(
            typed::<super::super::Alive>(outcome).unwrap(),
            super::super::Alive { alive: true }
        );
        let error = r#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"m","data":{"field":"x"}},"id":8}"#;
        let Some(Incoming::Reply { outcome, .. }) = Incoming::parse(error) else {
            panic!()
        };
        assert_eq!(outcome.unwrap_err().code, -32602);
        let event = r#"{"jsonrpc":"2.0","method":"system.events.incomplete","params":{"since":"5-0","reason":"trimmed","message":"m"}}"#;
        assert!(matches!(
            Incoming::parse(event),
            Some(Incoming::Notification(Notification::EventsIncomplete(_)))
        ));
        assert_eq!(
            request(1, "system.get_state", &super::super::NoParams {}),
            r#"{"jsonrpc":"2.0","id":1,"method":"system.get_state","params":{}}"#
        );
    }
}
