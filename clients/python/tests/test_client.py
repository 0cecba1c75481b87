"""Tests of the Python client against a real hub and a real Redis.

Needs `redis-server` on PATH (or QUORUM_REDIS_SERVER) and the hub binary, by default
`target/debug/quorum-hub` at the repository's root (or QUORUM_HUB_BIN); it is built with
`cargo build` when missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quorum_hub import (
    Client,
    ConnectionLost,
    DecisionNotFound,
    InvalidParams,
    NotRegistered,
    RateLimited,
    RpcError,
    Unauthorized,
    parse_event_id,
)

REPO = Path(__file__).resolve().parents[3]
DEADLINE = 20.0
T = TypeVar("T")


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def eventually(what: str, check: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    """Polls an async (or plain) check until it returns something truthy."""
    end = asyncio.get_running_loop().time() + deadline
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        binary = os.environ.get("QUORUM_REDIS_SERVER") or shutil.which("redis-server")
        if not binary:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until("redis-server to answer", self._pong)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def hub_binary() -> Path:
    binary = Path(os.environ.get("QUORUM_HUB_BIN", REPO / "target" / "debug" / "quorum-hub"))
    if not binary.exists():
        subprocess.run(["cargo", "build"], cwd=REPO, check=True)
    return binary


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Hub:
    """A quorum-hub process; `addr` is the address it logged."""

    def __init__(self, redis: RedisServer, listen: str = "127.0.0.1:0", *extra: str) -> None:
        options = {
            "--listen": listen, "--redis-url": redis.url,
            "--vote-rate-limit": "off", "--session-rate-limit": "off",
            # A killed hub leaves its sessions' bindings in Redis until this TTL ends.
            "--instance-ttl": "2",
            "--web-dir": str(REPO / "web-demo"),
        }
        options.update(zip(extra[::2], extra[1::2]))  # extra: flag, value, ...
        self.args = [str(hub_binary())]
        for flag, value in options.items():
            self.args += [flag, value]
        self.lines: list[str] = []
        self._start()

    def _start(self) -> None:
        self.lines.clear()
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        found: list[str] = []

        def drain(stream: Any) -> None:
            for line in stream:
                line = _ANSI.sub("", line.rstrip("\n"))
                self.lines.append(line)
                match = re.search(r"listening on (\S+)", line)
                if match and not found:
                    found.append(match.group(1))

        threading.Thread(target=drain, args=(self.proc.stdout,), daemon=True).start()

        def listening() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError("the hub exited:\n" + "\n".join(self.lines))
            return found[0] if found else None

        self.addr = wait_until("the hub to log `listening on ADDR`", listening)

    @property
    def url(self) -> str:
        return f"ws://{self.addr}/ws"

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (sessions' bindings stay in Redis)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        """Starts the same hub again on the same address."""
        self.args[self.args.index("--listen") + 1] = self.addr
        end = time.monotonic() + DEADLINE
        while True:
            try:
                self._start()
                return
            except AssertionError:
                # The port may not be free again yet.
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def hubs() -> Iterator[Callable[..., Hub]]:
    started: list[Hub] = []

    def start(redis: RedisServer, *extra: str) -> Hub:
        hub = Hub(redis, "127.0.0.1:0", *extra)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def hub(redis: RedisServer, hubs: Callable[..., Hub]) -> Hub:
    return hubs(redis)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def next_event(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(events.__anext__(), DEADLINE)


# ---------------------------------------------------------------------------- tests


async def test_three_agents_vote_and_all_see_the_decision(hub: Hub) -> None:
    decision = name("deploy")
    clients = [Client(hub.url, instance_id=f"agent-{n}", roles=["worker"],
                      metadata={"n": n}) for n in range(3)]
    for client in clients:
        await client.connect()
    try:
        streams = [client.decisions() for client in clients]
        first = await clients[0].vote(decision, "approve", total_instances=3)
        assert first == {"voted": True, "quorumReached": False, "voteCount": 1}
        second = await clients[1].vote(decision, "approve")
        assert second["quorumReached"] is True, second
        assert second["finalDecision"] == "approve"
        seen = [await next_event(stream) for stream in streams]
        for event in seen:
            assert event["event"] == "quorum.decision.made"
            assert event["decision"] == decision
            assert event["value"] == "approve"
            assert event["voteCount"] == 2 and event["quorum"] == 2
            assert event["totalInstances"] == 3
        assert len({event["eventId"] for event in seen}) == 1
        assert all(c.last_event_id == seen[0]["eventId"] for c in clients)

        # The third vote is not recorded: it is answered with the final decision.
        late = await clients[2].vote(decision, "deny")
        assert late["voted"] is False and late["reason"] == "decided", late
        again = await clients[0].vote(decision, "approve")
        assert again["reason"] == "already_voted" and again["recordedValue"] == "approve"

        status = await clients[2].status(decision)
        assert status["finalDecision"] == "approve" and status["state"] == "decided"
        assert [v["instanceId"] for v in status["votes"]] == ["agent-0", "agent-1"]
        state = await clients[0].state(limit=10)
        registered = {i["instanceId"]: i for i in state["instances"]}
        assert set(registered) >= {"agent-0", "agent-1", "agent-2"}
        assert registered["agent-2"]["roles"] == ["worker"]
        assert registered["agent-2"]["metadata"] == {"n": 2}
    finally:
        for client in clients:
            await client.close()


async def test_an_expired_decision_is_delivered_tagged(hub: Hub) -> None:
    decision = name("expiring")
    async with Client(hub.url, instance_id="lonely") as client:
        events = client.decisions()
        reply = await client.vote(decision, "approve", total_instances=3, close_after_ms=200)
        assert reply["voted"] is True
        event = await next_event(events)
        assert event["event"] == "quorum.decision.expired"
        assert event["decision"] == decision
        assert event["tally"] == {"approve": 1}
        assert "value" not in event


async def test_errors_are_typed(redis: RedisServer, hubs: Callable[..., Hub]) -> None:
    hub = hubs(redis)
    async with Client(hub.url, instance_id="typed") as client:
        with pytest.raises(InvalidParams) as bad:
            await client.vote("has space", "approve", total_instances=1)
        assert bad.value.code == -32602 and bad.value.field == "decision"
        assert bad.value.message and isinstance(bad.value.data, dict)

        decision = name("total")
        await client.vote(decision, "x", total_instances=5)
        with pytest.raises(InvalidParams) as conflict:
            async with Client(hub.url, instance_id="typed-2") as other:
                await other.vote(decision, "x", total_instances=4)
        assert conflict.value.field == "totalInstances"

        with pytest.raises(DecisionNotFound) as missing:
            await client.status(name("nothing"))
        assert missing.value.code == -32004

        with pytest.raises(InvalidParams) as typo:
            await client.state(limitt=3)
        assert typo.value.field == "limitt"

        with pytest.raises(RpcError) as unknown:
            await client.call("system.nope")
        assert unknown.value.code == -32601

    # Another session holds the instance: registering fails at connect.
    async with Client(hub.url, instance_id="held"):
        with pytest.raises(Unauthorized) as held:
            async with Client(hub.url, instance_id="held"):
                pass
        assert held.value.code == -32002 and NotRegistered is Unauthorized

    # A session without an instance cannot vote as one.
    async with Client(hub.url) as anonymous:
        with pytest.raises(NotRegistered):
            await anonymous.call("system.quorum.vote",
                                 {"instanceId": "nobody", "decision": "d", "value": "v"})
        with pytest.raises(ValueError):
            await anonymous.vote("d", "v")

    # Rate limited: a hub allowing one recorded vote per minute per instance.
    limited = hubs(redis, "--vote-rate-limit", "1/60s")
    async with Client(limited.url, instance_id="eager") as client:
        await client.vote(name("one"), "a", total_instances=3)
        with pytest.raises(RateLimited) as limit:
            await client.vote(name("two"), "a", total_instances=3)
        assert limit.value.code == -32000
        assert limit.value.retry_after_ms is not None and limit.value.retry_after_ms > 0


async def test_a_call_while_the_hub_is_down_waits_then_fails_clearly(hub: Hub) -> None:
    client = Client(hub.url, instance_id="patient", reconnect_wait=0.5, max_backoff=0.2)
    async with client:
        hub.kill()
        await eventually("the client to notice the drop", lambda: not client.connected)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionLost):
            await client.status("anything")
        assert asyncio.get_running_loop().time() - started >= 0.4

        # A call made while disconnected goes through once the hub is back in time.
        client.reconnect_wait = DEADLINE
        pending = asyncio.create_task(client.state())
        await asyncio.sleep(0)
        hub.restart()
        state = await asyncio.wait_for(pending, DEADLINE)
        assert "hub" in state


async def test_a_hub_restart_mid_stream_loses_and_doubles_nothing(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis)  # the one the client uses, killed and restarted
    other = hubs(redis)  # where decisions keep being made meanwhile
    prefix = name("stream")
    total = 60
    made: list[str] = []

    async with Client(hub.url, instance_id="survivor", max_backoff=0.5) as client, \
            Client(other.url, instance_id="maker") as maker:
        events = client.decisions()

        async def produce() -> None:
            for n in range(total):
                decision = f"{prefix}-{n:03}"
                reply = await maker.vote(decision, "go", total_instances=1)
                assert reply["quorumReached"] is True, reply
                made.append(decision)
                await asyncio.sleep(0.01)  # pacing, so the restart lands mid-stream

        producer = asyncio.create_task(produce())
        received: list[dict[str, Any]] = []

        async def receive_until(count: int) -> None:
            while len(received) < count:
                event = await next_event(events)
                assert event["event"] == "quorum.decision.made", event
                if event["decision"].startswith(prefix):
                    received.append(event)

        await receive_until(10)
        connections = client.connections
        hub.kill()
        # Decisions go on while the client's hub is away.
        await eventually("the client to notice the drop", lambda: not client.connected)
        await eventually("decisions while the hub is down", lambda: len(made) >= 30)
        hub.restart()
        await receive_until(total)
        await asyncio.wait_for(producer, DEADLINE)

        assert [e["decision"] for e in received] == made
        ids = [parse_event_id(e["eventId"]) for e in received]
        assert all(a is not None and b is not None and a < b for a, b in zip(ids, ids[1:]))

        # It registered again: it votes as its instance and sees its decision, once.
        after = name("after")
        reply = await client.vote(after, "c", total_instances=1)
        assert reply["voted"] is True, reply
        assert client.connections > connections
        event = await next_event(events)
        assert event["decision"] == after
        last = name("last")
        await maker.vote(last, "d", total_instances=1)
        event = await next_event(events)
        assert event["decision"] == last
        assert client.last_event_id == event["eventId"]


async def test_a_client_resumes_from_since_and_is_told_of_gaps(hub: Hub) -> None:
    async with Client(hub.url, instance_id="early") as maker:
        events = maker.decisions()
        ids = []
        for n in range(3):
            await maker.vote(f"since-{n}", "v", total_instances=1)
            ids.append((await next_event(events))["eventId"])
    # A client starting after the first event gets the two after it, in order.
    async with Client(hub.url, since=ids[0]) as late:
        events = late.decisions()
        assert (await next_event(events))["decision"] == "since-1"
        assert (await next_event(events))["decision"] == "since-2"
    # A cursor from another Redis: the hub says so, and the client follows the hub.
    async with Client(hub.url, since="99999999999999-0", instance_id="ahead") as ahead:
        events = ahead.decisions()
        notice = await next_event(events)
        assert notice["event"] == "system.events.incomplete" and notice["reason"] == "ahead"
        await ahead.vote(name("fresh"), "v", total_instances=1)
        event = await next_event(events)
        assert event["event"] == "quorum.decision.made"


async def test_token_is_sent_as_a_bearer_header_or_in_the_query(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    secret = "s" * 64
    hub = hubs(redis, "--auth-secret", secret)

    def mint(sub: str) -> str:
        out = subprocess.run(
            [str(hub_binary()), "token", "--sub", sub, "--ttl", "1h"],
            env={**os.environ, "QUORUM_AUTH_SECRET": secret},
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    with pytest.raises(ConnectionLost, match="401"):
        async with Client(hub.url, instance_id="anon"):
            pass
    async with Client(hub.url, instance_id="tok-1", token=mint("tok-1")) as client:
        assert (await client.vote(name("t"), "v", total_instances=1))["voted"]
    async with Client(hub.url, instance_id="tok-2", token=lambda: mint("tok-2"),
                      token_in_query=True) as client:
        assert (await client.vote(name("t"), "v", total_instances=1))["voted"]
