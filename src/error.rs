//! The hub's error type and its one mapping to JSON-RPC error codes.

use std::borrow::Cow;
use std::time::Duration;

/// Everything a call can fail with. `rpc` turns each variant into a JSON-RPC error object.
#[derive(Debug, thiserror::Error)]
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
    #[error("{0}")]
    NotFound(String),
    /// Redis could not be reached or did not answer.
    #[error("backend unavailable: {0}")]
    Backend(#[from] redis::RedisError),
    /// The call's backend work took longer than its bound; its outcome is unknown.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open: Redis is not called for a while.
    #[error("circuit open")]
    CircuitOpen { retry_after: Duration },
    /// The caller is over a rate limit.
    #[error("{message}")]
    RateLimited {
        retry_after_ms: u64,
        message: String,
    },
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
            Error::Unauthorized(_) => -32002,
            Error::NotFound(_) => -32004,
            Error::Backend(_) | Error::Timeout(_) => -32005,
            Error::CircuitOpen { .. } => -32001,
            Error::RateLimited { .. } => -32000,
        }
    }
}
