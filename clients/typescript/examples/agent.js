// One agent: registers, votes on a decision, and prints the decision once it is made.
//
//   node agent.js ws://127.0.0.1:8080/ws agent-1 [--decision upgrade-system] [--total 3]
//
// Start it three times (agent-1, agent-2, agent-3): the second vote reaches quorum and every
// agent prints the decision. On a hub with --auth-secret, set QUORUM_TOKEN_FILE to a file
// holding this agent's token (`quorum-hub token --sub agent-1 --role worker`); the file is
// read at every connection and again before the token expires, so rotate the token in place.

import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { Client, ConnectionLost, RateLimited } from 'quorum-hub-client';

const { values: options, positionals: [url, instanceId] } = parseArgs({
  allowPositionals: true,
  options: {
    decision: { type: 'string', default: 'upgrade-system' },
    value: { type: 'string', default: 'approve' },
    total: { type: 'string', default: '3' }, // how many agents vote
  },
});
const { decision, value } = options;
const tokenFile = process.env.QUORUM_TOKEN_FILE;

const client = await Client.connect(url, {
  instanceId,
  roles: ['worker'],
  metadata: { version: '1.4.2' },
  token: tokenFile ? async () => (await readFile(tokenFile, 'utf8')).trim() : null,
});
// Events are queued from the moment the client connects: open the stream now and no
// decision is missed while voting.
const events = client.decisions();

// The first vote opens the decision and fixes totalInstances (quorum: a majority).
let reply;
for (;;) {
  try {
    reply = await client.vote(decision, value, { totalInstances: Number(options.total) });
    break;
  } catch (error) {
    if (error instanceof RateLimited) await sleep(error.retryAfterMs ?? 1000);
    // The connection dropped mid-call: voting again is safe (a vote that counted is
    // answered "already_voted").
    else if (!(error instanceof ConnectionLost)) throw error;
  }
}
console.log(`${instanceId} voted: ${JSON.stringify(reply)}`);

if (reply.finalDecision) {
  // Decided by this vote, or before it: nothing to wait for.
  console.log(`${instanceId}: ${decision} -> ${reply.finalDecision}`);
} else {
  // Every decision made or expired, on every hub sharing the Redis, once each, in order,
  // across reconnections.
  for await (const event of events) {
    if (event.event === 'quorum.decision.made' && event.decision === decision) {
      console.log(`${instanceId}: ${decision} -> ${event.value} (${event.voteCount}/${event.totalInstances} votes)`);
      break;
    }
    if (event.event === 'quorum.decision.expired' && event.decision === decision) {
      console.log(`${instanceId}: ${decision} expired, tally ${JSON.stringify(event.tally)}`);
      break;
    }
    if (event.event === 'system.events.incomplete') {
      // Some missed events could not be replayed: ask for the decision itself.
      const status = await client.status(decision);
      if (status.state !== 'open') {
        console.log(`${instanceId}: ${decision} -> ${status.finalDecision ?? status.state}`);
        break;
      }
    }
  }
}
client.close();
