// The client's types follow the hub's OpenRPC document (`quorum-hub openrpc`): the
// generated src/protocol.d.ts is up to date, the method and event names the client uses are
// the document's, and a change to the protocol that the declarations miss fails `tsc`.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { OUTPUT, generate, readDocument } from '../scripts/generate-types.js';
import { DECISION_EXPIRED, DECISION_MADE, EVENTS_INCOMPLETE, INSTANCE_LOST } from '../src/index.js';
import { PACKAGE } from './harness.js';

const document = readDocument();

test('src/protocol.d.ts is generated from the hub\'s current OpenRPC document', () => {
  assert.equal(
    readFileSync(OUTPUT, 'utf8'),
    generate(document),
    'src/protocol.d.ts is out of date with `quorum-hub openrpc`: run `npm run generate` in clients/typescript, then fix what tsc reports',
  );
});

test('every method and event the client names is in the document', () => {
  const methods = new Set(document.methods.map((method) => method.name));
  const source = readFileSync(join(PACKAGE, 'src', 'client.js'), 'utf8');
  const used = new Set([...source.matchAll(/'(system\.[a-z_.]+)'/g)].map((match) => match[1]));
  const notifications = new Set(document['x-notifications'].map((notification) => notification.name));
  for (const method of used) {
    assert.ok(methods.has(method) || notifications.has(method), `${method} is not in the OpenRPC document`);
  }
  for (const method of ['system.register', 'system.quorum.vote', 'system.quorum.status', 'system.get_state', 'system.auth.refresh', 'system.subscribe']) {
    assert.ok(used.has(method), `the client calls ${method}`);
  }
  for (const event of [DECISION_MADE, DECISION_EXPIRED, EVENTS_INCOMPLETE, INSTANCE_LOST]) {
    assert.ok(notifications.has(event), `${event} is a notification of the document`);
  }
});

test('a protocol change the declarations miss fails the type check', () => {
  // The declarations and the type check, against the document with the vote's
  // `closeAfterMs` renamed: `VoteOptions` no longer fits.
  const changed = structuredClone(document);
  const vote = changed.methods.find((method) => method.name === 'system.quorum.vote');
  vote.params.find((param) => param.name === 'closeAfterMs').name = 'closeAfter';
  const dir = mkdtempSync(join(tmpdir(), 'quorum-ts-types-'));
  try {
    cpSync(join(PACKAGE, 'src'), join(dir, 'src'), { recursive: true });
    cpSync(join(PACKAGE, 'test', 'types.check.ts'), join(dir, 'test', 'types.check.ts'));
    cpSync(join(PACKAGE, 'tsconfig.json'), join(dir, 'tsconfig.json'));
    const tsc = join(PACKAGE, 'node_modules', 'typescript', 'bin', 'tsc');
    const check = () => execFileSync(process.execPath, [tsc, '--noEmit', '-p', dir], { encoding: 'utf8', stdio: 'pipe' });
    check(); // the declarations as shipped pass
    writeFileSync(join(dir, 'src', 'protocol.d.ts'), generate(changed));
    assert.throws(check, (error) => {
      assert.match(error.stdout, /closeAfterMs/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
