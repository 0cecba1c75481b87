"""asyncio client for quorum-hub: see clients/python/README.md."""

from .client import (
    DECISION_EXPIRED,
    DECISION_MADE,
    EVENTS_INCOMPLETE,
    INSTANCE_LOST,
    Client,
    EventId,
    TokenSource,
    parse_event_id,
)
from .errors import (
    BackendUnavailable,
    CircuitOpen,
    ClientClosed,
    ConnectionLost,
    DecisionNotFound,
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    NotRegistered,
    NotRun,
    ParseError,
    QuorumHubError,
    RateLimited,
    RpcError,
    Unauthorized,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "EventId",
    "TokenSource",
    "parse_event_id",
    "DECISION_MADE",
    "DECISION_EXPIRED",
    "EVENTS_INCOMPLETE",
    "INSTANCE_LOST",
    "QuorumHubError",
    "ConnectionLost",
    "ClientClosed",
    "RpcError",
    "ParseError",
    "InvalidRequest",
    "MethodNotFound",
    "InvalidParams",
    "InternalError",
    "RateLimited",
    "CircuitOpen",
    "Unauthorized",
    "NotRegistered",
    "NotRun",
    "DecisionNotFound",
    "BackendUnavailable",
]
