// Reconnection: a hub killed and restarted mid-run loses and doubles nothing; a client that
// has seen no decision yet still resumes; `since` and the hub's gap notices; full jitter.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, ConnectionLost, backoffDelay, compareEventIds, parseEventId } from '../src/index.js';
import { delay, eventually, name, nextEvent, withRedis } from './harness.js';

const key = (event) => `${event.event} ${event.decision} ${event.eventId}`;

/** Collects every event of `client` whose decision starts with `prefix` into `into`. */
async function collect(client, prefix, into) {
  for await (const event of client.decisions()) {
    if (typeof event.decision === 'string' && event.decision.startsWith(prefix)) into.push(event);
  }
}

test('a hub killed and restarted mid-run: nothing missed, nothing doubled', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub(); // the one the client uses, killed and restarted
    const other = await startHub(); // where decisions keep being made meanwhile
    const prefix = name('stream');
    const made = [];
    // The maker's own session never drops: what it receives is the log, in order.
    const reference = [];
    const received = [];
    const client = await Client.connect(hub.url, { instanceId: 'survivor', minBackoffMs: 100, maxBackoffMs: 500 });
    const maker = await Client.connect(other.url, { instanceId: 'maker' });
    const collectors = [collect(client, prefix, received), collect(maker, prefix, reference)];
    let stop = false;
    const produce = (async () => {
      for (let n = 0; !stop; n++) {
        const decision = `${prefix}-${String(n).padStart(4, '0')}`;
        const reply = await maker.vote(decision, 'go', { totalInstances: 1 });
        assert.equal(reply.quorumReached, true);
        made.push(decision);
        await delay(10); // a steady rate, not a wait for anything
      }
    })();
    try {
      await eventually('decisions delivered live', () => received.length >= 10);
      await hub.kill();
      const atKill = made.length;
      await eventually('the client to notice the drop', () => !client.connected);
      // An expiry while the client is away is in the log too, in its place.
      const expiring = `${prefix}-expiring`;
      await maker.vote(expiring, 'maybe', { totalInstances: 3, closeAfterMs: 100 });
      await eventually('the expiry', () => reference.some((event) => event.event === 'quorum.decision.expired'));
      await eventually('decisions while the hub is down', () => made.length >= atKill + 20);
      await hub.restart();
      await eventually('the client to reconnect', () => client.connections === 2);
      const atReconnect = made.length;
      await eventually('decisions after the reconnection', () => made.length >= atReconnect + 20);
      stop = true;
      await produce;
      await eventually('every decision at both', () => received.length >= made.length + 1 && reference.length >= made.length + 1);

      // Exactly the log's events, in the log's order: no gap, no duplicate.
      assert.deepEqual(received.map(key), reference.map(key));
      assert.deepEqual(
        received.filter((event) => event.event === 'quorum.decision.made').map((event) => event.decision),
        made,
      );
      assert.deepEqual(
        received.filter((event) => event.event === 'quorum.decision.expired').map((event) => event.decision),
        [expiring],
      );
      const ids = received.map((event) => parseEventId(event.eventId));
      for (let i = 1; i < ids.length; i++) assert.ok(compareEventIds(ids[i - 1], ids[i]) < 0, 'ids increase');
      assert.ok(atReconnect - atKill >= 20, 'missed, then replayed');
      assert.ok(made.length - atReconnect >= 20, 'delivered live after the reconnection');
      assert.equal(client.connections, 2);

      // It registered again: it votes as its instance and sees its decision, once.
      const after = `${prefix}-after`;
      assert.equal((await client.vote(after, 'c', { totalInstances: 1 })).voted, true);
      await eventually('its own decision at both', () => received.at(-1).decision === after && reference.at(-1).decision === after);
      assert.deepEqual(received.map(key), reference.map(key));
      assert.equal(client.lastEventId, received.at(-1).eventId);
    } finally {
      stop = true;
      await produce.catch(() => {});
      client.close();
      maker.close();
      await Promise.all(collectors);
    }
  }));

