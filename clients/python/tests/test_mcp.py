"""`quorum-hub mcp` driven by the official MCP Python SDK (`mcp`), as an LLM agent's host
drives it: each agent is a `quorum-hub mcp` process spawned over stdio, talking to a real
hub and a real Redis that the test starts.

Every wait polls with a deadline; none sleeps a fixed time to wait for something.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from test_client import DEADLINE, Hub, RedisServer, eventually, hub_binary, name

TOOLS = {"quorum_vote", "quorum_status", "quorum_wait", "quorum_decisions"}
# quorum_wait's bound (src/mcp/wait.rs, MAX_WAIT_MS).
MAX_WAIT_MS = 600_000


class Agent:
    """One `quorum-hub mcp` process and the MCP session to it; `updated` collects the URIs
    of every `notifications/resources/updated` it sent, in order."""

    def __init__(self, session: ClientSession, updated: list[str]) -> None:
        self.session = session
        self.updated = updated

    async def call(self, tool: str, progress: ProgressFnT | None = None,
                   **arguments: Any) -> tuple[bool, dict[str, Any]]:
        """A tool call: whether it is a tool error, and its structured content."""
        result = await asyncio.wait_for(
            self.session.call_tool(tool, arguments, progress_callback=progress), DEADLINE)
        assert isinstance(result, types.CallToolResult), result
        content = result.structured_content
        assert isinstance(content, dict), result
        # The text block carries the same JSON, for hosts that read only text.
        assert len(result.content) == 1 and isinstance(result.content[0], types.TextContent)
        return result.is_error, content

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        failed, content = await self.call(tool, **arguments)
        assert not failed, content
        return content

    async def read(self, uri: str) -> dict[str, Any]:
        result = await asyncio.wait_for(self.session.read_resource(uri), DEADLINE)
        assert isinstance(result, types.ReadResourceResult), result
        [contents] = result.contents
        assert isinstance(contents, types.TextResourceContents), contents
        assert contents.uri == uri and contents.mime_type == "application/json"
        status: dict[str, Any] = json.loads(contents.text)
        return status


class Agents:
    """Starts agents (`await agents.start(hub_url, instance)`) and stops them all when the
    `async with` block ends, in the test's own task (the MCP SDK's streams must close in
    the task that opened them). Each agent's stderr (its logs) goes to a file in `logs`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.stack = AsyncExitStack()

    async def __aenter__(self) -> Agents:
        await self.stack.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stack.__aexit__(*exc)

    async def start(self, url: str, instance: str) -> Agent:
        updated: list[str] = []

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ResourceUpdatedNotification):
                updated.append(message.params.uri)

        errlog = self.stack.enter_context(open(self.logs / f"{instance}.log", "w"))
        server = StdioServerParameters(
            command=str(hub_binary()),
            args=["mcp", "--url", url, "--instance", instance, "--roles", "agent,test"],
            env={"RUST_LOG": "info"},
        )
        read, write = await self.stack.enter_async_context(stdio_client(server, errlog=errlog))
        session = await self.stack.enter_async_context(
            ClientSession(read, write, message_handler=on_message))
        await asyncio.wait_for(session.initialize(), DEADLINE)
        return Agent(session, updated)


@pytest.fixture
def hubs() -> Iterator[list[Hub]]:
    started: list[Hub] = []
    yield started
    for hub in started:
        hub.stop()


def uri(decision: str) -> str:
    return "quorum://decision/" + quote(decision, safe="-._~")


