// The event queue's bound: a client whose agent does not read holds at most `eventBuffer`
// events; at the bound it leaves the session, and once the agent reads again it resumes
// after the last event it held, so no decision is lost or doubled.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { Client, EVENT_BUFFER } from '../src/index.js';
import { REPO, eventually, name, nextEvent, withRedis } from './harness.js';

const key = (event) => `${event.event} ${event.decision} ${event.eventId}`;

test('the default bound is the Rust client\'s', () => {
  const rust = readFileSync(join(REPO, 'src', 'client.rs'), 'utf8');
  assert.ok(rust.includes(`pub const EVENT_BUFFER: usize = ${EVENT_BUFFER};`), 'src/client.rs states the same EVENT_BUFFER');
});

test('an agent that does not read holds at most eventBuffer events, then gets every decision once it reads', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const bound = 16;
    const prefix = name('unread');
    const deaf = await Client.connect(hub.url, { instanceId: 'deaf', eventBuffer: bound, minBackoffMs: 50, maxBackoffMs: 200 });
    const maker = await Client.connect(hub.url, { instanceId: 'maker' });
    // What an agent that reads receives: the log, in order.
    const reference = [];
    const collecting = (async () => {
      for await (const event of maker.decisions()) {
        if (event.decision?.startsWith(prefix)) reference.push(event);
      }
    })();
    const made = [];
    let held = 0; // the most events the deaf agent's client held, after each vote
    try {
      for (let n = 0; n < bound * 3; n++) {
        const decision = `${prefix}-${String(n).padStart(3, '0')}`;
        assert.equal((await maker.vote(decision, 'go', { totalInstances: 1 })).quorumReached, true);
        made.push(decision);
        held = Math.max(held, deaf.queued);
      }
      await eventually('every decision at the reading agent', () => reference.length === made.length);
      await eventually('the deaf agent to leave its session', () => !deaf.connected);
      held = Math.max(held, deaf.queued);
      // However many events came, the client holds at most its bound, and stays away
      // while the agent reads nothing.
      assert.equal(held, bound);
      assert.equal(deaf.queued, bound);
      assert.match(deaf.lastError, /the event queue is full \(16 events unread\)/);
      assert.equal(deaf.connections, 1);
      assert.equal(deaf.state, 'reconnecting');

      // Once the agent reads, it receives every decision, once, in the log's order: those
      // it held, then, after it resumes on a new connection, those it left behind.
      const received = [];
      const events = deaf.decisions();
      while (received.length < made.length) {
        const event = await nextEvent(events);
        if (event.decision?.startsWith(prefix)) received.push(event);
      }
      assert.deepEqual(received.map(key), reference.map(key));
      assert.deepEqual(
        received.map((event) => event.decision),
        made,
      );
      // The replayed events come before the reply to the new connection's registration.
      await eventually('the new connection to be registered', () => deaf.connected);
      assert.equal(deaf.connections, 2);
      assert.equal(deaf.lastEventId, reference.at(-1).eventId);
      assert.equal((await deaf.status(made[0])).state, 'decided'); // calls are answered again
    } finally {
      deaf.close();
      maker.close();
      await collecting;
    }
  }));
