// Decision events are passed on once each and in order even when a hub sends a repeat (as a
// second hub or a replay could), and the client follows the hub's notices: after `rewound`
// the events continue from `since`; after `unreadable` it leaves the session and resumes
// from the same cursor. The hub here is a scripted WebSocket server on a real socket.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocketServer } from 'ws';

import { Client } from '../src/index.js';
import { eventually, nextEvent } from './harness.js';

const made = (eventId, decision) => ({ method: 'quorum.decision.made', params: { decision, value: 'v', eventId } });
const expired = (eventId, decision) => ({ method: 'quorum.decision.expired', params: { decision, tally: {}, eventId } });
const incomplete = (reason, since) => ({ method: 'system.events.incomplete', params: { reason, since, message: 'm' } });

/**
 * A server that answers every call and pushes each connection's script: on a resumed
 * connection at once, in the same write as the upgrade's answer where the socket allows (as
 * a hub replays what was missed); on a first connection once the client's last setup call
 * (`system.get_state`, which has no cursor yet) is answered.
 */
async function scriptedHub(scripts) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((ready) => server.once('listening', ready));
  const urls = [];
  server.on('connection', (socket, request) => {
    const url = new URL(request.url, 'ws://hub');
    urls.push(url);
    const script = scripts[urls.length - 1] ?? [];
    const push = () => {
      for (const notification of script.splice(0)) socket.send(JSON.stringify({ jsonrpc: '2.0', ...notification }));
    };
    if (url.searchParams.has('lastEventId')) push();
    socket.on('message', (data) => {
      const call = JSON.parse(data.toString());
      const result = call.method === 'system.get_state' ? { hub: { lastEventId: null } } : {};
      socket.send(JSON.stringify({ jsonrpc: '2.0', id: call.id, result }));
      if (call.method === 'system.get_state') push();
    });
  });
  const close = () => {
    for (const socket of server.clients) socket.terminate();
    return new Promise((done) => server.close(done));
  };
  return { url: `ws://127.0.0.1:${server.address().port}/ws`, urls, close };
}

test('a decision event is passed on once and in order; notices move the cursor as they say', async () => {
  const hub = await scriptedHub([
    [
      made('10-0', 'a'),
      made('10-0', 'a'),
      expired('10-1', 'b'),
      made('9-5', 'old'),
      made('10-1', 'b'),
      made('11-0', 'c'),
      // The log went back: what follows continues from `since`.
      incomplete('rewound', '5-0'),
      made('6-0', 'd'),
      made('6-0', 'd'),
      incomplete('trimmed', '6-0'),
      made('7-0', 'e'),
      // The hub could not read its log: the client leaves and resumes from 7-0.
      incomplete('unreadable', '7-0'),
      made('8-0', 'not-after-unreadable'),
    ],
    [made('8-0', 'f')],
  ]);
  let client = null;
  try {
    client = await Client.connect(hub.url, { instanceId: 'ordered', minBackoffMs: 10, maxBackoffMs: 50 });
    const events = client.decisions();
    const seen = [];
    while (seen.length < 9) {
      const event = await nextEvent(events);
      seen.push(`${event.event.split('.').at(-1)} ${event.decision ?? event.reason}`);
    }
    assert.deepEqual(seen, [
      'made a',
      'expired b',
      'made c',
      'incomplete rewound',
      'made d',
      'incomplete trimmed',
      'made e',
      'incomplete unreadable',
      'made f',
    ]);
    assert.equal(client.lastEventId, '8-0');
    await eventually('the second connection to be registered', () => client.connections === 2);
    assert.equal(hub.urls.length, 2);
    assert.equal(hub.urls[0].searchParams.get('lastEventId'), null);
    assert.equal(hub.urls[1].searchParams.get('lastEventId'), '7-0');
  } finally {
    client?.close();
    await hub.close();
  }
});
