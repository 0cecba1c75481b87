"""Webhooks from the Python client: endpoints managed through it against a real hub and a
real Redis, deliveries received by an HTTP server in the test and checked with
`quorum_hub.webhooks.verify` and with the `standardwebhooks` package; and `verify` alone
against the Standard Webhooks test vector.

Every wait polls with a deadline; none sleeps a fixed time to wait for something.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError
from test_client import (
    DEADLINE,
    EXAMPLES,
    PACKAGE,
    Hub,
    Lines,
    RedisServer,
    eventually,
    free_port,
    hub_binary,
    jwt,
    name,
    next_event,
)

from quorum_hub import (
    Client,
    DecisionNotFound,
    InvalidParams,
    NotFound,
    Unauthorized,
    WebhookInfo,
    WebhookVerificationError,
    verify,
)
from quorum_hub.webhooks import sign

# The test vector of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SPEC_HEADERS = {
    "webhook-id": SPEC_ID,
    "webhook-timestamp": str(SPEC_TIMESTAMP),
    "webhook-signature": SPEC_SIGNATURE,
}
AUTH_SECRET = "webhook-test-secret-" + "y" * 32
# Attempts follow one another quickly, so a retried delivery shows within a test.
RETRY_SCHEDULE = "0s,100ms,200ms"


# ---------------------------------------------------------------------------- receiver


@dataclass(frozen=True)
class Request:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """An HTTP server on loopback, in a thread, that records every POST and answers it with
    the status `answer(n)` gives for the n-th request (from 0)."""

    def __init__(self, answer: Callable[[int], int] = lambda n: 200) -> None:
        self.requests: list[Request] = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                # Header names as the hub sent them; a repeated header keeps its last value.
                headers = {key.lower(): value for key, value in self.headers.items()}
                with lock:
                    status = answer(len(requests))
                    requests.append(Request(self.path, headers, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    async def wait_for(self, count: int) -> list[Request]:
        """The first `count` requests, once they have come."""
        received: list[Request] = await eventually(
            f"{count} webhook request(s) at the receiver",
            lambda: list(self.requests) if len(self.requests) >= count else None,
        )
        return received[:count]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(answer: Callable[[int], int] = lambda n: 200) -> Receiver:
        receiver = Receiver(answer)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def hubs() -> Iterator[Callable[..., Hub]]:
    """Starts hubs that deliver to receivers on loopback and retry quickly."""
    started: list[Hub] = []

    def start(redis: RedisServer, *extra: str) -> Hub:
        hub = Hub(redis, "127.0.0.1:0", "--webhook-retry-schedule", RETRY_SCHEDULE,
                  "--webhook-timeout", "5s", *extra, flags=("--webhook-allow-private",))
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


def verified_by_both(secret: str, request: Request) -> Any:
    """The request's parsed body, verified by `verify` and by `standardwebhooks`, which
    must agree."""
    ours = verify(secret, request.headers, request.body)
    theirs = Webhook(secret).verify(request.body, request.headers)
    assert ours == theirs
    return ours


def refused_by_both(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body)
    with pytest.raises(StandardVerificationError):
        Webhook(secret).verify(body, dict(headers))


async def listed(client: Client, id: str) -> WebhookInfo:
    [endpoint] = [w for w in await client.webhooks() if w["id"] == id]
    return endpoint


def random_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def settled(client: Client, id: str, event_id: str) -> WebhookInfo | None:
    """The endpoint, once its latest attempt is at `event_id` and nothing waits."""
    endpoint = await listed(client, id)
    last = endpoint.get("lastAttempt")
    if endpoint["pending"] == 0 and last is not None and last["eventId"] == event_id:
        return endpoint
    return None


async def in_state(client: Client, id: str, state: str) -> WebhookInfo | None:
    endpoint = await listed(client, id)
    return endpoint if endpoint["state"] == state else None


# ---------------------------------------------------------------------------- verify alone


def test_verify_accepts_the_specifications_test_vector() -> None:
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    body = verify(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY.encode(), now=SPEC_TIMESTAMP)
    assert body == {"test": 2432232314}
    # Header names in any case, a body as text, the secret without its prefix, and the
    # matching signature anywhere in a space-separated list.
    shouted = {key.upper(): value for key, value in SPEC_HEADERS.items()}
    rotating = {**SPEC_HEADERS,
                "webhook-signature": f"v1,{'A' * 43}= v2,whatever {SPEC_SIGNATURE}"}
    for secret, headers in [(SPEC_SECRET, shouted),
                            (SPEC_SECRET.removeprefix("whsec_"), SPEC_HEADERS),
                            (SPEC_SECRET, rotating)]:
        assert verify(secret, headers, SPEC_BODY, now=SPEC_TIMESTAMP) == {"test": 2432232314}
    # The timestamp may be off by the tolerance, and no more, either way.
    for now in (SPEC_TIMESTAMP - 300, SPEC_TIMESTAMP + 300):
        verify(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now=now)
    verify(SPEC_SECRET, SPEC_HEADERS, SPEC_BODY, now=SPEC_TIMESTAMP + 3600, tolerance=3600)


# Why a delivery is refused, what it looks like, and what the error says.
REFUSALS: list[tuple[str, dict[str, str], str, int, str]] = [
    ("a tampered body", SPEC_HEADERS, '{"test": 2432232315}', SPEC_TIMESTAMP,
     "no webhook-signature matches"),
    ("another message's id", {**SPEC_HEADERS, "webhook-id": "msg_other"}, SPEC_BODY,
     SPEC_TIMESTAMP, "no webhook-signature matches"),
    ("a signature of another version", {**SPEC_HEADERS, "webhook-signature":
                                        "v2," + SPEC_SIGNATURE[3:]},
     SPEC_BODY, SPEC_TIMESTAMP, "no webhook-signature matches"),
    ("a truncated signature", {**SPEC_HEADERS, "webhook-signature": SPEC_SIGNATURE[:-2]},
     SPEC_BODY, SPEC_TIMESTAMP, "no webhook-signature matches"),
    ("a message too old", SPEC_HEADERS, SPEC_BODY, SPEC_TIMESTAMP + 301, "s old"),
    ("a message from the future", SPEC_HEADERS, SPEC_BODY, SPEC_TIMESTAMP - 301,
     "in the future"),
    ("a timestamp that is not a number", {**SPEC_HEADERS, "webhook-timestamp": "soon"},
     SPEC_BODY, SPEC_TIMESTAMP, "not a Unix time"),
    ("no signature header", {k: v for k, v in SPEC_HEADERS.items()
                             if k != "webhook-signature"},
     SPEC_BODY, SPEC_TIMESTAMP, "missing header(s): webhook-signature"),
    ("no id header", {k: v for k, v in SPEC_HEADERS.items() if k != "webhook-id"},
     SPEC_BODY, SPEC_TIMESTAMP, "missing header(s): webhook-id"),
]


@pytest.mark.parametrize(("why", "headers", "body", "now", "says"), REFUSALS,
                         ids=[refusal[0] for refusal in REFUSALS])
def test_verify_refuses(why: str, headers: dict[str, str], body: str, now: int,
                        says: str) -> None:
    with pytest.raises(WebhookVerificationError) as refused:
        verify(SPEC_SECRET, headers, body, now=now)
    assert says in str(refused.value), why


def test_verify_refuses_another_secret_and_rejects_a_malformed_one() -> None:
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY="
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(other, SPEC_HEADERS, SPEC_BODY, now=SPEC_TIMESTAMP)
    for malformed in ("whsec_not base64!", "whsec_"):
        with pytest.raises(ValueError):
            verify(malformed, SPEC_HEADERS, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_a_signed_body_that_is_not_json_is_refused() -> None:
    body = b"not json"
    headers = {**SPEC_HEADERS, "webhook-signature": sign(SPEC_SECRET, SPEC_ID,
                                                         SPEC_TIMESTAMP, body)}
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify(SPEC_SECRET, headers, body, now=SPEC_TIMESTAMP)


# ---------------------------------------------------------------------------- against a hub


async def test_a_decision_reaches_a_webhook_signed_and_the_client_manages_it(
    redis: RedisServer, hubs: Callable[..., Hub], receivers: Callable[..., Receiver]
) -> None:
    hub = hubs(redis)
    receiver = receivers()
    # Without --auth-secret, a client on loopback may manage webhooks.
    async with Client(hub.url, instance_id=name("voter")) as client:
        assert await client.webhooks() == []
        added = await client.add_webhook(receiver.url, description="the test's receiver")
        assert set(added) == {"id", "secret"}
        id, secret = added["id"], added["secret"]
        assert secret.startswith("whsec_")
        endpoint = await listed(client, id)
        assert endpoint["url"] == receiver.url
        assert endpoint["events"] == ["quorum.decision.made", "quorum.decision.expired"]
        assert endpoint.get("description") == "the test's receiver"
        assert endpoint["state"] == "enabled"
        assert secret.removeprefix("whsec_") not in json.dumps(await client.webhooks())

        events = client.decisions()
        first = name("deploy")
        await client.vote(first, "approve", total_instances=1)
        made = await next_event(events)
        assert made["decision"] == first
        [request] = await receiver.wait_for(1)
        assert request.path == "/hooks"
        assert request.id == made["eventId"]
        body = verified_by_both(secret, request)
        assert body["type"] == "quorum.decision.made"
        assert isinstance(body["timestamp"], str) and body["timestamp"].endswith("Z")
        assert body["data"] == {k: v for k, v in made.items() if k != "event"}

        # The hub records the delivery: listed with nothing pending, and in the attempt log.
        delivered = await eventually("the delivery to be recorded",
                                     lambda: settled(client, id, made["eventId"]))
        last = delivered["lastAttempt"]
        assert (last["eventId"], last.get("status"), last["outcome"]) == (
            made["eventId"], 200, "delivered")
        log = await client.webhook_deliveries(id)
        assert [(a["eventId"], a.get("attempt"), a.get("status"), a["outcome"])
                for a in log["attempts"]] == [(made["eventId"], 1, 200, "delivered")]
        assert "next" not in log

        # A tampered body, or another secret, fails both verifiers.
        tampered = request.body.replace(b'"approve"', b'"reject"')
        assert tampered != request.body
        refused_by_both(secret, request.headers, tampered)
        refused_by_both(random_secret(), request.headers, request.body)

        # After a rotation, deliveries carry a signature for each secret.
        rotated = await client.rotate_webhook_secret(id)
        assert rotated["id"] == id
        new_secret = rotated["secret"]
        assert new_secret.startswith("whsec_") and new_secret != secret
        second = name("deploy")
        await client.vote(second, "approve", total_instances=1)
        made_second = await next_event(events)
        assert made_second["decision"] == second
        [_, after] = await receiver.wait_for(2)
        assert after.id == made_second["eventId"]
        assert len(after.headers["webhook-signature"].split(" ")) == 2
        for key in (secret, new_secret):
            assert verified_by_both(key, after)["data"]["decision"] == second
            refused_by_both(key, after.headers, after.body.replace(b'"approve"', b'"reject"'))
        # The first delivery was signed before the rotation: the new secret refuses it.
        refused_by_both(new_secret, request.headers, request.body)

        # The attempt log pages newest first.
        await eventually("the second delivery to be recorded",
                         lambda: settled(client, id, made_second["eventId"]))
        page = await client.webhook_deliveries(id, limit=1)
        assert [a["eventId"] for a in page["attempts"]] == [made_second["eventId"]]
        assert "next" in page
        page = await client.webhook_deliveries(id, limit=1, after=page["next"])
        assert [a["eventId"] for a in page["attempts"]] == [made["eventId"]]

        with pytest.raises(InvalidParams) as refused:
            await client.add_webhook("ftp://127.0.0.1/hooks")
        assert refused.value.code == -32602 and refused.value.field == "url"

        removed = await client.remove_webhook(id)
        assert removed == {"id": id, "done": "removed"}
        assert id not in [w["id"] for w in await client.webhooks()]
        by_id: list[Callable[[str], Awaitable[object]]] = [
            client.remove_webhook, client.enable_webhook,
            client.rotate_webhook_secret, client.webhook_deliveries,
        ]
        for call in by_id:
            with pytest.raises(NotFound) as unknown:
                await call(id)
            assert unknown.value.code == -32004
            assert isinstance(unknown.value, DecisionNotFound)


async def test_an_endpoint_the_hub_disabled_is_enabled_again_and_gets_what_waited(
    redis: RedisServer, hubs: Callable[..., Hub], receivers: Callable[..., Receiver]
) -> None:
    hub = hubs(redis)
    # 410 Gone disables the endpoint at once; after that the receiver takes everything.
    receiver = receivers(lambda n: 410 if n == 0 else 200)
    async with Client(hub.url, instance_id=name("voter")) as client:
        id = (await client.add_webhook(receiver.url))["id"]
        await client.vote(name("deploy"), "approve", total_instances=1)
        disabled = await eventually(
            "the endpoint that answered 410 to be disabled",
            lambda: in_state(client, id, "disabled"),
        )
        assert "410" in disabled.get("disabledReason", ""), disabled
        assert isinstance(disabled.get("disabledAt"), int)
        assert disabled["pending"] == 1
        [gone] = await receiver.wait_for(1)

        enabled = await client.enable_webhook(id)
        assert enabled == {"id": id, "done": "enabled"}
        endpoint = await listed(client, id)
        assert endpoint["state"] == "enabled" and "disabledReason" not in endpoint
        [_, again] = await receiver.wait_for(2)
        assert again.id == gone.id
        await eventually("the delivery to be recorded", lambda: settled(client, id, gone.id))
        log = await client.webhook_deliveries(id)
        assert [(a.get("status"), a["outcome"]) for a in log["attempts"]] == [
            (200, "delivered"), (410, "gone")]


async def test_only_an_admin_token_manages_webhooks(
    redis: RedisServer, hubs: Callable[..., Hub], receivers: Callable[..., Receiver]
) -> None:
    hub = hubs(redis, "--auth-secret", AUTH_SECRET)
    receiver = receivers()
    minted = subprocess.run(
        [str(hub_binary()), "token", "--admin", "--auth-secret", AUTH_SECRET],
        capture_output=True, text=True, check=True,
    )
    admin_token = minted.stdout.strip()
    worker = name("worker")
    worker_token = jwt(worker, int(time.time()) + 600, AUTH_SECRET)
    async with Client(hub.url, instance_id=worker, token=worker_token) as client:
        calls: list[Callable[[], Awaitable[object]]] = [
            client.webhooks,
            lambda: client.add_webhook(receiver.url),
            lambda: client.remove_webhook("wh_1"),
        ]
        for call in calls:
            with pytest.raises(Unauthorized) as refused:
                await call()
            assert refused.value.code == -32002
            assert "admin token" in refused.value.message
    async with Client(hub.url, token=admin_token) as admin:
        added = await admin.add_webhook(receiver.url, events=["quorum.decision.made"])
        assert [(w["id"], w["events"]) for w in await admin.webhooks()] == [
            (added["id"], ["quorum.decision.made"])]


async def test_the_readme_webhook_receiver_example(
    redis: RedisServer, hubs: Callable[..., Hub]
) -> None:
    source = (EXAMPLES / "webhook_receiver.py").read_text()
    readme = (PACKAGE / "README.md").read_text()
    assert f"```python\n{source}```" in readme, (
        "README.md must show examples/webhook_receiver.py as is")

    hub = hubs(redis)
    port = free_port()
    async with Client(hub.url, instance_id=name("voter")) as client:
        added = await client.add_webhook(f"http://127.0.0.1:{port}/")
        proc = subprocess.Popen(
            [sys.executable, "webhook_receiver.py", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=EXAMPLES,
            env={**os.environ, "WEBHOOK_SECRET": added["secret"]},
        )
        try:
            output = Lines(proc.stdout)
            await asyncio.to_thread(output.wait_for, rf"^listening on {port}$")
            events = client.decisions()
            decision = name("readme")
            await client.vote(decision, "approve", total_instances=1)
            made = await next_event(events)
            await asyncio.to_thread(
                output.wait_for,
                rf"^{made['eventId']} quorum.decision.made: {decision} -> approve$")
            await eventually("the delivery to be recorded",
                             lambda: settled(client, added["id"], made["eventId"]))
            log = await client.webhook_deliveries(added["id"])
            assert [(a["eventId"], a.get("status"), a["outcome"]) for a in log["attempts"]] == [
                (made["eventId"], 204, "delivered")]

            # A request not signed with the secret is refused with 400.
            forged = urllib.request.Request(
                f"http://127.0.0.1:{port}/", data=b'{"type": "x", "data": {}}', method="POST",
                headers={"webhook-id": "forged", "webhook-timestamp": str(int(time.time())),
                         "webhook-signature": sign(random_secret(), "forged",
                                                   int(time.time()), b"{}")})
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with pytest.raises(urllib.error.HTTPError) as refused:
                await asyncio.to_thread(direct.open, forged, timeout=DEADLINE)
            assert refused.value.code == 400
            await asyncio.to_thread(
                output.wait_for, r"^refused: no webhook-signature matches the secret$")
        finally:
            proc.kill()
            proc.wait()
