//! The errors the document names: each with its code, taken from the hub's own error
//! type, and what it means, and the groups of them that methods share.

/// The errors a call can end with, by their name in `components.errors`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    InvalidParams,
    RateLimited,
    CircuitOpen,
    Unauthorized,
    BatchReplyFull,
    NotFound,
    Backend,
    Internal,
}

impl Failure {
    pub(super) const ALL: [Failure; 8] = [
        Failure::InvalidParams,
        Failure::RateLimited,
        Failure::CircuitOpen,
        Failure::Unauthorized,
        Failure::BatchReplyFull,
        Failure::NotFound,
        Failure::Backend,
        Failure::Internal,
    ];

    /// Its code, taken from the hub's own error type.
    pub(super) fn code(self) -> i64 {
        use crate::error::Error;
        let sample = match self {
            Failure::InvalidParams => Error::invalid("field", ""),
            Failure::RateLimited => Error::RateLimited {
                retry_after_ms: 0,
                message: String::new(),
            },
            Failure::CircuitOpen => Error::CircuitOpen {
                retry_after: std::time::Duration::ZERO,
            },
            Failure::Unauthorized => Error::Unauthorized(String::new()),
            Failure::BatchReplyFull => Error::BatchReplyFull { limit_bytes: 0 },
            Failure::NotFound => Error::NotFound(String::new()),
            Failure::Backend => Error::Timeout(std::time::Duration::ZERO),
            Failure::Internal => Error::Internal(String::new()),
        };
        sample.code()
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Failure::InvalidParams => "InvalidParams",
            Failure::RateLimited => "RateLimited",
            Failure::CircuitOpen => "CircuitOpen",
            Failure::Unauthorized => "Unauthorized",
            Failure::BatchReplyFull => "BatchReplyFull",
            Failure::NotFound => "NotFound",
            Failure::Backend => "BackendUnavailable",
            Failure::Internal => "Internal",
        }
    }

    pub(super) fn meaning(self) -> &'static str {
        match self {
            Failure::InvalidParams => {
                "invalid params: a field is missing, of the wrong type, out of range or unknown; \
                 data.field names it"
            }
            Failure::RateLimited => {
                "rate limited: too many calls from this session, or votes from this instance; \
                 data.retryAfterMs says when to retry"
            }
            Failure::CircuitOpen => {
                "circuit open: Redis failed repeatedly and is not called for a while; \
                 data.retryAfterMs says for how long"
            }
            Failure::Unauthorized => {
                "not allowed: the session is not registered as this instance, the instance is \
                 bound to another session, or the token does not allow it; a refusal by a \
                 decision policy names its rule in data.reason (not_in_electorate, \
                 not_an_opener, electorate_too_large, threshold_unreachable, no_policy, \
                 role_not_granted)"
            }
            Failure::BatchReplyFull => {
                "not run: this batch's replies reached their size bound; send the call again"
            }
            Failure::NotFound => "no such decision",
            Failure::Backend => {
                "backend unavailable: Redis could not be reached, did not answer in time \
                 (data.reason: timeout) or too few replicas confirmed the write \
                 (data.reason: replication); retrying is safe"
            }
            Failure::Internal => "internal error",
        }
    }
}

/// Errors every method can end with.
pub(super) const EVERY_CALL: [Failure; 3] = [
    Failure::InvalidParams,
    Failure::RateLimited,
    Failure::BatchReplyFull,
];
/// Errors of a method that acts as a registered instance in Redis.
pub(super) const AS_INSTANCE: [Failure; 4] = [
    Failure::Unauthorized,
    Failure::CircuitOpen,
    Failure::Backend,
    Failure::Internal,
];
/// Errors of a method that reads Redis.
pub(super) const READS: [Failure; 3] = [Failure::CircuitOpen, Failure::Backend, Failure::Internal];
