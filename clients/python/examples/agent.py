"""One agent: registers, votes on a decision, and prints the decision once it is made.

    python agent.py ws://127.0.0.1:8080/ws agent-1 [--decision upgrade-system] [--total 3]

Start it three times (agent-1, agent-2, agent-3): the second vote reaches quorum and every
agent prints the decision. On a hub with --auth-secret, set QUORUM_TOKEN_FILE to a file
holding this agent's token (`quorum-hub token --sub agent-1 --role worker`); the file is
read at every connection and again before the token expires, so rotate the token in place.
"""

import argparse
import asyncio
import os
from pathlib import Path

from quorum_hub import Client, ConnectionLost, RateLimited


async def run(url: str, instance_id: str, decision: str, value: str, total: int) -> None:
    token_file = os.environ.get("QUORUM_TOKEN_FILE")
    provider = (lambda: Path(token_file).read_text().strip()) if token_file else None
    async with Client(url, instance_id=instance_id, roles=["worker"],
                      metadata={"version": "1.4.2"}, token_provider=provider) as client:
        # Events are buffered from the moment the client connects: open the stream now
        # and no decision is missed while voting.
        events = client.decisions()

        # The first vote opens the decision and fixes totalInstances (quorum: a majority).
        while True:
            try:
                reply = await client.vote(decision, value, total_instances=total)
                break
            except RateLimited as err:
                await asyncio.sleep((err.retry_after_ms or 1000) / 1000)
            except ConnectionLost:
                # The connection dropped mid-call: voting again is safe (a vote that
                # counted is answered "already_voted").
                continue
        print(f"{instance_id} voted: {reply}", flush=True)
        if "finalDecision" in reply:
            # Decided by this vote, or before it: nothing to wait for.
            print(f"{instance_id}: {decision} -> {reply['finalDecision']}", flush=True)
            return

        # Every decision made or expired, on every hub sharing the Redis, once each, in
        # order, across reconnections.
        async for event in events:
            if event["event"] == "quorum.decision.made" and event["decision"] == decision:
                print(f"{instance_id}: {decision} -> {event['value']} "
                      f"({event['voteCount']}/{event['totalInstances']} votes)", flush=True)
                return
            if event["event"] == "quorum.decision.expired" and event["decision"] == decision:
                print(f"{instance_id}: {decision} expired, tally {event['tally']}", flush=True)
                return
            if event["event"] == "system.events.incomplete":
                # Some missed events could not be replayed: ask for the decision itself.
                status = await client.status(decision)
                if status["state"] != "open":
                    print(f"{instance_id}: {decision} -> "
                          f"{status.get('finalDecision', status['state'])}", flush=True)
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the hub's WebSocket URL, e.g. ws://127.0.0.1:8080/ws")
    parser.add_argument("instance_id", help="this agent's instance id, e.g. agent-1")
    parser.add_argument("--decision", default="upgrade-system")
    parser.add_argument("--value", default="approve")
    parser.add_argument("--total", type=int, default=3, help="how many agents vote")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.instance_id, args.decision, args.value, args.total))


if __name__ == "__main__":
    main()