async def test_three_agents_vote_and_each_wait_returns_the_decision(
    redis: RedisServer, hubs: list[Hub], tmp_path: Path
) -> None:
    async with Agents(tmp_path) as agents:
        hub = Hub(redis)
        hubs.append(hub)
        a, b, c = [await agents.start(hub.url, f"agent-{n}") for n in "abc"]
        listed = await a.session.list_tools()
        assert {tool.name for tool in listed.tools} == TOOLS
        schemas = {tool.name: tool.input_schema for tool in listed.tools}
        assert sorted(schemas["quorum_vote"]["required"]) == ["decision", "value"]
        assert sorted(schemas["quorum_wait"]["required"]) == ["decision", "timeoutMs"]
        assert schemas["quorum_wait"]["properties"]["timeoutMs"]["maximum"] == MAX_WAIT_MS
        assert all(tool.description for tool in listed.tools)

        decision = name("mcp-three")
        # Every agent waits before the decision has a single vote.
        waits = [asyncio.create_task(agent.call("quorum_wait", decision=decision, timeoutMs=60_000))
                 for agent in (a, b, c)]
        first = await a.ok("quorum_vote", decision=decision, value="approve", totalInstances=3)
        assert first == {"voted": True, "quorumReached": False, "voteCount": 1}
        assert not any(wait.done() for wait in waits)  # still open: nothing to return yet
        second = await b.ok("quorum_vote", decision=decision, value="deny")
        # Quorum 2 of 3, a tie: the value that reached the count first wins.
        assert second == {"voted": True, "quorumReached": True, "finalDecision": "approve",
                          "voteCount": 2}
        outcomes = await asyncio.wait_for(asyncio.gather(*waits), DEADLINE)
        for failed, content in outcomes:
            assert not failed, content
            assert content["timedOut"] is False
            status = content["status"]
            assert (status["decision"], status["state"], status["finalDecision"]) == (
                decision, "decided", "approve")
            assert (status["voteCount"], status["quorum"], status["totalInstances"]) == (2, 2, 3)
            assert status["tally"] == {"approve": 1, "deny": 1}
            assert [(v["instanceId"], v["value"]) for v in status["votes"]] == [
                ("agent-a", "approve"), ("agent-b", "deny")]
        late = await c.ok("quorum_vote", decision=decision, value="deny")
        assert late == {"voted": False, "quorumReached": True, "finalDecision": "approve",
                        "voteCount": 2, "reason": "decided"}
        # Already decided: the wait returns the decision at once, whatever its timeout.
        again = await c.ok("quorum_wait", decision=decision, timeoutMs=MAX_WAIT_MS)
        assert again["timedOut"] is False and again["status"]["state"] == "decided"
        recent = await c.ok("quorum_decisions", limit=5)
        assert recent["decisions"][0]["decision"] == decision
        assert recent["decisions"][0]["finalDecision"] == "approve"


# The server speaks the revisions with the `initialize` handshake (up to 2025-11-25), whose
# resources/subscribe the SDK warns is gone from the newest revision.
@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_a_subscribed_resource_is_updated_when_decided_or_expired(
    redis: RedisServer, hubs: list[Hub], tmp_path: Path
) -> None:
    async with Agents(tmp_path) as agents:
        hub = Hub(redis)
        hubs.append(hub)
        a = await agents.start(hub.url, "agent-a")
        b = await agents.start(hub.url, "agent-b")
        templates = await a.session.list_resource_templates()
        assert [t.uri_template for t in templates.resource_templates] == [
            "quorum://decision/{name}"]

        # A name with characters a URI cannot hold as they are.
        decided = name("release/v1.2#rc") + "-ü"
        unwatched = name("unwatched")
        expiring = name("expiring")
        await a.ok("quorum_vote", decision=decided, value="ship", totalInstances=2)
        await a.ok("quorum_vote", decision=unwatched, value="ship", totalInstances=2)
        await a.ok("quorum_vote", decision=expiring, value="ship", totalInstances=2,
                   closeAfterMs=400)
        listed = await a.session.list_resources()
        assert {uri(decided), uri(unwatched)} <= {r.uri for r in listed.resources}
        before = await a.read(uri(decided))
        assert (before["decision"], before["state"], before["voteCount"]) == (decided, "open", 1)
        await a.session.subscribe_resource(uri(decided))
        await a.session.subscribe_resource(uri(expiring))

        # Not subscribed: decided first, so its notice would arrive before the next one's.
        await b.ok("quorum_vote", decision=unwatched, value="ship")
        await b.ok("quorum_vote", decision=decided, value="ship")
        await eventually("the update of the decided resource", lambda: uri(decided) in a.updated)
        after = await a.read(uri(decided))
        assert (after["state"], after["finalDecision"], after["voteCount"]) == ("decided", "ship", 2)
        await eventually("the update of the expired resource", lambda: uri(expiring) in a.updated)
        expired = await a.read(uri(expiring))
        assert (expired["state"], expired["tally"]) == ("expired", {"ship": 1})
        assert a.updated == [uri(decided), uri(expiring)]
        assert b.updated == []  # b subscribed to nothing


