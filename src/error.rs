//! The hub's error type: its JSON-RPC code, the message a caller reads, and its `data`.

use std::borrow::Cow;
use std::time::Duration;

/// Everything a call can fail with. [`crate::protocol::frame::failure`] puts one on the wire.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The frame is not JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// The JSON is not a valid JSON-RPC 2.0 request.
    #[error("invalid request: {0}")]
    InvalidRequest(Cow<'static, str>),
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// A parameter is missing, of the wrong type, out of range, or unknown.
    #[error("{message}")]
    InvalidParams {
        field: Option<&'static str>,
        /// For unknown fields, the name the caller sent.
        unknown: Option<String>,
        message: String,
    },
    /// The caller may not act as this instance: not registered, wrong session, bound elsewhere.
    #[error("{0}")]
    Unauthorized(String),
    /// A decision's policy refuses the caller; `reason` names the rule (see
    /// docs/policies.md).
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// Redis could not be reached or did not answer.
    #[error("backend unavailable: {0}")]
    Backend(#[from] redis::RedisError),
    /// The call's backend work took longer than its bound; its outcome is unknown.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The write is in Redis, but fewer replicas than `--wait-replicas` confirmed it in
    /// time: it may or may not survive a failover.
    #[error("only {acknowledged} of {wanted} replicas confirmed the write in time")]
    Replication { acknowledged: u64, wanted: u32 },
    /// The circuit breaker is open: Redis is not called for a while.
    #[error("circuit open")]
    CircuitOpen { retry_after: Duration },
    /// The caller is over a rate limit.
    #[error("{message}")]
    RateLimited {
        retry_after_ms: u64,
        message: String,
    },
    /// A batch's replies reached their size bound before this call ran; it was not run.
    #[error(
        "this batch's replies reached {limit_bytes} bytes, so this call was not run: send it again, in a smaller batch"
    )]
    BatchReplyFull { limit_bytes: usize },
    /// A bug or an unexpected reply; details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParams {
            field: Some(field),
            unknown: None,
            message: message.into(),
        }
    }

    /// The JSON-RPC error code for this error.
    pub fn code(&self) -> i64 {
        match self {
            Error::Parse(_) => -32700,
            Error::InvalidRequest(_) => -32600,
            Error::MethodNotFound(_) => -32601,
            Error::InvalidParams { .. } => -32602,
            Error::Internal(_) => -32603,
            Error::Unauthorized(_) | Error::Refused { .. } => -32002,
            Error::NotFound(_) => -32004,
            Error::Backend(_) | Error::Timeout(_) | Error::Replication { .. } => -32005,
            Error::CircuitOpen { .. } => -32001,
            Error::RateLimited { .. } => -32000,
            Error::BatchReplyFull { .. } => -32003,
        }
    }

    /// The message the caller reads. Internal and Redis details stay in the log (see
    /// [`Error::log_detail`]); the rest says what to do next.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            Error::Backend(_) => {
                "backend unavailable: the hub could not reach Redis; retry the call \
                 (a repeated vote is answered already_voted if the first one counted)"
                    .to_owned()
            }
            Error::Timeout(after) => format!(
                "the backend did not finish within {after:?}, so the outcome is unknown; retrying \
                 is safe (a vote that did count is answered already_voted with its recordedValue)"
            ),
            Error::CircuitOpen { retry_after } => format!(
                "backend circuit open after repeated Redis failures; calls are refused without \
                 trying Redis for another {} ms",
                retry_after.as_millis()
            ),
            Error::Replication {
                acknowledged,
                wanted,
            } => format!(
                "the write was made, but only {acknowledged} of {wanted} replicas confirmed it \
                 in time, so it may or may not survive a Redis failover; retrying is safe (a vote \
                 that counted is answered already_voted with its recordedValue, a registration \
                 is simply made again)"
            ),
            other => other.to_string(),
        }
    }

    /// The error's `data` member, for the errors a caller can act on by field or reason.
    pub fn data(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        match self {
            Error::InvalidParams { field, unknown, .. } => unknown
                .as_deref()
                .or(*field)
                .map(|field| json!({ "field": field })),
            Error::Timeout(_) => Some(json!({ "reason": "timeout" })),
            Error::Refused { reason, .. } => Some(json!({ "reason": reason })),
            Error::Replication {
                acknowledged,
                wanted,
            } => Some(json!({
                "reason": "replication",
                "acknowledged": acknowledged,
                "wanted": wanted,
            })),
            Error::CircuitOpen { retry_after } => Some(
                json!({ "reason": "circuit_open", "retryAfterMs": retry_after.as_millis() as u64 }),
            ),
            Error::RateLimited { retry_after_ms, .. } => {
                Some(json!({ "retryAfterMs": retry_after_ms }))
            }
            Error::BatchReplyFull { limit_bytes } => {
                Some(json!({ "reason": "batch_reply_full", "limitBytes": limit_bytes }))
            }
            _ => None,
        }
    }

    /// Logs what [`Error::public_message`] leaves out.
    pub fn log_detail(&self) {
        match self {
            Error::Internal(detail) => tracing::error!(%detail, "internal error"),
            Error::Backend(err) => tracing::warn!(%err, "Redis call failed"),
            _ => {}
        }
    }
}
