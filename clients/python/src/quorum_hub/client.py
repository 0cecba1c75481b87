"""An agent's client for quorum-hub: one WebSocket that survives drops.

The client connects, registers its instance, and keeps the session alive (the hub refreshes
the registration while the session is open; the ``websockets`` library answers the hub's
pings and sends its own). When the socket drops it reconnects with jittered exponential
backoff, registers again, re-subscribes, and resumes with ``?lastEventId=`` after the last
decision event it received, so :meth:`Client.decisions` yields every decision made or
expired exactly once and in order. With a token provider it fetches a fresh token at every
connection, and before the token it holds expires it extends the session with
``system.auth.refresh``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import itertools
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Union, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from .errors import ClientClosed, ConnectionLost, InvalidRequest, RpcError, rpc_error
from .webhooks import WebhookChanged, WebhookDeliveries, WebhookInfo, WebhookSecret

__all__ = [
    "Client",
    "EventId",
    "parse_event_id",
    "token_expiry_ms",
    "TokenProvider",
    "TokenSource",
    "DECISION_MADE",
    "DECISION_EXPIRED",
    "EVENTS_INCOMPLETE",
    "INSTANCE_LOST",
    "EVENT_BUFFER",
]

log = logging.getLogger("quorum_hub")

DECISION_MADE = "quorum.decision.made"
DECISION_EXPIRED = "quorum.decision.expired"
EVENTS_INCOMPLETE = "system.events.incomplete"
INSTANCE_LOST = "system.instance.lost"

#: A function (plain or async) that returns a current token.
TokenProvider = Callable[[], Union[str, Awaitable[str]]]
#: A token, or a :data:`TokenProvider`.
TokenSource = Union[str, TokenProvider]

#: An event id ``<ms>-<seq>`` as a comparable pair.
EventId = tuple[int, int]

#: Events the client buffers for a consumer that is not reading :meth:`Client.decisions`
#: (the Rust client's bound). While that many wait, the client stops reading the
#: connection, replies to calls included, until the consumer takes one.
EVENT_BUFFER = 1024

#: Share of a token's remaining lifetime after which the client asks its provider for a
#: newer one (the hub ends a session when its token expires).
REFRESH_AT_LIFETIME = 0.8
#: Pause before asking again when the provider had nothing newer, failed, or the hub
#: refused the newer token (seconds).
REFRESH_RETRY = 1.0

_EVENT_ID = re.compile(r"^(\d+)-(\d+)$")
# After these notices the events that follow continue from `since`, even where their ids
# are below ones already passed on (the hub's log went back, or the cursor was not its own).
_CURSOR_MOVES = {"ahead", "malformed", "rewound"}
# The hub could not read Redis to replay what the client missed: resume again later.
_UNREADABLE = "unreadable"

_CONNECT_SUPPORTS_PROXY = "proxy" in inspect.signature(connect).parameters


def parse_event_id(value: Any) -> EventId | None:
    """``"1795769599264-0"`` -> ``(1795769599264, 0)``; None if it is not an event id."""
    if not isinstance(value, str):
        return None
    match = _EVENT_ID.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def token_expiry_ms(token: str) -> int | None:
    """The ``exp`` a JWT claims, in ms since the Unix epoch, read without checking its
    signature (to decide when to fetch a newer token, never to trust one); None when the
    token is not a JWT with a numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return int(exp * 1000)