async def test_a_hub_restart_under_a_waiting_wait_still_returns_the_decision(
    redis: RedisServer, hubs: list[Hub], tmp_path: Path
) -> None:
    async with Agents(tmp_path) as agents:
        hub = Hub(redis)  # killed and restarted under the waiting agent
        other = Hub(redis)  # where the decision is made meanwhile
        hubs += [hub, other]
        waiting = await agents.start(hub.url, "agent-a")
        voter = await agents.start(other.url, "agent-b")
        decision = name("mcp-restart")
        await waiting.ok("quorum_vote", decision=decision, value="approve", totalInstances=3)
        reports: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reports.append((progress, total, message))

        wait = asyncio.create_task(waiting.call("quorum_wait", on_progress, decision=decision,
                                                timeoutMs=120_000))
        # The wait has looked at the decision (1 vote of 2) and waits for it to close.
        await eventually("the wait's progress", lambda: reports)
        assert reports == [(1, 2, "1 of 2 votes needed; waiting for the decision")]
        hub.kill()
        await voter.ok("quorum_vote", decision=decision, value="approve")
        status = await voter.ok("quorum_status", decision=decision)
        assert status["state"] == "decided"
        assert not wait.done()  # its hub is down: it cannot have learned of the decision
        hub.restart()
        failed, content = await asyncio.wait_for(wait, DEADLINE)
        assert not failed, content
        assert content["timedOut"] is False
        assert (content["status"]["state"], content["status"]["finalDecision"]) == (
            "decided", "approve")
        # The session registered again: the agent still votes as its instance.
        reply = await waiting.ok("quorum_vote", decision=name("after"), value="x",
                                 totalInstances=1)
        assert reply["quorumReached"] is True


async def test_a_tool_error_carries_the_hubs_code_and_message(
    redis: RedisServer, hubs: list[Hub], tmp_path: Path
) -> None:
    async with Agents(tmp_path) as agents:
        hub = Hub(redis)
        hubs.append(hub)
        a = await agents.start(hub.url, "agent-a")
        missing = name("missing")
        failed, error = await a.call("quorum_status", decision=missing)
        assert failed
        assert error == {"code": -32004, "message": f"decision {missing} has no votes"}

        decision = name("conflict")
        await a.ok("quorum_vote", decision=decision, value="x", totalInstances=3)
        b = await agents.start(hub.url, "agent-b")
        failed, error = await b.call("quorum_vote", decision=decision, value="y", totalInstances=5)
        assert failed
        assert error["code"] == -32602 and error["data"]["field"] == "totalInstances", error
        assert "totalInstances" in error["message"]

        failed, error = await a.call("quorum_vote", decision=decision)  # no value
        assert failed
        assert error["code"] == -32602 and "value" in error["message"], error

        # An open decision at the wait's timeout: its status as it stands.
        failed, content = await a.call("quorum_wait", decision=decision, timeoutMs=200)
        assert not failed, content
        assert content["timedOut"] is True and content["status"]["state"] == "open"

        with pytest.raises(MCPError) as raised:
            await a.read(uri(missing))
        assert raised.value.data["code"] == -32004
        assert raised.value.data["message"] == f"decision {missing} has no votes"
