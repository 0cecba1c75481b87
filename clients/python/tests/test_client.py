"""Tests of the Python client against a real hub and a real Redis.

Needs `redis-server` on PATH (or QUORUM_REDIS_SERVER) and the hub binary, by default
`target/debug/quorum-hub` at the repository's root (or QUORUM_HUB_BIN); it is built with
`cargo build` when missing. Every wait polls with a deadline; none sleeps a fixed time to
wait for something.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from quorum_hub import (
    EVENT_BUFFER,
    BackendUnavailable,
    CircuitOpen,
    Client,
    ConnectionLost,
    DecisionNotFound,
    InvalidParams,
    InvalidRequest,
    NotRegistered,
    RateLimited,
    RpcError,
    Unauthorized,
    backoff_delay,
    parse_event_id,
    token_expiry_ms,
)

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parents[1]
EXAMPLES = PACKAGE / "examples"
DEADLINE = 20.0
T = TypeVar("T")


# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
    """A private redis-server on a free port; `persistent` keeps every write in an
    append-only file (fsync always), so a killed server restarts with its data."""

    def __init__(self, tmp: Path, persistent: bool = False) -> None:
        binary = os.environ.get("QUORUM_REDIS_SERVER") or shutil.which("redis-server")
        if not binary:
            pytest.fail("redis-server is not installed (make test installs it)")
        self.port = free_port()
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--dir", str(tmp)]
        self.args += (["--appendonly", "yes", "--appendfsync", "always"] if persistent
                      else ["--appendonly", "no"])
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until("redis-server to answer", self._pong)

    def _pong(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
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
        """SIGKILL."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self._start()


def hub_binary() -> Path:
    binary = Path(os.environ.get("QUORUM_HUB_BIN", REPO / "target" / "debug" / "quorum-hub"))
    if not binary.exists():
        subprocess.run(["cargo", "build"], cwd=REPO, check=True)
    return binary


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Lines:
    """Collects a process's output lines in a thread, so a test can poll for them."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(_ANSI.sub("", line.rstrip("\n")))

    def wait_for(self, pattern: str, deadline: float = DEADLINE) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            return None

        try:
            return wait_until(f"a line matching {pattern!r}", found, deadline)
        except AssertionError as err:
            raise AssertionError(f"{err}; output so far:\n" + "\n".join(self.lines)) from None

    def join(self, timeout: float = DEADLINE) -> None:
        self._thread.join(timeout)


class Hub:
    """A quorum-hub process; `addr` is the address it logged. `extra` holds options with
    their values (flag, value, ...); `flags`, options that take none."""

    def __init__(self, redis: RedisServer, listen: str = "127.0.0.1:0", *extra: str,
                 flags: tuple[str, ...] = ()) -> None:
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
        self.args += flags
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self.output = Lines(self.proc.stdout)

        def listening() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError("the hub exited:\n" + "\n".join(self.output.lines))
            for line in list(self.output.lines):
                match = re.search(r"listening on (\S+)", line)
                if match:
                    return match.group(1)
            return None

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


SECRET = "test-secret-" + "x" * 32


def jwt(sub: str, exp: int, secret: str = SECRET, roles: list[str] | None = None) -> str:
    """An HS256 token as the hub mints them (`quorum-hub token`), with any `exp`, granting
    `roles` (none when not given)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims: dict[str, object] = {"sub": sub, "exp": exp, "iat": exp - 60}
    if roles:
        claims["roles"] = roles
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def short_exp() -> int:
    """An `exp` that the hub's 5 s leeway still admits for 1-2 s: a session opened with
    it ends 1-2 s from now (at exp + 5 s), and an upgrade with it fails after that."""
    return int(time.time()) - 3


# ---------------------------------------------------------------------------- voting


def test_the_constructor_takes_the_documented_arguments_in_order() -> None:
    params = list(inspect.signature(Client).parameters)
    assert params[:5] == ["url", "instance_id", "token", "roles", "metadata"]
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/ws", token="t", token_provider=lambda: "t")
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/ws", since="not-an-id")


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
        assert second == {"voted": True, "quorumReached": True, "finalDecision": "approve",
                          "voteCount": 2}
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
        assert late["finalDecision"] == "approve"
        again = await clients[0].vote(decision, "approve")
        assert again["reason"] == "already_voted" and again["recordedValue"] == "approve"

        status = await clients[2].status(decision)
        assert status["finalDecision"] == "approve" and status["state"] == "decided"
        assert status["voteCount"] == 2 and status["tally"] == {"approve": 2}
        assert [v["instanceId"] for v in status["votes"]] == ["agent-0", "agent-1"]
        state = await clients[0].state(limit=10)
        registered = {i["instanceId"]: i for i in state["instances"]}
        assert set(registered) == {"agent-0", "agent-1", "agent-2"}
        assert registered["agent-2"]["roles"] == ["worker"]
        assert registered["agent-2"]["metadata"] == {"n": 2}
        assert [d["decision"] for d in state["decisions"]] == [decision]
        page = await clients[0].state(limit=1)
        assert len(page["instances"]) == 1 and page["nextInstances"] is not None
        rest = await clients[0].state(limit=10, instances_after=page["nextInstances"])
        assert [i["instanceId"] for i in page["instances"] + rest["instances"]] == [
            "agent-0", "agent-1", "agent-2"]
    finally:
        for client in clients:
            await client.close()
    # Each stream ends once its client is closed.
    for stream in streams:
        with pytest.raises(StopAsyncIteration):
            await next_event(stream)


