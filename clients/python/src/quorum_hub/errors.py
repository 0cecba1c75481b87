"""Exceptions raised by :class:`quorum_hub.Client`.

Every JSON-RPC error the hub answers becomes an :class:`RpcError` subclass chosen by its
``code`` (see the hub's docs/protocol.md, "Errors"); each carries ``code``, ``message`` and ``data``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
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
    "NotFound",
    "BackendUnavailable",
    "WebhookVerificationError",
    "rpc_error",
]


class QuorumHubError(Exception):
    """Base class of every error this package raises."""


class ConnectionLost(QuorumHubError):
    """The hub could not be reached: the connection dropped while a call was in flight
    (the call may or may not have run; a vote may be repeated safely, the hub answers
    ``already_voted``), or the client stayed disconnected longer than its bound."""


class ClientClosed(ConnectionLost):
    """The client was closed."""


class RpcError(QuorumHubError):
    """A JSON-RPC error answered by the hub."""

    code: int
    message: str
    data: Any

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})" + (f": {data}" if data is not None else ""))
        self.code = code
        self.message = message
        self.data = data

    def _data_get(self, key: str) -> Any:
        return self.data.get(key) if isinstance(self.data, dict) else None

    @property
    def reason(self) -> str | None:
        """``data.reason`` when the hub gave one."""
        reason = self._data_get("reason")
        return reason if isinstance(reason, str) else None


class ParseError(RpcError):
    """-32700: the frame was not JSON."""


class InvalidRequest(RpcError):
    """-32600: not JSON-RPC 2.0, or a method not available here (e.g. ``system.auth.refresh``
    on a hub without a secret)."""


class MethodNotFound(RpcError):
    """-32601."""


class InvalidParams(RpcError):
    """-32602: ``field`` names the offending parameter."""

    @property
    def field(self) -> str | None:
        field = self._data_get("field")
        return field if isinstance(field, str) else None


class InternalError(RpcError):
    """-32603: details are in the hub's log."""


class _RetryAfter(RpcError):
    @property
    def retry_after_ms(self) -> int | None:
        """``data.retryAfterMs``: when to try again, in milliseconds."""
        value = self._data_get("retryAfterMs")
        return value if isinstance(value, int) else None


class RateLimited(_RetryAfter):
    """-32000: too many votes for this instance, or too many calls on this session."""


class CircuitOpen(_RetryAfter):
    """-32001: the hub's circuit breaker is open; Redis is not being called."""


class Unauthorized(RpcError):
    """-32002: not registered, another session's instance, bound elsewhere, a token
    refused, a ``system.webhooks.*`` or ``system.policies.*`` call without an admin token,
    or a refusal by a decision's policy, whose rule :attr:`reason` names
    (``not_in_electorate``, ``not_an_opener``, ``electorate_too_large``,
    ``threshold_unreachable``, ``no_policy``, ``role_not_granted``)."""


#: The hub answers an unregistered voter with -32002, the same code as other refusals.
NotRegistered = Unauthorized


class NotRun(RpcError):
    """-32003: the call was not run (its batch's replies were full); send it again."""


class DecisionNotFound(RpcError):
    """-32004: no such decision (no votes, or past its retention), or no such webhook
    endpoint."""


#: The hub answers an unknown webhook endpoint with -32004, the same code as an unknown
#: decision.
NotFound = DecisionNotFound


class BackendUnavailable(RpcError):
    """-32005: Redis could not be reached or did not finish in time (``reason``:
    ``timeout``, ``replication``); the call may be retried."""


class WebhookVerificationError(QuorumHubError):
    """A webhook delivery failed :func:`quorum_hub.webhooks.verify`: a header missing, a
    timestamp outside the tolerance, no signature matching the secret, or a body that is
    not JSON."""


_BY_CODE: dict[int, type[RpcError]] = {
    -32700: ParseError,
    -32600: InvalidRequest,
    -32601: MethodNotFound,
    -32602: InvalidParams,
    -32603: InternalError,
    -32000: RateLimited,
    -32001: CircuitOpen,
    -32002: Unauthorized,
    -32003: NotRun,
    -32004: DecisionNotFound,
    -32005: BackendUnavailable,
}


def rpc_error(error: Any) -> RpcError:
    """Builds the exception for a JSON-RPC ``error`` member."""
    if not isinstance(error, dict):
        return RpcError(-32603, f"malformed error from the hub: {error!r}")
    code = error.get("code")
    code = code if isinstance(code, int) else -32603
    message = error.get("message")
    message = message if isinstance(message, str) else ""
    return _BY_CODE.get(code, RpcError)(code, message, error.get("data"))
