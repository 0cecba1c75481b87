// Tokens on a hub with --auth-secret, made with `quorum-hub token`: sent as a header or in
// the query, refreshed before they expire (system.auth.refresh), fresh at each reconnection.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Client, ConnectionLost, Unauthorized, tokenExpiryMs } from '../src/index.js';
import { SECRET, eventually, mintToken, name, withRedis } from './harness.js';

const AUTH = { '--auth-secret': SECRET };

describe('tokens', { concurrency: true }, () => {
  test('the expiry is read from the token', () => {
    const token = mintToken('reader', '1h');
    const expiry = tokenExpiryMs(token);
    assert.ok(Math.abs(expiry - (Date.now() + 3_600_000)) < 5000, String(expiry));
    assert.equal(tokenExpiryMs('not-a-jwt'), null);
    assert.equal(tokenExpiryMs('a.b.c'), null);
  });

  test('a token goes as a bearer header or in the query; none is refused', () =>
    withRedis(async ({ startHub }) => {
      const hub = await startHub(AUTH);
      await assert.rejects(Client.connect(hub.url, { instanceId: 'anon' }), (error) => {
        assert.ok(error instanceof ConnectionLost);
        assert.match(error.message, /HTTP 401/);
        return true;
      });
      const client = await Client.connect(hub.url, { instanceId: 'tok-1', token: mintToken('tok-1') });
      try {
        assert.equal((await client.vote(name('t'), 'v', { totalInstances: 1 })).voted, true);
        assert.ok(Math.abs(client.tokenExpiresAt - (Date.now() + 3_600_000)) < 5000);
        // A token for another instance may not act as this one.
        await assert.rejects(
          client.call('system.quorum.vote', { instanceId: 'tok-2', decision: 'd', value: 'v' }),
          Unauthorized,
        );
      } finally {
        client.close();
      }
      const inQuery = await Client.connect(hub.url, { instanceId: 'tok-2', token: () => mintToken('tok-2'), tokenInQuery: true });
      try {
        assert.equal((await inQuery.vote(name('t'), 'v', { totalInstances: 1 })).voted, true);
      } finally {
        inQuery.close();
      }
    }));

  test('a token function extends the session before the token expires', () =>
    withRedis(async ({ startHub }) => {
      const hub = await startHub(AUTH);
      const issued = [];
      const token = async () => {
        // The first token lives 2 s (the hub ends its session 5 s after that); the next, an hour.
        const minted = mintToken('extended', issued.length === 0 ? '2s' : '1h');
        issued.push(tokenExpiryMs(minted));
        return minted;
      };
      const client = await Client.connect(hub.url, { instanceId: 'extended', token });
      try {
        await eventually('the session to be extended', () => issued.length === 2 && client.tokenExpiresAt === issued[1]);
        // Past the end of the first token's session (exp plus the hub's 5 s leeway) the
        // session is the same one, and votes.
        await eventually('the first token\'s session end to pass', () => Date.now() > issued[0] + 5000 + 1000, 15_000);
        assert.equal(client.connected, true);
        assert.equal(client.connections, 1);
        assert.equal((await client.vote(name('still'), 'v', { totalInstances: 1 })).voted, true);
        assert.equal(client.connections, 1);
        assert.equal(issued.length, 2, 'the new token has an hour: nothing asked since');
      } finally {
        client.close();
      }
    }));

  test('a fixed token that expires ends the session, and the reconnection is refused', () =>
    withRedis(async ({ startHub }) => {
      const hub = await startHub(AUTH);
      const token = mintToken('fixed', '1s');
      const exp = tokenExpiryMs(token);
      const client = await Client.connect(hub.url, { instanceId: 'fixed', token, reconnectWaitMs: 300, minBackoffMs: 50, maxBackoffMs: 200 });
      try {
        assert.equal(client.tokenExpiresAt, exp);
        await eventually('the hub to end the session', () => !client.connected, 15_000);
        assert.ok(Date.now() >= exp + 5000 - 500, 'not before exp plus the hub\'s leeway');
        await eventually('the reconnection to be refused', () => /HTTP 401/.test(client.lastError ?? ''));
        await assert.rejects(client.status('anything'), (error) => error instanceof ConnectionLost && /HTTP 401/.test(error.message));
      } finally {
        client.close();
      }
    }));

  test('refreshToken extends the session and serves the next connection', () =>
    withRedis(async ({ startHub }) => {
      const hub = await startHub(AUTH);
      const first = mintToken('manual', '1s');
      const client = await Client.connect(hub.url, { instanceId: 'manual', token: first, minBackoffMs: 50, maxBackoffMs: 300 });
      try {
        const later = mintToken('manual', '10m');
        assert.deepEqual(await client.refreshToken(later), { expiresAt: tokenExpiryMs(later) });
        assert.equal(client.tokenExpiresAt, tokenExpiryMs(later));
        // A token for another instance is refused; the session goes on.
        await assert.rejects(client.refreshToken(mintToken('someone-else', '10m')), (error) => error instanceof Unauthorized && error.code === -32002);
        await assert.rejects(client.refreshToken(), TypeError); // no token function to ask
        assert.equal(client.tokenExpiresAt, tokenExpiryMs(later));
        // Past the first token's end the session goes on, and a reconnection (the first
        // token is dead by then) uses the refreshed one.
        await eventually('the first token\'s end to pass', () => Date.now() > tokenExpiryMs(first) + 5000 + 500, 15_000);
        assert.equal(client.connected, true);
        assert.equal(client.connections, 1);
        await hub.kill();
        await hub.restart();
        await eventually('the client to reconnect', () => client.connections === 2);
        assert.equal((await client.vote(name('manual'), 'v', { totalInstances: 1 })).voted, true);
      } finally {
        client.close();
      }
    }));
});
