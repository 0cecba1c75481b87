"""Many concurrent callers sharing one client, and a ticker, in a process of their own (run
by test_client.py, which kills the hub under them: a frozen event loop stops only this
process).

    python crowd.py URL CALLERS

Every caller calls `system.get_state` in a loop, counting the `ConnectionLost` of a call
in flight when the connection drops, until it has had a reply on the client's second
connection. Prints `ready` once every caller has had a reply; `tick N connected=0|1
in_flight=K` every TICK seconds (K: callers waiting for a reply); and `done callers=C
ok=K lost=L connections=N` once every caller has finished, then exits 0. Any other error
ends the process with its traceback. A watchdog thread prints `stalled` and every
thread's stack, and exits 3, when the event loop has not ticked for STALL seconds.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import time

from quorum_hub import Client, ConnectionLost

#: Pause between two ticks (seconds).
TICK = 0.05
#: Longest the event loop may go without ticking before the watchdog stops the process.
STALL = 10.0


class Crowd:
    def __init__(self, client: Client, callers: int) -> None:
        self.client = client
        self.callers = callers
        self.answered = 0  # callers that have had a reply
        self.ok = 0
        self.lost = 0
        self.in_flight = 0  # callers waiting for a reply
        self.ticks = 0

    async def caller(self) -> None:
        first = True
        while True:
            self.in_flight += 1
            try:
                await self.client.call("system.get_state", {"limit": 1})
            except ConnectionLost:
                self.lost += 1
                continue
            finally:
                self.in_flight -= 1
            self.ok += 1
            if first:
                first = False
                self.answered += 1
                if self.answered == self.callers:
                    print("ready", flush=True)
            if self.client.connections >= 2:
                return

    async def ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.ticks += 1
            print(f"tick {self.ticks} connected={int(self.client.connected)} "
                  f"in_flight={self.in_flight}", flush=True)

    def watchdog(self) -> None:
        # Counts its own pauses rather than reading a clock, so that the process being
        # paused (SIGSTOP) is not taken for a stalled loop.
        seen, quiet = -1, 0
        while True:
            time.sleep(TICK)
            quiet = quiet + 1 if self.ticks == seen else 0
            seen = self.ticks
            if quiet * TICK > STALL:
                print(f"stalled: the event loop has not ticked for {STALL:g} s", flush=True)
                faulthandler.dump_traceback(sys.stdout, all_threads=True)
                sys.stdout.flush()
                os._exit(3)


async def main(url: str, callers: int) -> None:
    async with Client(url, instance_id="crowd", reconnect_wait=60.0, call_timeout=60.0,
                      min_backoff=0.05, max_backoff=0.2) as client:
        crowd = Crowd(client, callers)
        threading.Thread(target=crowd.watchdog, daemon=True).start()
        ticker = asyncio.create_task(crowd.ticker())
        await asyncio.gather(*(crowd.caller() for _ in range(callers)))
        print(f"done callers={callers} ok={crowd.ok} lost={crowd.lost} "
              f"connections={client.connections}", flush=True)
        ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
