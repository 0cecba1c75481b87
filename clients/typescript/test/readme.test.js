// The README's agent runs as written (three agents against a real hub, and one with a token
// file), and `npm pack` makes a tarball that installs and imports.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { PACKAGE, SECRET, eventually, mintToken, name, withRedis } from './harness.js';

const EXAMPLE = join(PACKAGE, 'examples', 'agent.js');

/** Starts the README's agent; `lines` fills with its output, `exit` resolves with its code. */
function agent(args, env = {}) {
  const proc = spawn(process.execPath, [EXAMPLE, ...args], { cwd: PACKAGE, env: { ...process.env, ...env } });
  const lines = [];
  let partial = '';
  const collect = (chunk) => {
    const parts = (partial + chunk.toString()).split('\n');
    partial = parts.pop();
    lines.push(...parts);
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  const exit = new Promise((done) => proc.once('close', (code) => done(code)));
  return { proc, lines, exit };
}

const output = (run) => run.lines.join('\n');

test('the README shows examples/agent.js as it is', () => {
  const readme = readFileSync(join(PACKAGE, 'README.md'), 'utf8');
  assert.ok(readme.includes('```js\n' + readFileSync(EXAMPLE, 'utf8') + '```'), 'README.md must show examples/agent.js as is');
});

test('the README\'s agent, three times: the second vote decides and every agent prints it', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub();
    const decision = name('readme');
    const runs = [];
    try {
      const first = agent([hub.url, 'agent-1', '--decision', decision]);
      runs.push(first);
      await eventually('agent-1 to vote', () => first.lines.includes('agent-1 voted: {"voted":true,"quorumReached":false,"voteCount":1}'));
      const second = agent([hub.url, 'agent-2', '--decision', decision]);
      runs.push(second);
      assert.equal(await second.exit, 0, output(second));
      assert.deepEqual(second.lines, [
        'agent-2 voted: {"voted":true,"quorumReached":true,"finalDecision":"approve","voteCount":2}',
        `agent-2: ${decision} -> approve`,
      ]);
      assert.equal(await first.exit, 0, output(first));
      assert.deepEqual(first.lines, [
        'agent-1 voted: {"voted":true,"quorumReached":false,"voteCount":1}',
        `agent-1: ${decision} -> approve (2/3 votes)`,
      ]);
      const third = agent([hub.url, 'agent-3', '--decision', decision]);
      runs.push(third);
      assert.equal(await third.exit, 0, output(third));
      assert.deepEqual(third.lines, [
        'agent-3 voted: {"voted":false,"quorumReached":true,"finalDecision":"approve","voteCount":2,"reason":"decided"}',
        `agent-3: ${decision} -> approve`,
      ]);
    } finally {
      for (const run of runs) run.proc.kill();
    }
  }));

test('the README\'s agent with a token file, and without one on a hub with a secret', () =>
  withRedis(async ({ startHub }) => {
    const hub = await startHub({ '--auth-secret': SECRET });
    const dir = mkdtempSync(join(tmpdir(), 'quorum-ts-token-'));
    try {
      const tokenFile = join(dir, 'token');
      // The example registers with the role "worker": its token grants it.
      writeFileSync(tokenFile, `${mintToken('agent-9', '10m', ['worker'])}\n`);
      const decision = name('with-token');
      const run = agent([hub.url, 'agent-9', '--decision', decision, '--total', '1'], { QUORUM_TOKEN_FILE: tokenFile });
      assert.equal(await run.exit, 0, output(run));
      assert.deepEqual(run.lines, [
        'agent-9 voted: {"voted":true,"quorumReached":true,"finalDecision":"approve","voteCount":1}',
        `agent-9: ${decision} -> approve`,
      ]);
      const refused = agent([hub.url, 'agent-9', '--decision', decision]);
      assert.notEqual(await refused.exit, 0);
      assert.match(output(refused), /HTTP 401/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }));

test('npm pack makes a tarball that installs, imports and type-checks', () => {
  const dir = mkdtempSync(join(tmpdir(), 'quorum-ts-pack-'));
  try {
    const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: PACKAGE, encoding: 'utf8', stdio: 'pipe' }));
    const files = packed.files.map((file) => file.path).sort();
    for (const file of ['README.md', 'package.json', 'src/client.js', 'src/errors.js', 'src/index.d.ts', 'src/index.js', 'src/protocol.d.ts']) {
      assert.ok(files.includes(file), `${file} is in the tarball: ${files.join(', ')}`);
    }
    assert.ok(!files.some((file) => file.startsWith('test/') || file.startsWith('node_modules/')), files.join(', '));
    // Installed as npm installs it (unpacked into node_modules, beside its dependency).
    const project = join(dir, 'agent');
    const installed = join(project, 'node_modules', 'quorum-hub-client');
    mkdirSync(installed, { recursive: true });
    execFileSync('tar', ['-xzf', join(dir, packed.filename), '-C', installed, '--strip-components=1']);
    symlinkSync(join(PACKAGE, 'node_modules', 'ws'), join(project, 'node_modules', 'ws'));
    writeFileSync(join(project, 'package.json'), '{"type": "module"}\n');
    writeFileSync(
      join(project, 'agent.ts'),
      "import { Client, RateLimited, type VoteReply } from 'quorum-hub-client';\n" +
        "const reply: Promise<VoteReply> = new Client('ws://127.0.0.1:1/ws', { instanceId: 'a' }).vote('d', 'v', { totalInstances: 3 });\n" +
        'export { reply, RateLimited };\n',
    );
    const imported = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('quorum-hub-client'); console.log(typeof m.Client, m.EVENT_BUFFER)"],
      { cwd: project, encoding: 'utf8' },
    );
    assert.equal(imported.trim(), 'function 1024');
    const tsc = join(PACKAGE, 'node_modules', 'typescript', 'bin', 'tsc');
    execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', join(project, 'agent.ts')], {
      cwd: project,
      encoding: 'utf8',
      stdio: 'pipe',
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
