"""Three agents vote on one decision, and all three see it.

    python three_agents.py ws://127.0.0.1:8080/ws [--decision NAME]

Each agent has its own Client (its own WebSocket and instance). All three connect, then
vote "approve" one after the other on a fresh decision for 3 instances (quorum 2): the
second vote decides it, and every agent receives the quorum.decision.made event. Exits 1
if any agent has not seen the decision within --timeout seconds.
"""

import argparse
import asyncio
import secrets
import sys

from quorum_hub import Client

AGENTS = ["agent-1", "agent-2", "agent-3"]


async def agent(client: Client, decision: str, voted: asyncio.Event, turn: asyncio.Event) -> str:
    # Open the stream before voting: events are buffered from the connection on, so the
    # decision cannot slip by between the vote and the first read.
    events = client.decisions()
    await turn.wait()  # vote one after the other, so the order (and output) is the same
    reply = await client.vote(decision, "approve", total_instances=len(AGENTS))
    print(f"{client.instance_id} voted: {reply}", flush=True)
    voted.set()
    async for event in events:
        if event["event"] == "quorum.decision.made" and event["decision"] == decision:
            print(f"{client.instance_id} saw {decision} -> {event['value']} "
                  f"({event['voteCount']}/{event['totalInstances']} votes, "
                  f"event {event['eventId']})", flush=True)
            return str(event["value"])
    raise RuntimeError(f"{client.instance_id}: the client closed before the decision")


async def run(url: str, decision: str, timeout: float) -> int:
    clients = [Client(url, instance_id=name) for name in AGENTS]
    try:
        for client in clients:
            await client.connect()
        turns = [asyncio.Event() for _ in AGENTS]
        voted = [asyncio.Event() for _ in AGENTS]
        tasks = [asyncio.create_task(agent(c, decision, v, t))
                 for c, v, t in zip(clients, voted, turns)]
        for turn, done in zip(turns, voted):
            turn.set()
            await asyncio.wait_for(done.wait(), timeout)
        values = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except asyncio.TimeoutError:
        print(f"not every agent saw {decision} within {timeout:g} s", file=sys.stderr)
        return 1
    finally:
        for client in clients:
            await client.close()
    print(f"all {len(AGENTS)} agents saw {decision} -> {values[0]}", flush=True)
    return 0 if len(set(values)) == 1 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the hub's WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
    parser.add_argument("--decision", default=f"upgrade-{secrets.token_hex(3)}",
                        help="the decision to vote on (default: a new one each run)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.url, args.decision, args.timeout)))


if __name__ == "__main__":
    main()
