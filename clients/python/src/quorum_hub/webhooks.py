"""Webhooks: what the ``system.webhooks.*`` methods answer, and checking a delivery.

A hub POSTs each decision event to every webhook endpoint as a Standard Webhooks message:
a JSON body ``{"type", "timestamp", "data"}`` and the headers ``webhook-id`` (the event
id, the same on every attempt), ``webhook-timestamp`` (seconds since the Unix epoch) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, one per secret,
space-separated, while a rotated secret is still honoured). :func:`verify` checks such a
delivery against the endpoint's ``whsec_`` secret, as the ``standardwebhooks`` package does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, TypedDict, Union

from .errors import WebhookVerificationError

__all__ = [
    "verify",
    "sign",
    "WebhookVerificationError",
    "WebhookSecret",
    "WebhookInfo",
    "WebhookAttempt",
    "WebhookDeliveries",
    "WebhookChanged",
    "ID_HEADER",
    "TIMESTAMP_HEADER",
    "SIGNATURE_HEADER",
    "DEFAULT_TOLERANCE",
    "SECRET_PREFIX",
]

#: The message id: the event id, the same on every attempt (deduplicate on it).
ID_HEADER = "webhook-id"
#: When the attempt was signed, in seconds since the Unix epoch.
TIMESTAMP_HEADER = "webhook-timestamp"
#: ``v1,<base64 signature>``, space-separated when there are several.
SIGNATURE_HEADER = "webhook-signature"
#: How far a delivery's timestamp may be from the receiver's clock, either way (seconds):
#: older messages are refused as possible replays.
DEFAULT_TOLERANCE = 300
#: How a Standard Webhooks secret begins; the base64 of the key follows.
SECRET_PREFIX = "whsec_"
_VERSION = "v1,"

#: A secret as ``system.webhooks.add`` returns it (``whsec_`` and base64; the prefix may be
#: left out), or the key itself as bytes.
Secret = Union[str, bytes]


class WebhookSecret(TypedDict):
    """``system.webhooks.add`` and ``system.webhooks.rotate``: the endpoint's id and its
    secret, shown only in this reply."""

    id: str
    secret: str


class _AttemptFields(TypedDict):
    eventId: str
    at: int
    outcome: str


class WebhookAttempt(_AttemptFields, total=False):
    """One delivery attempt. ``eventId``: the event delivered (for a notice of missing
    events, the id after which they are missing); ``at``: when (ms since the Unix epoch);
    ``outcome``: ``delivered``, ``retry``, ``given_up`` or ``gone`` (the endpoint was
    disabled); ``status``: the receiver's HTTP status, when it answered; ``error``: why it
    did not; ``attempt`` (from 1) and ``durationMs``: absent from ``lastAttempt``."""

    attempt: int
    status: int
    error: str
    durationMs: int


class _InfoFields(TypedDict):
    id: str
    url: str
    events: list[str]
    state: str
    addedAt: int
    pending: int


class WebhookInfo(_InfoFields, total=False):
    """One endpoint as ``system.webhooks.list`` shows it (never its secret). ``events``:
    the event patterns it gets; ``state``: ``enabled`` or ``disabled`` (then
    ``disabledReason`` and ``disabledAt``, ms); ``addedAt``: ms since the Unix epoch;
    ``pending``: deliveries due or being attempted; ``lastAttempt``: the latest attempt."""

    description: str
    disabledReason: str
    disabledAt: int
    lastAttempt: WebhookAttempt


class _DeliveriesFields(TypedDict):
    attempts: list[WebhookAttempt]


class WebhookDeliveries(_DeliveriesFields, total=False):
    """A page of an endpoint's attempt log, newest first; ``next``, absent on the last
    page, is the ``after`` of the next one."""

    next: str


class WebhookChanged(TypedDict):
    """``system.webhooks.remove`` and ``system.webhooks.enable``: ``done`` is ``removed``
    or ``enabled``."""

    id: str
    done: str


def _key(secret: Secret) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"a webhook secret is {SECRET_PREFIX!r} and base64, as "
                "system.webhooks.add returns it"
            ) from None
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def sign(secret: Secret, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` a sender with ``secret`` puts on a message: ``v1,`` and
    the base64 HMAC-SHA256 of ``msg_id.timestamp.body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return _VERSION + base64.b64encode(digest).decode("ascii")


def verify(
    secret: Secret,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Any:
    """Checks a webhook delivery and returns its body, parsed.

    ``headers`` are the request's (names in any case); ``body`` is the request's body
    exactly as received (bytes, or text encoded as UTF-8). The delivery is genuine when one
    of the ``v1,`` signatures in ``webhook-signature`` is the HMAC-SHA256, with
    ``secret``'s key, of ``webhook-id.webhook-timestamp.body`` (compared in constant time),
    and fresh when ``webhook-timestamp`` is within ``tolerance`` seconds of ``now``
    (default: this machine's clock). Raises :class:`WebhookVerificationError` otherwise
    (answer such a request with 4xx and drop it), and :class:`ValueError` for a secret
    that is not a ``whsec_`` secret.
    """
    key = _key(secret)
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [h for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not lowered.get(h)]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    msg_id, stamp, signatures = (
        lowered[ID_HEADER], lowered[TIMESTAMP_HEADER], lowered[SIGNATURE_HEADER]
    )
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} {stamp!r} is not a Unix time")
    timestamp = int(stamp)
    clock = time.time() if now is None else now
    if timestamp < clock - tolerance:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} {timestamp} is more than {tolerance:g} s old"
        )
    if timestamp > clock + tolerance:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} {timestamp} is more than {tolerance:g} s in the future"
        )
    payload = _as_bytes(body)
    signed = f"{msg_id}.{stamp}.".encode() + payload
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    matched = False
    for candidate in signatures.split(" "):
        if candidate.startswith(_VERSION):
            # Every candidate is compared, in constant time each.
            given = candidate[len(_VERSION):].encode("ascii", "replace")
            matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise WebhookVerificationError(f"no {SIGNATURE_HEADER} matches the secret")
    try:
        return json.loads(payload)
    except ValueError:
        raise WebhookVerificationError("the body is signed but is not JSON") from None