async def test_an_expired_decision_is_delivered_tagged(hub: Hub) -> None:
    decision = name("expiring")
    async with Client(hub.url, instance_id="lonely") as client:
        events = client.decisions()
        reply = await client.vote(decision, "approve", total_instances=3, close_after_ms=200)
        assert reply == {"voted": True, "quorumReached": False, "voteCount": 1}
        event = await next_event(events)
        assert event["event"] == "quorum.decision.expired"
        assert event["decision"] == decision
        assert event["tally"] == {"approve": 1}
        assert event["voteCount"] == 1 and event["quorum"] == 2
        assert "value" not in event
        assert client.last_event_id == event["eventId"]
        status = await client.status(decision)
        assert status["state"] == "expired" and "finalDecision" not in status
        async with Client(hub.url, instance_id="too-late") as other:
            late = await other.vote(decision, "approve")
        assert late["voted"] is False and late["reason"] == "expired", late


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

        # No secret: there is no token to refresh.
        with pytest.raises(InvalidRequest) as no_auth:
            await client.refresh_token("anything")
        assert no_auth.value.code == -32600

    # Another session holds the instance: registering fails at connect.
    async with Client(hub.url, instance_id="held"):
        with pytest.raises(Unauthorized) as held:
            async with Client(hub.url, instance_id="held"):
                pass
        assert held.value.code == -32002 and NotRegistered is Unauthorized

    # A session without an instance cannot vote as one.
    async with Client(hub.url) as anonymous:
        with pytest.raises(NotRegistered) as unregistered:
            await anonymous.call("system.quorum.vote",
                                 {"instanceId": "nobody", "decision": "d", "value": "v"})
        assert unregistered.value.code == -32002
        with pytest.raises(ValueError):
            await anonymous.vote("d", "v")

    # Rate limited: a hub allowing one recorded vote per minute per instance.
    limited = hubs(redis, "--vote-rate-limit", "1/60s")
    async with Client(limited.url, instance_id="eager") as client:
        await client.vote(name("one"), "a", total_instances=3)
        with pytest.raises(RateLimited) as limit:
            await client.vote(name("two"), "a", total_instances=3)
        assert limit.value.code == -32000
        assert limit.value.retry_after_ms is not None
        assert 0 < limit.value.retry_after_ms <= 60_000


async def test_a_policy_holds_voters_to_its_electorate_and_values(hub: Hub) -> None:
    decision = name("gated")
    async with Client(hub.url) as admin:
        policy = {"electorate": {"role": "deployer"}, "values": ["approve", "deny"]}
        assert await admin.set_policy(decision, policy) == {"pattern": decision, "done": "set"}
        listed = await admin.policies()
        assert listed["policies"][0]["policy"]["electorate"] == {"role": "deployer"}
        async with Client(hub.url, instance_id="py-d1", roles=["deployer"]) as voter, \
                Client(hub.url, instance_id="py-o1", roles=["watcher"]) as outsider:
            with pytest.raises(Unauthorized) as refused:
                await outsider.vote(decision, "approve")
            assert refused.value.code == -32002 and refused.value.reason == "not_in_electorate"
            with pytest.raises(InvalidParams) as value:
                await voter.vote(decision, "maybe")
            assert value.value.field == "value"
            reply = await voter.vote(decision, "approve")
            assert reply["quorumReached"] is True, reply
            status = await voter.status(decision)
            assert status["policy"]["electorate"] == {"role": "deployer", "members": ["py-d1"]}
        assert await admin.remove_policy(decision) == {"pattern": decision, "done": "removed"}
        with pytest.raises(DecisionNotFound):
            await admin.remove_policy(decision)


async def test_backend_errors_are_typed(redis: RedisServer, hubs: Callable[..., Hub]) -> None:
    hub = hubs(redis, "--breaker-failures", "3")
    async with Client(hub.url, instance_id="backend") as client:
        decision = name("backend")
        await client.vote(decision, "x", total_instances=3)
        redis.stop()
        # Three failures reach Redis and fail (-32005); then the breaker opens (-32001).
        unavailable: list[BackendUnavailable] = []
        while True:
            try:
                await client.status(decision)
            except BackendUnavailable as err:
                unavailable.append(err)
                assert len(unavailable) <= 3, "the breaker should be open by now"
            except CircuitOpen as err:
                circuit = err
                break
        assert [e.code for e in unavailable] == [-32005, -32005, -32005]
        assert circuit.code == -32001 and circuit.reason == "circuit_open"
        assert circuit.retry_after_ms is not None and 0 < circuit.retry_after_ms <= 30_000
        # A vote answers with the fallback instead of an error.
        reply = await client.vote(name("later"), "x", total_instances=3)
        assert reply == {"voted": False, "quorumReached": False, "reason": "circuit_open"}
        assert client.connected and client.connections == 1


# ---------------------------------------------------------------------------- disconnected


async def test_a_call_while_the_hub_is_down_waits_then_fails_clearly(hub: Hub) -> None:
    client = Client(hub.url, instance_id="patient", reconnect_wait=0.5, max_backoff=0.2)
    async with client:
        hub.kill()
        await eventually("the client to notice the drop", lambda: not client.connected)
        await eventually("a failed reconnection", lambda: client.connections == 1
                         and client.last_error and "cannot connect" in client.last_error)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectionLost) as lost:
            await asyncio.wait_for(client.status("anything"), DEADLINE)
        waited = loop.time() - started
        assert 0.45 <= waited < 2.0, waited  # bounded by reconnect_wait (0.5 s)
        message = str(lost.value)
        assert "system.quorum.status: not connected" in message and "after 0.5 s" in message
        assert "cannot connect" in message  # why: the last attempt's failure

        # A call made while disconnected goes through once the hub is back in time.
        client.reconnect_wait = DEADLINE
        pending = asyncio.create_task(client.state())
        await asyncio.sleep(0)
        assert not pending.done()
        hub.restart()
        state = await asyncio.wait_for(pending, DEADLINE)
        assert "hub" in state and client.connections == 2


