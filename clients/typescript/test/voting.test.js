// Voting, status, paging and typed errors against a real hub and a real Redis.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  BackendUnavailable,
  CircuitOpen,
  Client,
  ClientClosed,
  ConnectionLost,
  DecisionNotFound,
  InvalidParams,
  InvalidRequest,
  MethodNotFound,
  RateLimited,
  RpcError,
  Unauthorized,
} from '../src/index.js';
import { eventually, name, nextEvent, withRedis } from './harness.js';

test('three clients vote and all see the decision', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const decision = name('deploy');
    const clients = [];
    for (let n = 0; n < 3; n++) {
      clients.push(await Client.connect(hub.url, { instanceId: `agent-${n}`, roles: ['worker'], metadata: { n } }));
    }
    const streams = clients.map((client) => client.decisions());
    try {
      assert.deepEqual(await clients[0].vote(decision, 'approve', { totalInstances: 3 }), {
        voted: true,
        quorumReached: false,
        voteCount: 1,
      });
      assert.deepEqual(await clients[1].vote(decision, 'approve'), {
        voted: true,
        quorumReached: true,
        finalDecision: 'approve',
        voteCount: 2,
      });
      const seen = [];
      for (const stream of streams) seen.push(await nextEvent(stream));
      for (const event of seen) {
        assert.equal(event.event, 'quorum.decision.made');
        assert.equal(event.decision, decision);
        assert.equal(event.value, 'approve');
        assert.equal(event.voteCount, 2);
        assert.equal(event.quorum, 2);
        assert.equal(event.totalInstances, 3);
      }
      assert.equal(new Set(seen.map((event) => event.eventId)).size, 1, 'one event, the same for all three');
      for (const client of clients) assert.equal(client.lastEventId, seen[0].eventId);

      // The third vote is not recorded: it is answered with the final decision.
      const late = await clients[2].vote(decision, 'deny');
      assert.equal(late.voted, false);
      assert.equal(late.reason, 'decided');
      assert.equal(late.finalDecision, 'approve');
      const again = await clients[0].vote(decision, 'approve');
      assert.equal(again.reason, 'already_voted');
      assert.equal(again.recordedValue, 'approve');

      const status = await clients[2].status(decision);
      assert.equal(status.state, 'decided');
      assert.equal(status.finalDecision, 'approve');
      assert.deepEqual(status.tally, { approve: 2 });
      assert.deepEqual(
        status.votes.map((vote) => vote.instanceId),
        ['agent-0', 'agent-1'],
      );

      const state = await clients[0].getState({ limit: 10 });
      const registered = new Map(state.instances.map((instance) => [instance.instanceId, instance]));
      assert.deepEqual([...registered.keys()], ['agent-0', 'agent-1', 'agent-2']);
      assert.deepEqual(registered.get('agent-2').roles, ['worker']);
      assert.deepEqual(registered.get('agent-2').metadata, { n: 2 });
      assert.deepEqual(
        state.decisions.map((summary) => summary.decision),
        [decision],
      );
      // Paging: one instance a page.
      const pages = [];
      let page = await clients[0].getState({ limit: 1 });
      for (;;) {
        pages.push(page.instances.map((instance) => instance.instanceId));
        if (page.nextInstances === null) break;
        page = await clients[0].getState({ limit: 1, instancesAfter: page.nextInstances });
      }
      assert.deepEqual(pages, [['agent-0'], ['agent-1'], ['agent-2']]);
    } finally {
      for (const client of clients) client.close();
    }
    // Each stream ends once its client is closed.
    for (const stream of streams) assert.equal(await nextEvent(stream), null);
  }));

test('an expired decision is delivered tagged', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const decision = name('expiring');
    const client = await Client.connect(hub.url, { instanceId: 'lonely' });
    try {
      const events = client.decisions();
      assert.deepEqual(await client.vote(decision, 'approve', { totalInstances: 3, closeAfterMs: 200 }), {
        voted: true,
        quorumReached: false,
        voteCount: 1,
      });
      const event = await nextEvent(events);
      assert.equal(event.event, 'quorum.decision.expired');
      assert.equal(event.decision, decision);
      assert.deepEqual(event.tally, { approve: 1 });
      assert.equal(event.voteCount, 1);
      assert.equal(event.quorum, 2);
      assert.equal('value' in event, false);
      assert.equal(client.lastEventId, event.eventId);
      assert.equal((await client.status(decision)).state, 'expired');
    } finally {
      client.close();
    }
  }));

