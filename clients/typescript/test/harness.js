// Processes for the suite: a private redis-server and quorum-hub processes on free ports,
// and `eventually`, which polls a condition with a deadline (no test sleeps a fixed time to
// wait for something).
//
// Needs `redis-server` on PATH (or QUORUM_REDIS_SERVER) and the hub binary, by default
// target/debug/quorum-hub at the repository's root (or QUORUM_HUB_BIN).

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

export const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(PACKAGE, '..', '..');
/** Longest any condition is waited for (ms). */
export const DEADLINE = 20_000;
/** The secret of hubs started with auth. */
export const SECRET = `test-secret-${'x'.repeat(32)}`;

export const delay = (ms) => new Promise((done) => setTimeout(done, ms));

/** Polls `check` (plain or async) until it returns something truthy, or fails after `deadline` ms. */
export async function eventually(what, check, deadline = DEADLINE) {
  const end = Date.now() + deadline;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(20);
  }
}

/** Resolves with the next value of an async iterator, failing after `deadline` ms. */
export async function nextEvent(events, deadline = DEADLINE) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out waiting for an event')), deadline);
  });
  try {
    const { value, done } = await Promise.race([events.next(), timeout]);
    return done ? null : value;
  } finally {
    clearTimeout(timer);
  }
}

/** A unique name with a prefix. */
export const name = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export function hubBinary() {
  const binary = process.env.QUORUM_HUB_BIN ?? join(REPO, 'target', 'debug', 'quorum-hub');
  if (!existsSync(binary)) throw new Error(`no hub binary at ${binary}: run cargo build, or set QUORUM_HUB_BIN`);
  return binary;
}

/** A token for `sub` minted by `quorum-hub token` with `ttl` (e.g. `1h`, `2s`). */
export function mintToken(sub, ttl = '1h', roles = []) {
  const granted = roles.flatMap((role) => ['--role', role]);
  return execFileSync(hubBinary(), ['token', '--sub', sub, '--ttl', ttl, ...granted], {
    env: { ...process.env, QUORUM_AUTH_SECRET: SECRET },
    encoding: 'utf8',
  }).trim();
}

function pong(port) {
  return new Promise((answer) => {
    const socket = createConnection({ port, host: '127.0.0.1' }, () => socket.write('PING\r\n'));
    socket.setTimeout(1000, () => socket.destroy());
    socket.once('data', (data) => {
      answer(data.toString().startsWith('+PONG'));
      socket.destroy();
    });
    socket.once('error', () => answer(false));
    socket.once('close', () => answer(false));
  });
}

/** Kills a child and waits for it to exit. */
function kill(child, signal = 'SIGKILL') {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    child.once('exit', () => done());
    child.kill(signal);
  });
}

/** A private redis-server on a free port (no persistence). */
export class RedisServer {
  static async start() {
    const server = new RedisServer();
    server.dir = mkdtempSync(join(tmpdir(), 'quorum-ts-redis-'));
    server.port = await freePort();
    const binary = process.env.QUORUM_REDIS_SERVER ?? 'redis-server';
    server.proc = spawn(binary, ['--port', String(server.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', server.dir], {
      stdio: 'ignore',
    });
    server.proc.once('error', (error) => {
      server.failed = error;
    });
    await eventually('redis-server to answer', async () => {
      if (server.failed) throw new Error(`redis-server could not start: ${server.failed.message} (make test installs it)`);
      if (server.proc.exitCode !== null) throw new Error(`redis-server exited with ${server.proc.exitCode}`);
      return pong(server.port);
    });
    return server;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  async stop() {
    await kill(this.proc);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A quorum-hub process; `addr` is the address it logged. */
export class Hub {
  /** `options`: flags with their values, e.g. `{'--auth-secret': SECRET}`. */
  static async start(redis, options = {}) {
    const hub = new Hub();
    hub.options = {
      '--listen': '127.0.0.1:0',
      '--redis-url': redis.url,
      '--vote-rate-limit': 'off',
      '--session-rate-limit': 'off',
      // A killed hub leaves its sessions' bindings in Redis until this TTL ends.
      '--instance-ttl': '2',
      '--web-dir': join(REPO, 'web-demo'),
      ...options,
    };
    await hub.#start();
    return hub;
  }

  async #start() {
    const args = Object.entries(this.options).flat();
    this.lines = [];
    this.proc = spawn(hubBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    let partial = '';
    const collect = (chunk) => {
      const text = partial + chunk.toString();
      const lines = text.split('\n');
      partial = lines.pop();
      this.lines.push(...lines);
    };
    this.proc.stdout.on('data', collect);
    this.proc.stderr.on('data', collect);
    const found = await eventually('the hub to log `listening on ADDR`', () => {
      if (this.proc.exitCode !== null) throw new Error(`the hub exited:\n${this.lines.join('\n')}`);
      for (const line of this.lines) {
        const match = /listening on (\S+)/.exec(line);
        if (match) return match[1];
      }
      return null;
    });
    this.addr = found;
  }

  get url() {
    return `ws://${this.addr}/ws`;
  }

  /** SIGKILL: a crash, not a shutdown (sessions' bindings stay in Redis). */
  async kill() {
    await kill(this.proc);
  }

  /** Starts the same hub again on the same address. */
  async restart() {
    this.options['--listen'] = this.addr;
    const end = Date.now() + DEADLINE;
    for (;;) {
      try {
        await this.#start();
        return;
      } catch (error) {
        // The port may not be free again yet.
        if (Date.now() > end) throw error;
        await delay(100);
      }
    }
  }

  async stop() {
    await kill(this.proc);
  }
}

/**
 * Runs `body` with a fresh redis-server and a way to start hubs on it; stops them all after.
 */
export async function withRedis(body) {
  const redis = await RedisServer.start();
  const hubs = [];
  const startHub = async (options) => {
    const hub = await Hub.start(redis, options);
    hubs.push(hub);
    return hub;
  };
  try {
    return await body({ redis, startHub });
  } finally {
    for (const hub of hubs) await hub.stop();
    await redis.stop();
  }
}