async def test_a_call_in_flight_when_the_connection_drops_fails_at_once(hub: Hub) -> None:
    async with Client(hub.url, instance_id="inflight", call_timeout=DEADLINE) as client, \
            Client(hub.url, call_timeout=0.3) as impatient:
        hub.proc.send_signal(signal.SIGSTOP)  # the hub stops answering
        with pytest.raises(ConnectionLost, match="no reply within 0.3 s"):
            await impatient.status("anything")

        call = asyncio.create_task(client.status("anything"))
        await eventually("the call to be sent", lambda: client._pending)
        loop = asyncio.get_running_loop()
        killed = loop.time()
        hub.kill()
        with pytest.raises(ConnectionLost, match="dropped"):
            await asyncio.wait_for(call, DEADLINE)
        assert loop.time() - killed < 2.0  # at once, not after call_timeout (20 s)


# Linux TCP states, as /proc/net/tcp and sock_diag report them.
TCP_ESTABLISHED = 0x01
TCP_CLOSE_WAIT = 0x08  # the peer's FIN was received


def local_ports_to(port: int) -> list[int]:
    """The local ports of this host's established IPv4 TCP connections to port `port`."""
    found = []
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and int(fields[3], 16) == TCP_ESTABLISHED:
            found.append(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def loopback_socket(local_port: int, remote_port: int) -> tuple[int, int] | None:
    """The state of the TCP socket from 127.0.0.1:local_port to 127.0.0.1:remote_port, and
    the bytes it has received that its process has not read yet (a FIN counts one), asked
    of the kernel (sock_diag, in microseconds where /proc/net/tcp can take milliseconds);
    None once there is no such socket (it was reset)."""
    loopback = socket.inet_aton("127.0.0.1") + bytes(12)
    # struct inet_diag_req_v2: any state, the exact socket (no cookie).
    request = (struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
               + struct.pack("!HH", local_port, remote_port) + loopback + loopback
               + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))
    netlink_sock_diag, sock_diag_by_family, nlm_f_request, nlmsg_error = 4, 20, 1, 2
    header = struct.pack("=IHHII", 16 + len(request), sock_diag_by_family, nlm_f_request, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_sock_diag) as diag:
        diag.send(header + request)
        reply = diag.recv(8192)
    if struct.unpack_from("=IH", reply)[1] == nlmsg_error:
        return None
    # struct inet_diag_msg after the header: family, state, timer, retrans, the 48-byte
    # socket id, expires, rqueue (received, not read).
    state: int = reply[17]
    unread: int = struct.unpack_from("=I", reply, 16 + 56)[0]
    return state, unread