test('errors are typed', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const client = await Client.connect(hub.url, { instanceId: 'typed' });
    try {
      await assert.rejects(client.vote('has space', 'approve', { totalInstances: 1 }), (error) => {
        assert.ok(error instanceof InvalidParams && error instanceof RpcError);
        assert.equal(error.code, -32602);
        assert.equal(error.field, 'decision');
        return true;
      });
      await assert.rejects(client.status(name('nothing')), (error) => error instanceof DecisionNotFound && error.code === -32004);
      await assert.rejects(client.getState({ limitt: 3 }), (error) => error instanceof InvalidParams && error.field === 'limitt');
      await assert.rejects(client.call('system.nope'), (error) => error instanceof MethodNotFound && error.code === -32601);
      // No secret: there is no token to refresh.
      await assert.rejects(client.refreshToken('anything'), (error) => error instanceof InvalidRequest && error.code === -32600);
      // Another session holds the instance: registering fails at connect.
      await assert.rejects(Client.connect(hub.url, { instanceId: 'typed' }), (error) => error instanceof Unauthorized && error.code === -32002);
      // A client without an instance cannot vote.
      const anonymous = await Client.connect(hub.url);
      assert.throws(() => anonymous.vote('d', 'v'), TypeError);
      anonymous.close();
    } finally {
      client.close();
    }
    // A closed client's calls fail as such.
    await assert.rejects(client.status('anything'), (error) => error instanceof ClientClosed && error instanceof ConnectionLost);
  }));

test('a vote beyond the rate limit is refused with retryAfterMs, and not recorded', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub({ '--vote-rate-limit': '1/60s' });
    const client = await Client.connect(hub.url, { instanceId: 'eager' });
    try {
      const first = name('one');
      assert.equal((await client.vote(first, 'a', { totalInstances: 3 })).voted, true);
      const second = name('two');
      await assert.rejects(client.vote(second, 'a', { totalInstances: 3 }), (error) => {
        assert.ok(error instanceof RateLimited, String(error));
        assert.equal(error.code, -32000);
        assert.ok(error.retryAfterMs > 0 && error.retryAfterMs <= 60_000, String(error.retryAfterMs));
        return true;
      });
      await assert.rejects(client.status(second), DecisionNotFound);
      // A retry of the vote that counted still gets its answer.
      assert.equal((await client.vote(first, 'a')).reason, 'already_voted');
    } finally {
      client.close();
    }
  }));

test('backend errors are typed: unavailable, then the circuit open', () =>
  withRedis(async ({ redis, startHub }) => {
    const hub = await startHub({ '--breaker-failures': '3' });
    const client = await Client.connect(hub.url, { instanceId: 'backend' });
    try {
      const decision = name('backend');
      await client.vote(decision, 'x', { totalInstances: 3 });
      await redis.stop();
      const unavailable = [];
      let circuit = null;
      while (circuit === null) {
        try {
          await client.status(decision);
          assert.fail('a status without Redis');
        } catch (error) {
          if (error instanceof BackendUnavailable) {
            unavailable.push(error);
            assert.ok(unavailable.length <= 3, 'the breaker should be open by now');
          } else if (error instanceof CircuitOpen) {
            circuit = error;
          } else {
            throw error;
          }
        }
      }
      assert.deepEqual(
        unavailable.map((error) => error.code),
        [-32005, -32005, -32005],
      );
      assert.equal(circuit.code, -32001);
      assert.equal(circuit.reason, 'circuit_open');
      assert.ok(circuit.retryAfterMs > 0 && circuit.retryAfterMs <= 30_000);
      assert.deepEqual(await client.vote(name('later'), 'x', { totalInstances: 3 }), {
        voted: false,
        quorumReached: false,
        reason: 'circuit_open',
      });
      assert.equal(client.connections, 1);
    } finally {
      client.close();
    }
  }));

test('a call while the hub is down waits for the reconnection, then fails clearly', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const client = await Client.connect(hub.url, { instanceId: 'patient', reconnectWaitMs: 500, minBackoffMs: 50, maxBackoffMs: 200 });
    try {
      await hub.kill();
      await eventually('the client to notice the drop', () => !client.connected);
      await eventually('a failed reconnection', () => client.connections === 1 && /cannot connect/.test(client.lastError ?? ''));
      const started = Date.now();
      await assert.rejects(client.status('anything'), (error) => {
        assert.ok(error instanceof ConnectionLost);
        assert.match(error.message, /system\.quorum\.status: not connected .* after 0\.5 s \(last: cannot connect/);
        return true;
      });
      const waited = Date.now() - started;
      assert.ok(waited >= 450 && waited < 2000, String(waited));
      // A call made while disconnected goes through once the hub is back in time.
      client.reconnectWaitMs = 20_000;
      const pending = client.getState();
      await hub.restart();
      const state = await pending;
      assert.ok('hub' in state);
      assert.equal(client.connections, 2);
    } finally {
      client.close();
    }
  }));
