#!/usr/bin/env node
// Writes src/protocol.d.ts, the wire types, from the hub's OpenRPC document: every schema
// in components.schemas, every method's params and result (`Methods`), and every pushed
// notification's params (`Notifications`).
//
//   node scripts/generate-types.js [openrpc.json]   (default: `$QUORUM_HUB_BIN openrpc`)
//
// `--check` compares instead of writing and exits 1 when src/protocol.d.ts is out of date.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO = resolve(PACKAGE, '..', '..');
export const OUTPUT = join(PACKAGE, 'src', 'protocol.d.ts');

/** The hub binary the document is read from. */
export function hubBinary() {
  return process.env.QUORUM_HUB_BIN ?? join(REPO, 'target', 'debug', 'quorum-hub');
}

/** The OpenRPC document `quorum-hub openrpc` prints. */
export function readDocument(path) {
  const text = path ? readFileSync(path, 'utf8') : execFileSync(hubBinary(), ['openrpc'], { encoding: 'utf8' });
  return JSON.parse(text);
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const key = (name) => (IDENTIFIER.test(name) ? name : JSON.stringify(name));

function comment(text, indent) {
  if (!text) return '';
  const lines = text.split('\n');
  if (lines.length === 1) return `${indent}/** ${text.replace(/\*\//g, '*\\/')} */\n`;
  return `${indent}/**\n${lines.map((line) => `${indent} * ${line.replace(/\*\//g, '*\\/')}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

/** The TypeScript type of a JSON Schema. */
function type(schema, indent = '') {
  if (schema === true || schema === undefined) return 'unknown';
  if (schema.$ref) return schema.$ref.replace('#/components/schemas/', '');
  if ('const' in schema) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((value) => JSON.stringify(value)).join(' | ');
  const union = schema.oneOf ?? schema.anyOf;
  if (union) return [...new Set(union.map((member) => type(member, indent)))].join(' | ');
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.map((one) => single(one, schema, indent)).join(' | ');
}

function single(kind, schema, indent) {
  switch (kind) {
    case 'null':
      return 'null';
    case 'boolean':
      return 'boolean';
    case 'integer':
    case 'number':
      return 'number';
    case 'string':
      return 'string';
    case 'array':
      return `Array<${type(schema.items, indent)}>`;
    case 'object':
      if (schema.properties) return object(schema, indent);
      return `Record<string, ${schema.additionalProperties === undefined ? 'unknown' : type(schema.additionalProperties, indent)}>`;
    default:
      return 'unknown';
  }
}

function object(schema, indent) {
  const required = new Set(schema.required ?? []);
  const inner = `${indent}  `;
  const fields = Object.entries(schema.properties).map(
    ([name, property]) =>
      `${comment(property.description, inner)}${inner}${key(name)}${required.has(name) ? '' : '?'}: ${type(property, inner)};\n`,
  );
  return `{\n${fields.join('')}${indent}}`;
}

function params(list, indent) {
  return object(
    {
      properties: Object.fromEntries(list.map((param) => [param.name, { ...param.schema, description: param.description }])),
      required: list.filter((param) => param.required).map((param) => param.name),
    },
    indent,
  );
}

/** src/protocol.d.ts for `document`. */
export function generate(document) {
  let out = `// The hub's wire types, generated from its OpenRPC document (quorum-hub openrpc)\n`;
  out += '// by scripts/generate-types.js: do not edit; run `npm run generate` after a protocol change.\n\n';
  for (const [name, schema] of Object.entries(document.components.schemas)) {
    out += comment(schema.description, '');
    out += `export type ${name} = ${type(schema)};\n\n`;
  }
  out += '/** Every method: its params (by name) and its result. */\nexport interface Methods {\n';
  for (const method of document.methods) {
    out += comment(method.summary, '  ');
    out += `  ${key(method.name)}: {\n    params: ${params(method.params, '    ')};\n    result: ${type(method.result.schema, '    ')};\n  };\n`;
  }
  out += '}\n\n/** Every notification the hub pushes to a session: its params. */\nexport interface Notifications {\n';
  for (const notification of document['x-notifications']) {
    out += comment(notification.summary, '  ');
    const shape = notification['x-params-schema'] ? type(notification['x-params-schema'], '  ') : params(notification.params, '  ');
    out += `  ${key(notification.name)}: ${shape};\n`;
  }
  out += '}\n\n/** The JSON-RPC error codes the hub answers with, by name. */\nexport interface ErrorCodes {\n';
  for (const [name, error] of Object.entries(document.components.errors)) {
    out += comment(error.message, '  ');
    out += `  ${key(name)}: ${error.code};\n`;
  }
  out += '}\n';
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const path = args.find((arg) => arg !== '--check');
  const text = generate(readDocument(path));
  if (check) {
    if (readFileSync(OUTPUT, 'utf8') !== text) {
      console.error(`${OUTPUT} is out of date with the hub's OpenRPC document: run \`npm run generate\``);
      process.exit(1);
    }
  } else {
    writeFileSync(OUTPUT, text);
  }
}