def test_many_callers_keep_the_event_loop_running_when_the_hub_is_killed(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    # The client and its 300 callers run in a process of their own (tests/crowd.py), so
    # that an event loop that stops turning fails this test instead of freezing it.
    # (The hub does not ping: the last frames the client reads are replies.)
    hub = hubs(redis, "--ping-interval", "0s")
    callers = 300
    crowd = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crowd.py")), hub.url, str(callers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    hub_port = int(hub.addr.rsplit(":", 1)[1])
    try:
        output = Lines(crowd.stdout)

        def expect(pattern: str, since: int = 0) -> re.Match[str]:
            """The first line from line `since` on matching `pattern`; fails at once if the
            crowd exits first."""
            def found() -> re.Match[str] | str | None:
                for line in output.lines[since:]:
                    match = re.search(pattern, line)
                    if match:
                        return match
                return None if crowd.poll() is None else f"exited with {crowd.returncode}"

            try:
                result = wait_until(f"a line matching {pattern!r}", found)
            except AssertionError as err:
                raise AssertionError(f"{err}; last output:\n"
                                     + "\n".join(output.lines[-60:])) from None
            if not isinstance(result, re.Match):
                output.join()
                raise AssertionError(
                    f"the crowd {result} before a line matching {pattern!r}; "
                    "its last output:\n" + "\n".join(output.lines[-60:]))
            return result

        expect(r"^ready$")  # every caller has had a reply; they go on calling
        # The hub's last replies and the end of its connection reach the client together:
        # the client reads the replies, the callers answered call again at once, and they
        # find the socket closed before the client's reader has seen the end. Lined up
        # here: the hub is paused until every caller waits for a reply (the client has
        # nothing else to do); the crowd is paused; the hub answers until a reply waits
        # unread, and is paused with only a few sent (past 16 unread frames the websockets
        # library pauses its reads, and the reader sees the end first), then killed; the
        # crowd resumes once the end of the connection has reached its socket.
        [crowd_port] = local_ports_to(hub_port)

        def unread() -> int:
            found = loopback_socket(crowd_port, hub_port)
            assert found is not None and found[0] == TCP_ESTABLISHED, found
            return found[1]

        def wait_unread(what: str, check: Callable[[int], bool]) -> None:
            """Polls every 0.1 ms: the hub answers about one call a millisecond."""
            end = time.monotonic() + DEADLINE
            while not check(unread()):
                assert time.monotonic() < end, f"timed out waiting for {what}"
                time.sleep(0.0001)

        few = 4096  # bytes: about ten replies
        for _ in range(20):
            hub.proc.send_signal(signal.SIGSTOP)
            wait_unread("the crowd to read every reply", lambda n: n == 0)
            expect(rf"^tick \d+ connected=1 in_flight={callers}$", len(output.lines))
            crowd.send_signal(signal.SIGSTOP)
            hub.proc.send_signal(signal.SIGCONT)
            wait_unread("a reply to the paused crowd", lambda n: n > 0)
            hub.proc.send_signal(signal.SIGSTOP)
            if unread() <= few:
                break
            # More than a few replies came before the hub stopped: again.
            crowd.send_signal(signal.SIGCONT)
            hub.proc.send_signal(signal.SIGCONT)
        else:
            raise AssertionError("the hub never stopped within a few replies")
        killed_at = len(output.lines)
        hub.kill()

        def end_received() -> bool:
            found = loopback_socket(crowd_port, hub_port)
            return found is None or found[0] == TCP_CLOSE_WAIT  # reset, or a FIN

        wait_until("the crowd's socket to receive the end of the connection", end_received)
        crowd.send_signal(signal.SIGCONT)
        # While the hub is down the loop turns: the client notices, the ticker goes on.
        down = int(expect(r"^tick (\d+) connected=0 ", killed_at).group(1))
        expect(rf"^tick {down + 20} connected=0 ", killed_at)
        restarted_at = len(output.lines)
        hub.restart()
        # And after: every caller has a reply on the new connection.
        up = int(expect(r"^tick (\d+) connected=1 ", restarted_at).group(1))
        assert up > down + 20
        done = expect(r"^done callers=(\d+) ok=(\d+) lost=(\d+) connections=(\d+)$",
                      restarted_at)
        assert crowd.wait(DEADLINE) == 0
        assert int(done.group(1)) == callers
        assert int(done.group(2)) >= 2 * callers  # one reply before the kill, one after
        # Only a call in flight when the connection dropped failed (ConnectionLost), at most
        # one per caller; the calls made after it waited for the new connection.
        assert int(done.group(3)) <= callers
        assert int(done.group(4)) == 2
    finally:
        if crowd.poll() is None:
            crowd.send_signal(signal.SIGCONT)
            crowd.kill()
        crowd.wait()


async def test_backoff_is_jittered_doubling_and_capped() -> None:
    rng = random.Random(7)
    delays = [[backoff_delay(attempt, 0.1, 2.0, rng) for _ in range(200)]
              for attempt in range(8)]
    for attempt, sample in enumerate(delays):
        ceiling = min(2.0, 0.1 * 2**attempt)
        assert all(ceiling / 2 <= d <= ceiling for d in sample), attempt
        assert len(set(sample)) == len(sample)  # jittered: no two clients in step
        assert max(sample) - min(sample) > ceiling / 4
    assert max(delays[7]) <= 2.0 and min(delays[7]) >= 1.0
    assert backoff_delay(10_000, 0.1, 2.0) <= 2.0  # no overflow


# ---------------------------------------------------------------------------- decisions


async def test_a_hub_restart_mid_stream_loses_and_doubles_nothing(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis)  # the one the client uses, killed and restarted
    other = hubs(redis)  # where decisions keep being made meanwhile
    prefix = name("stream")
    made: list[str] = []
    # The maker's own session never drops: what it receives is the log, in order.
    reference: list[dict[str, Any]] = []
    received: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async with Client(hub.url, instance_id="survivor", max_backoff=0.5) as client, \
            Client(other.url, instance_id="maker") as maker:

        async def collect(source: Client, into: list[dict[str, Any]]) -> None:
            async for event in source.decisions():
                if event.get("decision", "").startswith(prefix):
                    into.append(event)

        collectors = [asyncio.create_task(collect(client, received)),
                      asyncio.create_task(collect(maker, reference))]

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                decision = f"{prefix}-{n:04}"
                reply = await maker.vote(decision, "go", total_instances=1)
                assert reply["quorumReached"] is True, reply
                made.append(decision)
                n += 1
                await asyncio.sleep(0.01)  # a steady rate, not a wait for anything

        producer = asyncio.create_task(produce())
        await eventually("decisions delivered live", lambda: len(received) >= 10)
        hub.kill()
        at_kill = len(made)
        await eventually("the client to notice the drop", lambda: not client.connected)
        # An expiry while the client is away is in the log too, in its place.
        expiring = f"{prefix}-expiring"
        await maker.vote(expiring, "maybe", total_instances=3, close_after_ms=100)
        await eventually("the expiry", lambda: any(
            e["event"] == "quorum.decision.expired" for e in reference))
        await eventually("decisions while the hub is down", lambda: len(made) >= at_kill + 20)
        hub.restart()
        await eventually("the client to reconnect", lambda: client.connections == 2)
        at_reconnect = len(made)
        await eventually("decisions after the reconnection",
                         lambda: len(made) >= at_reconnect + 20)
        stop.set()
        await asyncio.wait_for(producer, DEADLINE)
        await eventually("every decision at the client",
                         lambda: len(received) >= len(made) + 1 and len(reference) >= len(made) + 1)

        # Exactly the log's events, in the log's order: no gap, no duplicate.
        def key(event: dict[str, Any]) -> tuple[str, str, str]:
            return event["event"], event["decision"], event["eventId"]

        assert [key(e) for e in received] == [key(e) for e in reference]
        assert [e["decision"] for e in received if e["event"] == "quorum.decision.made"] == made
        assert [e["decision"] for e in received
                if e["event"] == "quorum.decision.expired"] == [expiring]
        ids = [parse_event_id(e["eventId"]) for e in received]
        assert all(a is not None and b is not None and a < b for a, b in zip(ids, ids[1:]))
        assert at_reconnect - at_kill >= 20  # missed, then replayed
        assert len(made) - at_reconnect >= 20  # delivered live after the reconnection
        assert client.connections == 2

        # It registered again: it votes as its instance and sees its decision, once.
        after = f"{prefix}-after"
        reply = await client.vote(after, "c", total_instances=1)
        assert reply["voted"] is True, reply
        await eventually("its own decision at both", lambda: received[-1]["decision"] == after
                         and reference[-1]["decision"] == after)
        assert [key(e) for e in received] == [key(e) for e in reference]
        assert client.last_event_id == received[-1]["eventId"]
        for task in collectors:
            task.cancel()


async def test_a_client_that_has_seen_no_decision_yet_gets_those_made_while_it_was_away(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub, other = hubs(redis), hubs(redis)
    async with Client(other.url, instance_id="maker") as maker:
        # First on an empty event log, then on one that holds the first decision.
        for round_, waiting in enumerate(["waiter-1", "waiter-2"]):
            async with Client(hub.url, instance_id=waiting, max_backoff=0.3) as client:
                events = client.decisions()
                hub.kill()
                await eventually("the client to notice the drop", lambda: not client.connected)
                await maker.vote(f"while-away-{round_}", "v", total_instances=1)
                hub.restart()
                event = await next_event(events)
                assert (event["event"], event["decision"]) == (
                    "quorum.decision.made", f"while-away-{round_}"), event
                await maker.vote(f"after-{round_}", "v", total_instances=1)
                event = await next_event(events)
                assert event["decision"] == f"after-{round_}", event  # nothing in between
                await eventually("the client to register again",
                                 lambda: client.connections == 2)


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
        assert late.last_event_id == ids[2]
    # A cursor from another Redis: the hub says so, and the client follows the hub.
    async with Client(hub.url, since="99999999999999-0", instance_id="ahead") as ahead:
        events = ahead.decisions()
        notice = await next_event(events)
        assert notice["event"] == "system.events.incomplete" and notice["reason"] == "ahead"
        assert notice["since"] == ids[2]  # the newest event
        assert ahead.last_event_id == ids[2]
        await ahead.vote(name("fresh"), "v", total_instances=1)
        event = await next_event(events)
        assert event["event"] == "quorum.decision.made"


async def test_a_decision_event_is_passed_on_once_and_in_order() -> None:
    # The hub never sends a session an event twice; the client checks anyway, since a
    # repeat would be acted on twice. Fed directly, as a second hub or a replay would.
    client = Client("ws://127.0.0.1:1/ws")

    def made(event_id: str, decision: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "quorum.decision.made",
                "params": {"decision": decision, "value": "v", "eventId": event_id}}

    def expired(event_id: str, decision: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "quorum.decision.expired",
                "params": {"decision": decision, "tally": {}, "eventId": event_id}}

    def incomplete(reason: str, since: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "system.events.incomplete",
                "params": {"reason": reason, "since": since, "message": "m"}}

    for message in [made("10-0", "a"), made("10-0", "a"), expired("10-1", "b"),
                    made("9-5", "old"), made("10-1", "b"), made("11-0", "c"),
                    # The log went back: what follows continues from `since`.
                    incomplete("rewound", "5-0"), made("6-0", "d"), made("6-0", "d"),
                    incomplete("trimmed", "6-0"), made("7-0", "e")]:
        assert await client._dispatch(message) is False
    events = client.decisions()
    seen = [await next_event(events) for _ in range(client._events.qsize())]
    assert [(e["event"].rsplit(".", 1)[-1], e.get("decision", e.get("reason"))) for e in seen] == [
        ("made", "a"), ("expired", "b"), ("made", "c"), ("incomplete", "rewound"),
        ("made", "d"), ("incomplete", "trimmed"), ("made", "e")]
    assert client.last_event_id == "7-0"
    # An unreadable resume is passed on, and makes the client leave that session.
    assert await client._dispatch(incomplete("unreadable", "7-0")) is True
    assert (await next_event(events))["reason"] == "unreadable"


async def test_last_event_id_is_the_last_event_yielded(hub: Hub) -> None:
    async with Client(hub.url, instance_id="slow-reader") as client:
        events = client.decisions()
        for n in range(3):
            await client.vote(f"persist-{n}", "v", total_instances=1)
        await eventually("three events received", lambda: client._events.qsize() == 3)
        assert client.last_event_id is None  # received, not yet handed to the agent
        first = await next_event(events)
        assert client.last_event_id == first["eventId"]
    # An agent that persisted it and restarts gets the two it had not handled.
    async with Client(hub.url, since=first["eventId"]) as restarted:
        events = restarted.decisions()
        assert [(await next_event(events))["decision"] for _ in range(2)] == [
            "persist-1", "persist-2"]


async def test_an_agent_that_does_not_read_its_events_holds_at_most_event_buffer(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    # The Rust client's bound, which the Python client mirrors.
    rust = (REPO / "src" / "client.rs").read_text()
    assert f"pub const EVENT_BUFFER: usize = {EVENT_BUFFER};" in rust
    hub = hubs(redis)
    prefix = name("unread")
    made: list[str] = []
    reference: list[dict[str, Any]] = []  # what an agent that reads receives: the log
    evicted = "slow consumer: closing session"
    # Four makers: a session's calls run one after the other.
    async with Client(hub.url, instance_id="deaf", max_backoff=0.2) as deaf, \
            Client(hub.url, instance_id="maker-0") as maker, \
            Client(hub.url, instance_id="maker-1") as maker_1, \
            Client(hub.url, instance_id="maker-2") as maker_2, \
            Client(hub.url, instance_id="maker-3") as maker_3:
        makers = [maker, maker_1, maker_2, maker_3]

        async def collect(source: Client, into: list[dict[str, Any]] | None) -> None:
            async for event in source.decisions():
                if into is not None and event.get("decision", "").startswith(prefix):
                    into.append(event)

        # Every maker reads its events; the first keeps them, as the log's order.
        collectors = [asyncio.create_task(collect(m, reference if m is maker else None))
                      for m in makers]
        stop = asyncio.Event()
        held = [0]  # the most events the deaf agent's client held, after each vote

        async def produce(source: Client, n: int) -> None:
            k = 0
            while not stop.is_set():
                decision = f"{prefix}-{n}-{k:05}"
                reply = await source.vote(decision, "go", total_instances=1)
                assert reply["quorumReached"] is True, reply
                made.append(decision)
                k += 1
                held[0] = max(held[0], deaf._events.qsize())

        producers = [asyncio.create_task(produce(m, n)) for n, m in enumerate(makers)]
        await eventually("the deaf agent's client to hold EVENT_BUFFER events",
                         lambda: held[0] >= EVENT_BUFFER)
        full_at = len(made)
        await eventually("more events after that", lambda: len(reference) >= full_at + 50)
        # However many events wait, the client holds at most EVENT_BUFFER.
        assert (held[0], deaf._events.qsize()) == (EVENT_BUFFER, EVENT_BUFFER)
        # At the bound the client stops reading its connection: a reply waits behind
        # the events that came before it.
        deaf.call_timeout = 0.5
        with pytest.raises(ConnectionLost, match="no reply within 0.5 s"):
            await deaf.status(made[0])
        # The hub's own queue for the session fills in turn, and it closes the session.
        await eventually("the hub to close the session that does not read",
                         lambda: any(evicted in line for line in hub.output.lines),
                         deadline=60.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*producers), DEADLINE)
        assert (held[0], deaf._events.qsize()) == (EVENT_BUFFER, EVENT_BUFFER)
        assert deaf.connections == 1
        assert all(m.connections == 1 for m in makers)
        assert sum(evicted in line for line in hub.output.lines) == 1  # the deaf one only
        await eventually("every decision at the reading agent",
                         lambda: len(reference) == len(made))

        # Once the agent reads, it receives every decision, once, in the log's order:
        # those it held, those still in its socket, and, after it resumes on a new
        # connection, those the hub could not deliver.
        deaf.call_timeout = DEADLINE
        received: list[dict[str, Any]] = []
        events = deaf.decisions()
        while len(received) < len(made):
            event = await next_event(events)
            if event.get("decision", "").startswith(prefix):
                received.append(event)

        def key(event: dict[str, Any]) -> tuple[str, str, str]:
            return event["event"], event["decision"], event["eventId"]

        assert [key(e) for e in received] == [key(e) for e in reference]
        assert sorted(e["decision"] for e in received) == sorted(made)
        # The replayed events come before the reply to the new connection's registration.
        await eventually("the new connection to be registered", lambda: deaf.connected)
        assert deaf.connections == 2
        assert deaf.last_event_id == reference[-1]["eventId"]
        assert (await deaf.status(made[0]))["state"] == "decided"  # calls are answered again
        for task in collectors:
            task.cancel()


async def test_a_full_client_that_closes_passes_on_what_it_held_then_ends() -> None:
    client = Client("ws://127.0.0.1:1/ws")
    for n in range(EVENT_BUFFER):
        event = {"jsonrpc": "2.0", "method": "quorum.decision.made",
                 "params": {"decision": f"d-{n}", "value": "v", "eventId": f"{n + 1}-0"}}
        assert await client._dispatch(event) is False
    assert client._events.full()
    await client.close()
    seen = [event["decision"] async for event in client.decisions()]
    assert seen == [f"d-{n}" for n in range(EVENT_BUFFER)]
    assert [event async for event in client.decisions()] == []  # ended, and stays so


async def test_an_unreadable_resume_is_resumed_again(
    tmp_path: Path, hubs: Callable[..., Hub]
) -> None:
    redis = RedisServer(tmp_path, persistent=True)
    try:
        hub, other = hubs(redis), hubs(redis)
        # A client without an instance (a dashboard): nothing else fails while Redis is
        # away, so only the resume's notice tells it that it missed something.
        async with Client(hub.url, max_backoff=0.3) as watcher, \
                Client(other.url, instance_id="maker", reconnect_wait=DEADLINE) as maker:
            events = watcher.decisions()
            await maker.vote("before", "v", total_instances=1)
            assert (await next_event(events))["decision"] == "before"
            hub.kill()
            await maker.vote("missed", "v", total_instances=1)
            redis.stop()
            hub.restart()
            notice = await next_event(events)
            assert notice["event"] == "system.events.incomplete", notice
            assert notice["reason"] == "unreadable"
            redis.restart()

            async def vote_live() -> dict[str, Any]:
                try:
                    return await maker.vote("live", "v", total_instances=1)
                except (BackendUnavailable, CircuitOpen):
                    return {}

            await eventually("a vote once Redis is back", vote_live)
            decisions: list[str] = []
            while len(decisions) < 2:
                event = await next_event(events)
                if event["event"] == "system.events.incomplete":
                    assert event["reason"] == "unreadable", event  # while Redis was away
                else:
                    decisions.append(event["decision"])
            assert decisions == ["missed", "live"]
    finally:
        redis.stop()


async def test_subscribe_and_unsubscribe(hub: Hub) -> None:
    decision = name("watched")
    async with Client(hub.url, max_backoff=0.2) as watcher:
        reply = await watcher.subscribe(["quorum.vote.recorded", "instance.*"])
        assert reply == {"subscribed": ["quorum.vote.recorded", "instance.*"]}
        events = watcher.decisions()

        async def voter_session(instance: str, value: str) -> list[dict[str, Any]]:
            async with Client(hub.url, instance_id=instance, roles=["r"], metadata={"k": 1}) \
                    as voter:
                registered = await next_event(events)
                await voter.vote(decision, value, total_instances=9)
                recorded = await next_event(events)
            return [registered, recorded, await next_event(events)]

        registered, recorded, gone = await voter_session("voter-1", "yes")
        assert registered["event"] == "instance.registered"
        assert (registered["instanceId"], registered["roles"], registered["metadata"],
                registered["status"]) == ("voter-1", ["r"], {"k": 1}, "online")
        assert recorded == {"event": "quorum.vote.recorded", "decision": decision,
                            "instanceId": "voter-1", "value": "yes", "voteCount": 1,
                            "quorum": 5, "totalInstances": 9}
        assert gone == {"event": "instance.unregistered", "instanceId": "voter-1",
                        "reason": "disconnected"}

        # After a hub restart the client subscribes again by itself.
        hub.kill()
        hub.restart()
        await eventually("the watcher to reconnect", lambda: watcher.connections == 2)
        registered, recorded, gone = await voter_session("voter-2", "no")
        assert [registered["event"], registered["instanceId"]] == ["instance.registered",
                                                                   "voter-2"]
        assert (recorded["event"], recorded["value"], recorded["voteCount"]) == (
            "quorum.vote.recorded", "no", 2)
        assert (gone["event"], gone["instanceId"]) == ("instance.unregistered", "voter-2")

        assert await watcher.unsubscribe(["quorum.vote.recorded"]) == {
            "subscribed": ["instance.*"]}
        async with Client(hub.url, instance_id="voter-3") as voter:
            await voter.vote(decision, "yes")
        # The vote between them is not passed on any more.
        kinds = [(await next_event(events))["event"] for _ in range(2)]
        assert kinds == ["instance.registered", "instance.unregistered"]

        # Reconnected again: the unsubscribed event stays off.
        hub.kill()
        hub.restart()
        await eventually("the watcher to reconnect", lambda: watcher.connections == 3)
        async with Client(hub.url, instance_id="voter-4") as voter:
            await voter.vote(decision, "yes")
        kinds = [(await next_event(events))["event"] for _ in range(2)]
        assert kinds == ["instance.registered", "instance.unregistered"]


# ---------------------------------------------------------------------------- tokens


def test_token_expiry_is_read_from_the_token() -> None:
    assert token_expiry_ms(jwt("a", 1_800_000_000)) == 1_800_000_000_000
    assert token_expiry_ms("not-a-jwt") is None
    assert token_expiry_ms("a.b.c") is None


async def test_token_is_sent_as_a_bearer_header_or_in_the_query(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis, "--auth-secret", SECRET)

    def mint(sub: str) -> str:
        out = subprocess.run(
            [str(hub_binary()), "token", "--sub", sub, "--ttl", "1h"],
            env={**os.environ, "QUORUM_AUTH_SECRET": SECRET},
            capture_output=True, text=True, check=True,
        )
        return out.stdout.strip()

    with pytest.raises(ConnectionLost, match="401"):
        async with Client(hub.url, instance_id="anon"):
            pass
    async with Client(hub.url, instance_id="tok-1", token=mint("tok-1")) as client:
        assert (await client.vote(name("t"), "v", total_instances=1))["voted"]
        expires = client.token_expires_at
        assert expires is not None and abs(expires - (time.time() + 3600) * 1000) < 5_000
        # A token for another instance may not act as this one.
        with pytest.raises(Unauthorized):
            await client.call("system.quorum.vote", {"instanceId": "tok-2", "decision": "d",
                                                     "value": "v"})
    async with Client(hub.url, instance_id="tok-2", token_provider=lambda: mint("tok-2"),
                      token_in_query=True) as client:
        assert (await client.vote(name("t"), "v", total_instances=1))["voted"]


async def test_a_fixed_token_that_expires_ends_the_session(
    redis: RedisServer, hubs: Callable[..., Hub], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quorum_hub")
    hub = hubs(redis, "--auth-secret", SECRET)
    exp = short_exp()
    client = Client(hub.url, instance_id="fixed", token=jwt("fixed", exp), reconnect_wait=0.3,
                    max_backoff=0.2)
    async with client:
        assert client.token_expires_at == exp * 1000
        await eventually("the hub to end the session", lambda: not client.connected, 10)
        assert time.time() >= exp + 5 - 0.5  # not before exp plus the hub's leeway
        await eventually("the reconnection to be refused",
                         lambda: "HTTP 401" in (client.last_error or ""))
        with pytest.raises(ConnectionLost, match="HTTP 401"):
            await client.status("anything")
    assert any("code 1008 (token expired)" in r.getMessage() for r in caplog.records)


async def test_a_token_provider_extends_the_session_before_it_expires(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis, "--auth-secret", SECRET)
    first_exp = short_exp()
    issued: list[int] = []

    def provider() -> str:
        exp = first_exp if not issued else int(time.time()) + 3600
        issued.append(exp)
        return jwt("extended", exp)

    async with Client(hub.url, instance_id="extended", token_provider=provider) as client:
        await eventually("the session to be extended",
                         lambda: len(issued) == 2 and client.token_expires_at == issued[1] * 1000)
        # Past the end of the first token's session (exp plus the leeway), the session
        # is the same one, and votes.
        await eventually("the first token's session end to pass",
                         lambda: time.time() > first_exp + 5 + 1.0)
        assert client.connected and client.connections == 1
        assert (await client.vote(name("still"), "v", total_instances=1))["voted"]
        assert client.connections == 1
        assert len(issued) == 2  # the new token has an hour: nothing asked since


async def test_a_token_provider_gives_each_reconnection_a_fresh_token(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis, "--auth-secret", SECRET)
    issued: list[int] = []

    async def provider() -> str:  # an async provider, e.g. asking an identity service
        await asyncio.sleep(0)
        issued.append(short_exp())  # each token opens a session for 1-2 s only
        return jwt("rotating", issued[-1])

    async with Client(hub.url, instance_id="rotating", token_provider=provider,
                      max_backoff=0.3) as client:
        hub.kill()
        held = list(issued)
        # Every token the client had before the crash is past the leeway: an upgrade
        # with any of them is refused, so the reconnection needs a fresh one.
        await eventually("the old tokens to be dead", lambda: time.time() > max(held) + 5.5)
        before_restart = len(issued)
        hub.restart()
        await eventually("the client to reconnect", lambda: client.connections == 2)
        assert len(issued) > before_restart
        assert client.token_expires_at is not None
        assert client.token_expires_at > max(held) * 1000
        assert (await client.vote(name("back"), "v", total_instances=1))["voted"]


async def test_refresh_token_extends_the_session_and_the_next_connection(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    hub = hubs(redis, "--auth-secret", SECRET)
    exp = short_exp()
    async with Client(hub.url, instance_id="manual", token=jwt("manual", exp),
                      max_backoff=0.3) as client:
        later = int(time.time()) + 600
        assert await client.refresh_token(jwt("manual", later)) == {"expiresAt": later * 1000}
        assert client.token_expires_at == later * 1000
        # An older token never shortens the session.
        assert await client.refresh_token(jwt("manual", later - 60)) == {
            "expiresAt": later * 1000}
        # A token for another instance, or signed with another secret, is refused; the
        # session goes on.
        with pytest.raises(Unauthorized) as other:
            await client.refresh_token(jwt("someone-else", later))
        assert other.value.code == -32002
        with pytest.raises(Unauthorized):
            await client.refresh_token(jwt("manual", later, secret="another-secret-0123456789"))
        with pytest.raises(ValueError):
            await client.refresh_token()  # no provider to ask
        assert client.token_expires_at == later * 1000

        # Past the first token's end the session goes on, and a reconnection (the first
        # token is dead by then) uses the refreshed one.
        await eventually("the first token's end to pass", lambda: time.time() > exp + 5 + 0.5)
        assert client.connected and client.connections == 1
        hub.kill()
        hub.restart()
        await eventually("the client to reconnect", lambda: client.connections == 2)
        assert (await client.vote(name("manual"), "v", total_instances=1))["voted"]


# ---------------------------------------------------------------------------- examples


def run_example(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=EXAMPLES)


def test_the_three_agents_example(hub: Hub) -> None:
    decision = name("example")
    proc = run_example("three_agents.py", hub.url, "--decision", decision)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert [line for line in lines if " voted: " in line] == [
        "agent-1 voted: {'voted': True, 'quorumReached': False, 'voteCount': 1}",
        "agent-2 voted: {'voted': True, 'quorumReached': True, 'finalDecision': 'approve', "
        "'voteCount': 2}",
        "agent-3 voted: {'voted': False, 'quorumReached': True, 'finalDecision': 'approve', "
        "'voteCount': 2, 'reason': 'decided'}",
    ], out
    saw = sorted(line for line in lines if line.startswith("agent-") and " saw " in line)
    pattern = rf"agent-(\d) saw {decision} -> approve \(2/3 votes, event (\d+-\d+)\)"
    matches = [re.fullmatch(pattern, line) for line in saw]
    assert all(matches) and len(matches) == 3, out
    assert [m.group(1) for m in matches if m] == ["1", "2", "3"]
    assert len({m.group(2) for m in matches if m}) == 1  # one event, seen by all three
    assert lines[-1] == f"all 3 agents saw {decision} -> approve"
    assert len(lines) == 7, out


def test_the_readme_agent_example(hub: Hub) -> None:
    source = (EXAMPLES / "agent.py").read_text()
    readme = (PACKAGE / "README.md").read_text()
    assert f"```python\n{source}```" in readme, "README.md must show examples/agent.py as is"

    decision = name("readme")
    agents: list[tuple[subprocess.Popen[str], Lines]] = []
    try:
        def start(instance: str) -> Lines:
            proc = run_example("agent.py", hub.url, instance, "--decision", decision)
            lines = Lines(proc.stdout)
            agents.append((proc, lines))
            return lines

        first = start("agent-1")
        first.wait_for(r"^agent-1 voted: \{'voted': True, 'quorumReached': False, "
                       r"'voteCount': 1\}$")
        second = start("agent-2")
        second.wait_for(r"^agent-2 voted: \{'voted': True, 'quorumReached': True, "
                        r"'finalDecision': 'approve', 'voteCount': 2\}$")
        second.wait_for(rf"^agent-2: {decision} -> approve$")
        first.wait_for(rf"^agent-1: {decision} -> approve \(2/3 votes\)$")
        third = start("agent-3")
        third.wait_for(r"^agent-3 voted: \{'voted': False, 'quorumReached': True, "
                       r"'finalDecision': 'approve', 'voteCount': 2, 'reason': 'decided'\}$")
        third.wait_for(rf"^agent-3: {decision} -> approve$")
        for proc, lines in agents:
            assert proc.wait(DEADLINE) == 0, lines.lines
            lines.join()
            assert len(lines.lines) == 2, lines.lines
    finally:
        for proc, _ in agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_readme_agent_example_with_a_token_file(
    redis: RedisServer, hubs: Callable[..., Hub], tmp_path: Path
) -> None:
    hub = hubs(redis, "--auth-secret", SECRET)
    token_file = tmp_path / "token"
    # The example registers with the role "worker": its token grants it.
    token_file.write_text(jwt("agent-9", int(time.time()) + 600, roles=["worker"]) + "\n")
    decision = name("with-token")
    proc = subprocess.Popen(
        [sys.executable, "agent.py", hub.url, "agent-9", "--decision", decision, "--total", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=EXAMPLES,
        env={**os.environ, "QUORUM_TOKEN_FILE": str(token_file)},
    )
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, out
    assert out.splitlines() == [
        "agent-9 voted: {'voted': True, 'quorumReached': True, 'finalDecision': 'approve', "
        "'voteCount': 1}",
        f"agent-9: {decision} -> approve",
    ]
    # Without the file the hub refuses it.
    proc = run_example("agent.py", hub.url, "agent-9", "--decision", decision)
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode != 0 and "HTTP 401" in out, out