test('a client that has seen no decision yet gets those made while it was away', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const other = await startHub();
    const maker = await Client.connect(other.url, { instanceId: 'maker' });
    try {
      // First on an empty event log, then on one that holds the first decision.
      for (const round of [0, 1]) {
        const client = await Client.connect(hub.url, { instanceId: `waiter-${round}`, minBackoffMs: 50, maxBackoffMs: 300 });
        try {
          const events = client.decisions();
          await hub.kill();
          await eventually('the client to notice the drop', () => !client.connected);
          await maker.vote(`while-away-${round}`, 'v', { totalInstances: 1 });
          await hub.restart();
          const missed = await nextEvent(events);
          assert.deepEqual([missed.event, missed.decision], ['quorum.decision.made', `while-away-${round}`]);
          await maker.vote(`after-${round}`, 'v', { totalInstances: 1 });
          assert.equal((await nextEvent(events)).decision, `after-${round}`, 'nothing in between');
          await eventually('the client to register again', () => client.connections === 2);
        } finally {
          client.close();
        }
      }
    } finally {
      maker.close();
    }
  }));

test('a client resumes from `since`, and follows the hub when told of a gap', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const maker = await Client.connect(hub.url, { instanceId: 'early' });
    const ids = [];
    try {
      const events = maker.decisions();
      for (let n = 0; n < 3; n++) {
        await maker.vote(`since-${n}`, 'v', { totalInstances: 1 });
        ids.push((await nextEvent(events)).eventId);
      }
    } finally {
      maker.close();
    }
    // A client starting after the first event gets the two after it, in order.
    const late = await Client.connect(hub.url, { since: ids[0] });
    try {
      const events = late.decisions();
      assert.equal((await nextEvent(events)).decision, 'since-1');
      assert.equal((await nextEvent(events)).decision, 'since-2');
      assert.equal(late.lastEventId, ids[2]);
    } finally {
      late.close();
    }
    // A cursor from another Redis: the hub says so, and the client follows the hub.
    const ahead = await Client.connect(hub.url, { since: '99999999999999-0', instanceId: 'ahead' });
    try {
      const events = ahead.decisions();
      const notice = await nextEvent(events);
      assert.equal(notice.event, 'system.events.incomplete');
      assert.equal(notice.reason, 'ahead');
      assert.equal(notice.since, ids[2]);
      assert.equal(ahead.lastEventId, ids[2]);
      await ahead.vote(name('fresh'), 'v', { totalInstances: 1 });
      assert.equal((await nextEvent(events)).event, 'quorum.decision.made');
    } finally {
      ahead.close();
    }
  }));

test('the reconnection pause is full jitter within a doubling, capped window', () => {
  for (let attempt = 0; attempt < 8; attempt++) {
    const window = Math.min(2000, 100 * 2 ** attempt);
    const sample = Array.from({ length: 400 }, () => backoffDelay(attempt, 100, 2000));
    assert.ok(
      sample.every((pause) => pause >= 0 && pause <= window),
      `attempt ${attempt}`,
    );
    assert.equal(new Set(sample).size, sample.length, 'no two clients in step');
    // Full jitter: the pauses spread over the whole window, from near 0 to near its end.
    assert.ok(Math.min(...sample) < window * 0.1 && Math.max(...sample) > window * 0.9, `attempt ${attempt}`);
  }
  assert.equal(backoffDelay(3, 100, 2000, () => 0.5), 400);
  assert.equal(backoffDelay(10_000, 100, 2000, () => 1), 2000); // no overflow
  assert.throws(() => new Client('ws://127.0.0.1:1/ws', { minBackoffMs: 0 }), RangeError);
  assert.throws(() => new Client('ws://127.0.0.1:1/ws', { since: 'not-an-id' }), RangeError);
});

test('a hub that stops answering is noticed by the client\'s pings, and left for a new connection', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const client = await Client.connect(hub.url, {
      instanceId: 'pinged',
      pingIntervalMs: 200,
      callTimeoutMs: 20_000,
      openTimeoutMs: 1000,
      minBackoffMs: 50,
      maxBackoffMs: 200,
    });
    let resumed = false;
    try {
      hub.proc.kill('SIGSTOP'); // the hub stops answering; its socket stays open
      const started = Date.now();
      // A call in flight fails as soon as the client gives the connection up, not after
      // its 20 s call timeout.
      await assert.rejects(client.status('anything'), (error) => {
        assert.ok(error instanceof ConnectionLost, String(error));
        assert.match(error.message, /did not answer a ping within 0\.2 s/);
        return true;
      });
      assert.ok(Date.now() - started < 5000, String(Date.now() - started));
      assert.equal(client.connected, false);
      hub.proc.kill('SIGCONT');
      resumed = true;
      await eventually('the client to connect again', () => client.connections === 2);
      assert.equal((await client.vote(name('pinged'), 'v', { totalInstances: 1 })).voted, true);
    } finally {
      if (!resumed) hub.proc.kill('SIGCONT');
      client.close();
    }
  }));