def backoff_delay(
    attempt: int, min_backoff: float, max_backoff: float, rng: random.Random | None = None
) -> float:
    """The pause before reconnection attempt ``attempt`` (0 for the first after a drop):
    ``min_backoff * 2**attempt`` capped at ``max_backoff``, then jittered to between half
    and all of that, so that many clients of one hub do not come back in step."""
    ceiling = min(max_backoff, min_backoff * 2 ** min(attempt, 60))
    return (rng or random).uniform(ceiling / 2, ceiling)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Client:
    """A quorum-hub session that reconnects by itself. Use it as an async context manager::

        async with Client("ws://127.0.0.1:8080/ws", instance_id="agent-1") as client:
            print(await client.vote("deploy-v3", "approve", total_instances=3))
            async for event in client.decisions():
                print(event["event"], event["decision"], event.get("value"))

    Parameters:
        url: the hub's WebSocket URL (``ws://host:port/ws``).
        instance_id: registered at every connection when given; needed to vote.
        token: on a hub with ``--auth-secret``, a token; or a provider, as ``token_provider``.
        roles, metadata: sent with ``system.register``.
        token_provider: a function (plain or async) returning a current token, called at
            every connection, and again when the token held has run 80% of its lifetime
            (then every second until it returns a newer one), to extend the session with
            ``system.auth.refresh``. Give ``token`` or ``token_provider``, not both.
        since: an event id to resume after on the first connection.
        token_in_query: send the token as ``?token=`` instead of an ``Authorization`` header.
        reconnect_wait: how long a call made while disconnected waits for the client to
            reconnect before it raises :class:`ConnectionLost` (seconds).
        call_timeout: how long a call waits for its reply (seconds).
        min_backoff, max_backoff: bounds of the reconnection delay (seconds); the delay
            doubles after each failed attempt and is jittered.
        open_timeout: bound on one connection attempt (seconds).
    """

    def __init__(
        self,
        url: str,
        instance_id: str | None = None,
        token: TokenSource | None = None,
        roles: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        token_provider: TokenProvider | None = None,
        since: str | None = None,
        token_in_query: bool = False,
        reconnect_wait: float = 10.0,
        call_timeout: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
    ) -> None:
        if token is not None and token_provider is not None:
            raise ValueError("give token or token_provider, not both")
        if min_backoff <= 0 or max_backoff < min_backoff:
            raise ValueError("backoff bounds need 0 < min_backoff <= max_backoff")
        self.url = url
        self.instance_id = instance_id
        self.roles = list(roles) if roles is not None else None
        self.metadata = dict(metadata) if metadata is not None else None
        self._source: TokenSource | None = token_provider if token_provider is not None else token
        self._token_in_query = token_in_query
        self.reconnect_wait = reconnect_wait
        self.call_timeout = call_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout

        # The resume cursor: the newest decision event (made or expired) received, as
        # text and as a pair. Everything received is queued for decisions(), so a resume
        # after it misses nothing and repeats nothing.
        self._cursor: str | None = None
        self._cursor_pair: EventId | None = None
        # Before any decision event was received: where the event log stood when the client
        # first connected (the hub's last delivered event), so that a reconnection still
        # resumes and gets the decisions made while it was away. Not used to drop repeats.
        self._floor: str | None = None
        # The newest decision event decisions() has yielded (what an agent persists).
        self._yielded: str | None = None
        if since is not None:
            pair = parse_event_id(since)
            if pair is None:
                raise ValueError(f"since {since!r} is not an event id (<ms>-<seq>)")
            self._cursor, self._cursor_pair, self._yielded = since, pair, since

        # The token the session runs on, its expiry (ms; the hub's answer to the last
        # refresh, else the token's claim), and when to ask the provider for a newer one.
        self._held: str | None = None
        self._held_exp: int | None = None
        self._refresh_due: float | None = None

        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(EVENT_BUFFER)
        # Set by close(): decisions() ends once the queue is empty.
        self._ended = False
        self._subscriptions: list[str] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._opened_at = 0.0
        #: Why the last connection ended or the last attempt failed, for error messages.
        self.last_error: str | None = None
        #: How many times the client has connected (1 after the first connection).
        self.connections = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Opens the first connection and registers; raises if either fails (e.g.
        :class:`ConnectionLost` when the hub cannot be reached or refuses the token,
        :class:`Unauthorized` when the instance is held by another session). Then keeps
        the session going in the background until :meth:`close`."""
        if self._supervisor is not None:
            raise RuntimeError("the client is already connected")
        if self._closed:
            raise ClientClosed("the client is closed")
        await self._open()
        self._supervisor = asyncio.create_task(self._supervise(), name="quorum-hub-client")

    async def close(self) -> None:
        """Closes the session; pending calls raise :class:`ClientClosed` and
        :meth:`decisions` ends once the events already received are consumed."""
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._drop_connection(ClientClosed("the client was closed"))
        self._ended = True
        # Wakes a consumer waiting on an empty queue; a full one is drained first.
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)

    @property
    def connected(self) -> bool:
        """Whether the client is connected (and registered, when it has an instance)."""
        return self._connected.is_set()

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest decision event :meth:`decisions` has yielded: persist it
        and pass it back as ``since=`` when the agent restarts."""
        return self._yielded

    @property
    def token_expires_at(self) -> int | None:
        """When the token the session runs on expires (ms since the Unix epoch): the hub's
        answer to the last ``system.auth.refresh``, else the token's claimed ``exp``. The
        hub ends the session then (plus a few seconds' leeway). None without a token."""
        return self._held_exp

    # ------------------------------------------------------------------ methods

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Sends any JSON-RPC call and returns its result. While disconnected, waits up to
        ``reconnect_wait`` seconds for the client to reconnect, then raises
        :class:`ConnectionLost` (saying why the last attempt failed); a call in flight when
        the connection drops raises it at once (it may or may not have run)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_wait
        while True:
            if self._closed:
                raise ClientClosed("the client is closed")
            if not self._connected.is_set():
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await asyncio.wait_for(self._connected.wait(), remaining)
                except asyncio.TimeoutError:
                    why = f" (last: {self.last_error})" if self.last_error else ""
                    raise ConnectionLost(
                        f"{method}: not connected to {self.url} after "
                        f"{self.reconnect_wait:g} s{why}"
                    ) from None
                continue
            ws = self._ws
            assert ws is not None
            try:
                return await self._call_on(ws, method, params)
            except _NotSent:
                # The connection went away before the request left: nothing ran. The
                # reader may not have noticed yet, and a send on a closed socket fails
                # without yielding to the event loop: this is the disconnect, so wait for
                # the next connection like any call made while disconnected.
                if self._ws is ws:
                    self._connected.clear()
                continue

    async def register(self) -> dict[str, Any]:
        """Registers the instance again (the client does so at every connection)."""
        if self.instance_id is None:
            raise ValueError("registering needs a Client created with instance_id")
        return _as_object(await self.call("system.register", self._register_params()))

    async def vote(
        self,
        decision: str,
        value: str,
        total_instances: int | None = None,
        close_after_ms: int | None = None,
    ) -> dict[str, Any]:
        """Votes ``value`` on ``decision`` as this client's instance. ``total_instances``
        and ``close_after_ms`` (a deadline) are fixed by the vote that opens the decision.
        Returns the hub's result: ``voted``, ``quorumReached``, ``voteCount``,
        ``finalDecision`` once decided, and ``reason`` (``already_voted`` with
        ``recordedValue``, ``decided``, ``expired``, ``circuit_open``) when the vote was
        not recorded."""
        if self.instance_id is None:
            raise ValueError("voting needs a Client created with instance_id")
        params: dict[str, Any] = {
            "instanceId": self.instance_id,
            "decision": decision,
            "value": value,
        }
        if total_instances is not None:
            params["totalInstances"] = total_instances
        if close_after_ms is not None:
            params["closeAfterMs"] = close_after_ms
        return _as_object(await self.call("system.quorum.vote", params))

    async def status(self, decision: str) -> dict[str, Any]:
        """``system.quorum.status``: the decision's tally and audit trail; raises
        :class:`DecisionNotFound` for a decision with no votes."""
        return _as_object(await self.call("system.quorum.status", {"decision": decision}))

    async def state(
        self,
        *,
        limit: int | None = None,
        instances_after: str | None = None,
        decisions_after: str | None = None,
        **more: Any,
    ) -> dict[str, Any]:
        """``system.get_state``: a page of registered instances and of decisions, and the
        hub's own state. Further keyword arguments are sent too, in camelCase."""
        params: dict[str, Any] = {_camel(k): v for k, v in more.items()}
        for key, value in (
            ("limit", limit),
            ("instancesAfter", instances_after),
            ("decisionsAfter", decisions_after),
        ):
            if value is not None:
                params[key] = value
        return _as_object(await self.call("system.get_state", params))

    async def heartbeat(self) -> dict[str, Any]:
        """``system.heartbeat`` for this client's instance (the hub refreshes a WebSocket
        session's registration by itself; this only reports ``alive``)."""
        if self.instance_id is None:
            raise ValueError("heartbeat needs a Client created with instance_id")
        return _as_object(await self.call("system.heartbeat", {"instanceId": self.instance_id}))

    async def subscribe(self, events: Iterable[str], since: str | None = None) -> dict[str, Any]:
        """``system.subscribe``: also receive these events (exact names or ``prefix.*``)
        through :meth:`decisions`. The client subscribes again after every reconnection.
        With ``since``, the hub replays decision events after it; those at or before the
        newest one already received are not passed on again."""
        events = list(events)
        params: dict[str, Any] = {"events": events}
        if since is not None:
            params["since"] = since
        result = _as_object(await self.call("system.subscribe", params))
        for pattern in events:
            if pattern not in self._subscriptions:
                self._subscriptions.append(pattern)
        return result

    async def unsubscribe(self, events: Iterable[str]) -> dict[str, Any]:
        """``system.unsubscribe``."""
        events = list(events)
        result = _as_object(await self.call("system.unsubscribe", {"events": events}))
        self._subscriptions = [p for p in self._subscriptions if p not in events]
        return result

    async def refresh_token(self, token: str | None = None) -> dict[str, Any]:
        """``system.auth.refresh``: extends the session with a newer token for the same
        instance (without ``token``, one from the token provider). Returns ``{expiresAt}``,
        when the session now ends (ms). The newer token is also the one used at the next
        connection (with a provider, the provider is asked again then). Raises
        :class:`Unauthorized` when the hub refuses the token (the session keeps the one
        it has) and :class:`InvalidRequest` on a hub without ``--auth-secret``."""
        if token is None:
            token = await self._fetch_token() if callable(self._source) else None
            if token is None:
                raise ValueError("refresh_token() needs a token, or a Client with token_provider")
        result = _as_object(await self.call("system.auth.refresh", {"token": token}))
        self._adopt(token, result)
        if not callable(self._source) and self._held == token:
            self._source = token
        return result

    # Webhook endpoints: an admin token's session, or on a hub without --auth-secret a
    # client on loopback, may manage them; others get Unauthorized.

    async def add_webhook(
        self,
        url: str,
        events: Iterable[str] | None = None,
        description: str | None = None,
    ) -> WebhookSecret:
        """``system.webhooks.add``: the hub POSTs the events matching ``events``
        (``system.subscribe`` patterns; default: decisions made and expired) to ``url``,
        signed. Returns ``{id, secret}``: the ``whsec_`` secret is shown only here, keep it
        for :func:`quorum_hub.webhooks.verify`. Raises :class:`InvalidParams` for a URL the
        hub refuses."""
        params: dict[str, Any] = {"url": url}
        if events is not None:
            params["events"] = list(events)
        if description is not None:
            params["description"] = description
        return cast(WebhookSecret, _as_object(await self.call("system.webhooks.add", params)))

    async def webhooks(self) -> list[WebhookInfo]:
        """``system.webhooks.list``: every endpoint, in the order they were added, with its
        state, pending deliveries and latest attempt (never its secret)."""
        result = _as_object(await self.call("system.webhooks.list", {}))
        return cast(list[WebhookInfo], result.get("webhooks", []))

    async def remove_webhook(self, id: str) -> WebhookChanged:
        """``system.webhooks.remove``: no more deliveries to it. Raises
        :class:`DecisionNotFound` (alias :data:`NotFound`) for an unknown ``id``."""
        return cast(WebhookChanged, await self._webhook_call("system.webhooks.remove", id))

    async def enable_webhook(self, id: str) -> WebhookChanged:
        """``system.webhooks.enable``: delivers again to an endpoint the hub disabled."""
        return cast(WebhookChanged, await self._webhook_call("system.webhooks.enable", id))

    async def rotate_webhook_secret(self, id: str) -> WebhookSecret:
        """``system.webhooks.rotate``: a new secret, shown only here. For a day,
        deliveries carry a signature with the old secret too, so receivers can switch to
        the new one at any time in between."""
        return cast(WebhookSecret, await self._webhook_call("system.webhooks.rotate", id))

    async def webhook_deliveries(
        self, id: str, limit: int | None = None, after: str | None = None
    ) -> WebhookDeliveries:
        """``system.webhooks.deliveries``: a page of the endpoint's attempt log, newest
        first (``limit``, default 50). Pass the page's ``next`` as ``after`` for the next
        one; the last page has no ``next``."""
        params: dict[str, Any] = {"id": id}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return cast(
            WebhookDeliveries, _as_object(await self.call("system.webhooks.deliveries", params))
        )

    # Decision policies: an admin's calls, like the webhook endpoints'.

    async def set_policy(self, pattern: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        """``system.policies.set``: the policy of the decisions ``pattern`` matches (a name,
        or a prefix followed by ``*``): ``electorate`` (``{"role": R}``), ``threshold``
        (``"majority"``, ``"two_thirds"``, ``"unanimous"`` or a count), ``closeAfterMs``,
        ``values`` and ``openers``. Decisions already open keep the terms they opened
        under. Returns ``{pattern, done}``."""
        params = {"pattern": pattern, "policy": dict(policy)}
        return _as_object(await self.call("system.policies.set", params))

    async def policies(self) -> dict[str, Any]:
        """``system.policies.list``: ``{policies: [{pattern, policy}], version}`` as the
        answering hub applies them."""
        return _as_object(await self.call("system.policies.list", {}))

    async def remove_policy(self, pattern: str) -> dict[str, Any]:
        """``system.policies.remove``. Raises :class:`DecisionNotFound` (alias
        :data:`NotFound`) when no policy has ``pattern``."""
        return _as_object(await self.call("system.policies.remove", {"pattern": pattern}))

    async def decisions(self) -> AsyncIterator[dict[str, Any]]:
        """Every event the hub pushes, in order, as the notification's params plus an
        ``"event"`` key naming it: ``quorum.decision.made`` (has ``value``),
        ``quorum.decision.expired`` (has ``tally``, no ``value``),
        ``system.events.incomplete`` (some missed events could not be replayed: read
        :meth:`state`), ``system.instance.lost``, and any subscribed event. Decision events
        come once each, across reconnections. Events are buffered from the moment the
        client connects, so none is lost before this is called, up to
        :data:`EVENT_BUFFER`: with that many unread, the client stops reading the
        connection (replies to calls wait too) until this takes one. Meant for one
        consumer. Ends when the client is closed."""
        while True:
            if self._ended and self._events.empty():
                return
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # let other iterators end too
                return
            kind = event["event"]
            if kind in (DECISION_MADE, DECISION_EXPIRED) and parse_event_id(event.get("eventId")):
                self._yielded = event["eventId"]
            elif kind == EVENTS_INCOMPLETE and event.get("reason") in _CURSOR_MOVES:
                if parse_event_id(event.get("since")):
                    self._yielded = event["since"]
            yield event

    # ------------------------------------------------------------------ internals

    async def _webhook_call(self, method: str, id: str) -> dict[str, Any]:
        return _as_object(await self.call(method, {"id": id}))

    def _register_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"instanceId": self.instance_id}
        if self.roles is not None:
            params["roles"] = self.roles
        if self.metadata is not None:
            params["metadata"] = self.metadata
        return params

    async def _fetch_token(self) -> str | None:
        """The token for a connection: the fixed one, or the provider's current one."""
        source = self._source
        if source is None or isinstance(source, str):
            return source
        try:
            value = source()
            if inspect.isawaitable(value):
                value = await value
        except Exception as err:
            raise ConnectionLost(f"the token provider failed: {err!r}") from err
        if not isinstance(value, str) or not value:
            raise ConnectionLost(f"the token provider returned {value!r}, not a token")
        return value

    def _adopt(self, token: str, refreshed: Mapping[str, Any]) -> None:
        """The hub accepted ``token`` with ``system.auth.refresh``: the session now ends at
        ``expiresAt`` (the later of its tokens')."""
        claimed = token_expiry_ms(token)
        if self._held is None or claimed is None or self._held_exp is None or claimed >= self._held_exp:
            self._held = token
        expires_at = refreshed.get("expiresAt")
        if isinstance(expires_at, int) and not isinstance(expires_at, bool):
            self._held_exp = expires_at
        elif claimed is not None:
            self._held_exp = max(claimed, self._held_exp or 0)
        self._schedule_refresh()

    def _schedule_refresh(self, retry: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if retry:
            self._refresh_due = loop.time() + REFRESH_RETRY
        elif self._held_exp is None:
            self._refresh_due = None
        else:
            left = max(0.0, self._held_exp / 1000 - time.time())
            self._refresh_due = loop.time() + left * REFRESH_AT_LIFETIME

    async def _refresh_loop(self, ws: ClientConnection) -> None:
        """While ``ws`` is open, asks the provider for a newer token when the one held has
        run most of its lifetime, and extends the session with it."""
        loop = asyncio.get_running_loop()
        while True:
            due = self._refresh_due
            if due is None:
                return
            if loop.time() < due:
                # refresh_token() may move the due time meanwhile: look again then.
                await asyncio.sleep(due - loop.time())
                continue
            try:
                fresh = await self._fetch_token()
            except ConnectionLost as err:
                log.warning("quorum-hub: could not get a newer token: %s", err)
                self._schedule_refresh(retry=True)
                continue
            claimed = token_expiry_ms(fresh) if fresh is not None else None
            if fresh is None or claimed is None or (
                self._held_exp is not None and claimed <= self._held_exp
            ):
                self._schedule_refresh(retry=True)  # nothing newer yet
                continue
            try:
                result = await self._call_on(ws, "system.auth.refresh", {"token": fresh})
            except InvalidRequest:
                return  # a hub without a secret: nothing expires
            except RpcError as err:
                log.warning("quorum-hub: the hub refused a newer token: %s", err)
                self._schedule_refresh(retry=True)
                continue
            except (ConnectionLost, _NotSent):
                return  # the connection dropped; the next one fetches its own token
            self._adopt(fresh, _as_object(result))
            log.debug("quorum-hub: session extended to %s", self._held_exp)

    def _connect_url(self, token: str | None) -> str:
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("lastEventId", "token")]
        cursor = self._cursor if self._cursor is not None else self._floor
        if cursor is not None:
            query.append(("lastEventId", cursor))
        if token is not None and self._token_in_query:
            query.append(("token", token))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _open(self) -> None:
        """Opens one connection, starts reading it, registers and re-subscribes."""
        try:
            await self._open_once()
        except (ConnectionLost, RpcError) as err:
            self.last_error = str(err)
            raise

    async def _open_once(self) -> None:
        token = await self._fetch_token()
        headers = {}
        if token is not None and not self._token_in_query:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {}
        if _CONNECT_SUPPORTS_PROXY:
            kwargs["proxy"] = None
        try:
            ws = await connect(
                self._connect_url(token),
                additional_headers=headers,
                open_timeout=self.open_timeout,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
                max_size=None,
                **kwargs,
            )
        except InvalidURI:
            raise
        except InvalidStatus as err:
            status = err.response.status_code
            raise ConnectionLost(f"the hub refused the connection: HTTP {status}") from err
        except (OSError, asyncio.TimeoutError, WebSocketException) as err:
            raise ConnectionLost(f"cannot connect to {self.url}: {err}") from err
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="quorum-hub-reader")
        try:
            if self.instance_id is not None:
                # A resumed session replays what it missed before it reads this call, so
                # the replayed events are passed on first.
                await self._call_on(ws, "system.register", self._register_params())
            if self._subscriptions:
                await self._call_on(ws, "system.subscribe", {"events": self._subscriptions})
            if self._cursor is None and self._floor is None:
                await self._find_floor(ws)
        except BaseException as err:
            await self._drop_connection(ConnectionLost("connection setup failed"))
            if isinstance(err, _NotSent):
                raise ConnectionLost(
                    "the connection dropped while registering"
                    + (f" ({self.last_error})" if self.last_error else "")
                ) from None
            raise
        self._held, self._held_exp = token, token_expiry_ms(token) if token else None
        self._schedule_refresh()
        if callable(self._source) and self._held_exp is not None:
            self._refresher = asyncio.create_task(
                self._refresh_loop(ws), name="quorum-hub-token-refresh"
            )
        self.connections += 1
        self._opened_at = asyncio.get_running_loop().time()
        self.last_error = None
        self._connected.set()

    async def _find_floor(self, ws: ClientConnection) -> None:
        """Asks the hub where its event log stands, for a client that has received no
        decision event yet: without a cursor, a reconnection would not resume, and the
        decisions made while the client was away would be lost."""
        try:
            state = await self._call_on(ws, "system.get_state", {"limit": 1})
        except RpcError as err:
            log.warning("quorum-hub: could not read where the event log stands: %s", err)
            return
        hub = state.get("hub") if isinstance(state, dict) else None
        floor = hub.get("lastEventId") if isinstance(hub, dict) else None
        if self._cursor is None and parse_event_id(floor) is not None:
            self._floor = floor

    async def _call_on(
        self, ws: ClientConnection, method: str, params: Mapping[str, Any] | None
    ) -> Any:
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = dict(params)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                await ws.send(json.dumps(message))
            except ConnectionClosed:
                raise _NotSent from None
            try:
                return await asyncio.wait_for(future, self.call_timeout)
            except asyncio.TimeoutError:
                raise ConnectionLost(
                    f"{method}: no reply within {self.call_timeout:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue
                try:
                    message = json.loads(frame)
                except ValueError:
                    log.warning("quorum-hub: ignoring a frame that is not JSON")
                    continue
                for item in message if isinstance(message, list) else [message]:
                    if isinstance(item, dict) and await self._dispatch(item):
                        # The hub could not replay what was missed: leave this session
                        # before any live event moves the cursor past the gap, and resume
                        # again from the same cursor on the next connection.
                        self.last_error = "the hub could not read its event log to resume"
                        return
            self.last_error = _close_text(ws)
        except ConnectionClosed:
            self.last_error = _close_text(ws)
        except Exception:  # pragma: no cover - a bug; the connection is dropped
            log.exception("quorum-hub: reading the connection failed")
        finally:
            self._connected.clear()
            self._fail_pending(ConnectionLost(
                "the connection to the hub dropped"
                + (f" ({self.last_error})" if self.last_error else "")
            ))

    async def _dispatch(self, message: dict[str, Any]) -> bool:
        """Handles one message; True when the session must be left (an unreadable resume).
        Waits while :meth:`decisions` has :data:`EVENT_BUFFER` events unread."""
        if "method" in message and "id" not in message:
            params = message.get("params")
            event = dict(params) if isinstance(params, dict) else {"params": params}
            event["event"] = message["method"]
            await self._pass_on(event)
            return event["event"] == EVENTS_INCOMPLETE and event.get("reason") == _UNREADABLE
        request_id = message.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return False
        if "error" in message:
            future.set_exception(rpc_error(message["error"]))
        else:
            future.set_result(message.get("result"))
        return False

    async def _pass_on(self, event: dict[str, Any]) -> None:
        """Queues an event for :meth:`decisions`; a decision event only once per id. While
        :data:`EVENT_BUFFER` events wait unread, this waits for the consumer, and the
        connection is not read meanwhile. The cursor moves only once the event is queued,
        so a connection dropped while waiting resumes before this event."""
        kind = event["event"]
        moved_to: tuple[str, EventId] | None = None
        if kind in (DECISION_MADE, DECISION_EXPIRED):
            event_id = event.get("eventId")
            pair = parse_event_id(event_id)
            if pair is not None:
                if self._cursor_pair is not None and pair <= self._cursor_pair:
                    return
                moved_to = str(event_id), pair
        elif kind == EVENTS_INCOMPLETE and event.get("reason") in _CURSOR_MOVES:
            pair = parse_event_id(event.get("since"))
            if pair is not None:
                moved_to = event["since"], pair
        await self._events.put(event)
        if moved_to is not None:
            self._cursor, self._cursor_pair = moved_to

    def _fail_pending(self, error: Exception) -> None:
        # Every pending call belongs to the one open connection: a new one opens only
        # after this one was read to its end.
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)

    async def _drop_connection(self, error: Exception) -> None:
        self._connected.clear()
        ws, reader, refresher = self._ws, self._reader, self._refresher
        self._ws, self._reader, self._refresher = None, None, None
        self._fail_pending(error)
        for task in (refresher, reader):
            if task is not None and not task.done():
                task.cancel()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (refresher, reader):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task

    async def _supervise(self) -> None:
        """Waits for the connection to drop, then reconnects until it works."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self._closed:
            reader = self._reader
            if reader is not None:
                await asyncio.shield(reader)
            await self._drop_connection(ConnectionLost(
                "the connection to the hub dropped"
                + (f" ({self.last_error})" if self.last_error else "")
            ))
            log.info("quorum-hub: disconnected from %s: %s", self.url, self.last_error)
            # A connection that lasted starts the backoff over; one that ended at once
            # (the hub closing it, an unreadable resume) goes on doubling it.
            if loop.time() - self._opened_at >= self.max_backoff:
                attempt = 0
            while not self._closed:
                await asyncio.sleep(backoff_delay(attempt, self.min_backoff, self.max_backoff))
                attempt = min(attempt + 1, 60)
                try:
                    await self._open()
                except RpcError as err:
                    log.warning("quorum-hub: registering again failed: %s", err)
                except ConnectionLost as err:
                    log.info("quorum-hub: reconnecting failed: %s", err)
                except Exception as err:  # pragma: no cover - a bug; try again later
                    self.last_error = repr(err)
                    log.exception("quorum-hub: reconnecting failed")
                else:
                    log.info("quorum-hub: reconnected to %s", self.url)
                    break


def _close_text(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    if code is None:
        return "the connection closed"
    return f"the connection closed with code {code}" + (f" ({reason})" if reason else "")


def _as_object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise RpcError(-32603, f"unexpected result from the hub: {result!r}")
    return result


class _NotSent(Exception):
    """The request could not be sent: the connection had closed."""
