"""An agent's client for quorum-hub: one WebSocket that survives drops.

The client connects, registers its instance, and keeps the session alive (the hub refreshes
the registration while the session is open; the ``websockets`` library answers the hub's
pings and sends its own). When the socket drops it reconnects with jittered exponential
backoff, registers again, re-subscribes, and resumes with ``?lastEventId=`` after the last
decision event it passed on, so :meth:`Client.decisions` yields every decision made or
expired exactly once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from .errors import ClientClosed, ConnectionLost, RpcError, rpc_error

__all__ = [
    "Client",
    "EventId",
    "parse_event_id",
    "TokenSource",
    "DECISION_MADE",
    "DECISION_EXPIRED",
    "EVENTS_INCOMPLETE",
    "INSTANCE_LOST",
]

log = logging.getLogger("quorum_hub")

DECISION_MADE = "quorum.decision.made"
DECISION_EXPIRED = "quorum.decision.expired"
EVENTS_INCOMPLETE = "system.events.incomplete"
INSTANCE_LOST = "system.instance.lost"

#: A token, or a function (plain or async) called at every connection for the current one.
TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]

#: An event id ``<ms>-<seq>`` as a comparable pair.
EventId = tuple[int, int]

_EVENT_ID = re.compile(r"^(\d+)-(\d+)$")
# After these notices the events that follow continue from `since`, even where their ids
# are below ones already passed on (the hub's log went back, or the cursor was not its own).
_CURSOR_MOVES = {"ahead", "malformed", "rewound"}

_CONNECT_SUPPORTS_PROXY = "proxy" in inspect.signature(connect).parameters


def parse_event_id(value: Any) -> EventId | None:
    """``"1795769599264-0"`` -> ``(1795769599264, 0)``; None if it is not an event id."""
    if not isinstance(value, str):
        return None
    match = _EVENT_ID.match(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


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
        token: a token (``--auth-secret`` hubs), or a function returning one, called at
            every connection (so a rotated token is picked up on reconnection).
        roles, metadata: sent with ``system.register``.
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
        since: str | None = None,
        token_in_query: bool = False,
        reconnect_wait: float = 10.0,
        call_timeout: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.instance_id = instance_id
        self.roles = list(roles) if roles is not None else None
        self.metadata = dict(metadata) if metadata is not None else None
        self._token = token
        self._token_in_query = token_in_query
        self.reconnect_wait = reconnect_wait
        self.call_timeout = call_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout

        # The newest decision event (made or expired) passed on, as text and as a pair.
        self._last_event: str | None = None
        self._last_pair: EventId | None = None
        if since is not None:
            pair = parse_event_id(since)
            if pair is None:
                raise ValueError(f"since {since!r} is not an event id (<ms>-<seq>)")
            self._last_event, self._last_pair = since, pair

        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscriptions: list[str] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
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
        :class:`ConnectionLost` when the hub cannot be reached, :class:`Unauthorized`
        when the instance is held by another session). Then keeps the session going in
        the background until :meth:`close`."""
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
        self._events.put_nowait(None)

    @property
    def connected(self) -> bool:
        """Whether the client is connected (and registered, when it has an instance)."""
        return self._connected.is_set()

    @property
    def last_event_id(self) -> str | None:
        """The id of the newest decision event passed on: where a resume starts."""
        return self._last_event

    # ------------------------------------------------------------------ methods

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Sends any JSON-RPC call and returns its result. While disconnected, waits up to
        ``reconnect_wait`` seconds for the client to reconnect, then raises
        :class:`ConnectionLost`; a call in flight when the connection drops raises it too
        (it may or may not have run)."""
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
                    raise ConnectionLost(
                        f"not connected to {self.url} after {self.reconnect_wait:g} s"
                    ) from None
                continue
            ws = self._ws
            assert ws is not None
            try:
                return await self._call_on(ws, method, params)
            except _NotSent:
                # The connection went away before the request left: nothing ran, so wait
                # for the next one.
                continue

    async def register(self) -> dict[str, Any]:
        """Registers the instance again (the client does so at every connection)."""
        if self._ws is None:
            raise ConnectionLost("not connected")
        return _as_object(await self._call_on(self._ws, "system.register", self._register_params()))

    async def vote(
        self,
        decision: str,
        value: str,
        total_instances: int | None = None,
        close_after_ms: int | None = None,
    ) -> dict[str, Any]:
        """Votes ``value`` on ``decision`` as this client's instance. Returns the hub's
        result: ``voted``, ``quorumReached``, ``voteCount``, ``finalDecision`` once decided,
        and ``reason`` (``already_voted`` with ``recordedValue``, ``decided``, ``expired``,
        ``circuit_open``) when the vote was not recorded."""
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

    async def state(self, **params: Any) -> dict[str, Any]:
        """``system.get_state``; ``limit``, ``instances_after`` / ``instancesAfter``,
        ``decisions_after`` / ``decisionsAfter``."""
        return _as_object(await self.call("system.get_state", {_camel(k): v for k, v in params.items()}))

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
        newest one already passed on are not passed on again."""
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

    async def decisions(self) -> AsyncIterator[dict[str, Any]]:
        """Every event the hub pushes, in order, as the notification's params plus an
        ``"event"`` key naming it: ``quorum.decision.made`` (has ``value``),
        ``quorum.decision.expired`` (has ``tally``, no ``value``),
        ``system.events.incomplete`` (some missed events could not be replayed: read
        :meth:`state`), ``system.instance.lost``, and any subscribed event. Decision events
        come once each, across reconnections. Events are buffered from the moment the
        client connects, so none is lost before this is called; meant for one consumer.
        Ends when the client is closed."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # let other iterators end too
                return
            yield event

    # ------------------------------------------------------------------ internals

    def _register_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"instanceId": self.instance_id}
        if self.roles is not None:
            params["roles"] = self.roles
        if self.metadata is not None:
            params["metadata"] = self.metadata
        return params

    async def _current_token(self) -> str | None:
        token = self._token
        if token is None or isinstance(token, str):
            return token
        value = token()
        if inspect.isawaitable(value):
            value = await value
        return value

    def _connect_url(self, token: str | None) -> str:
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k not in ("lastEventId", "token")]
        if self._last_event is not None:
            query.append(("lastEventId", self._last_event))
        if token is not None and self._token_in_query:
            query.append(("token", token))
        return urlunsplit(parts._replace(query=urlencode(query)))

    async def _open(self) -> None:
        """Opens one connection, starts reading it, registers and re-subscribes."""
        token = await self._current_token()
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
        except BaseException as err:
            await self._drop_connection(ConnectionLost("connection setup failed"))
            if isinstance(err, _NotSent):
                raise ConnectionLost("the connection dropped while registering") from None
            raise
        self.connections += 1
        self._connected.set()

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
                    if isinstance(item, dict):
                        self._dispatch(item)
        except ConnectionClosed:
            pass
        except Exception:  # pragma: no cover - a bug; the connection is dropped
            log.exception("quorum-hub: reading the connection failed")
        finally:
            self._connected.clear()
            self._fail_pending(ConnectionLost("the connection to the hub dropped"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" not in message:
            params = message.get("params")
            event = dict(params) if isinstance(params, dict) else {"params": params}
            event["event"] = message["method"]
            self._pass_on(event)
            return
        request_id = message.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(rpc_error(message["error"]))
        else:
            future.set_result(message.get("result"))

    def _pass_on(self, event: dict[str, Any]) -> None:
        """Queues an event for :meth:`decisions`; a decision event only once per id."""
        kind = event["event"]
        if kind in (DECISION_MADE, DECISION_EXPIRED):
            event_id = event.get("eventId")
            pair = parse_event_id(event_id)
            if pair is not None:
                if self._last_pair is not None and pair <= self._last_pair:
                    return
                self._last_event, self._last_pair = event_id, pair
        elif kind == EVENTS_INCOMPLETE and event.get("reason") in _CURSOR_MOVES:
            pair = parse_event_id(event.get("since"))
            if pair is not None:
                self._last_event, self._last_pair = event["since"], pair
        self._events.put_nowait(event)

    def _fail_pending(self, error: Exception) -> None:
        # Every pending call belongs to the one open connection: a new one opens only
        # after this one was read to its end.
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)

    async def _drop_connection(self, error: Exception) -> None:
        self._connected.clear()
        ws, reader = self._ws, self._reader
        self._ws, self._reader = None, None
        self._fail_pending(error)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _supervise(self) -> None:
        """Waits for the connection to drop, then reconnects until it works."""
        attempt = 0
        while not self._closed:
            reader = self._reader
            if reader is not None:
                await asyncio.shield(reader)
            await self._drop_connection(ConnectionLost("the connection to the hub dropped"))
            while not self._closed:
                # Jittered exponential backoff: between half and all of the capped delay.
                delay = min(self.max_backoff, self.min_backoff * 2**attempt)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                attempt = min(attempt + 1, 30)
                try:
                    await self._open()
                except RpcError as err:
                    log.warning("quorum-hub: registering again failed: %s", err)
                except ConnectionLost as err:
                    log.info("quorum-hub: reconnecting failed: %s", err)
                else:
                    log.info("quorum-hub: reconnected to %s", self.url)
                    attempt = 0
                    break


def _as_object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise RpcError(-32603, f"unexpected result from the hub: {result!r}")
    return result


class _NotSent(Exception):
    """The request could not be sent: the connection had closed."""

