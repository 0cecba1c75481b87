//! A hub's reply as an MCP tool result: its result as structured content (and the same
//! JSON as text), or its JSON-RPC error as a tool error.

use rmcp::model::CallToolResult;
use serde_json::{Value, json};

use crate::client::ClientError;
use crate::protocol::peer::RpcError;

/// The hub's answer as a tool result: its result as structured content, or its error as a
/// tool error.
pub(super) fn answer<T: serde::Serialize>(reply: Result<T, ClientError>) -> CallToolResult {
    match reply.map(|result| serde_json::to_value(result)) {
        Ok(Ok(result)) => CallToolResult::structured(result),
        Ok(Err(err)) => failure(&ClientError::Malformed(err.to_string())),
        Err(err) => failure(&err),
    }
}

/// A tool error: the hub's JSON-RPC error (`code`, `message`, `data`), or what kept the
/// call from reaching the hub (`message` only).
pub(super) fn failure(err: &ClientError) -> CallToolResult {
    CallToolResult::structured_error(match err {
        ClientError::Rpc(err) => hub_error_json(err),
        other => json!({"message": other.to_string()}),
    })
}

/// A hub's JSON-RPC error as a JSON object: `code`, `message`, and `data` when it sent any.
pub(super) fn hub_error_json(err: &RpcError) -> Value {
    let mut error = json!({"code": err.code, "message": err.message});
    if let Some(data) = &err.data {
        error["data"] = data.clone();
    }
    error
}
