// Validates AsyncAPI documents against the official AsyncAPI schema (and the
// parser's own rules) with @asyncapi/parser, offline:
//
//   node ci/asyncapi/validate.mjs FILE...
//
// Prints every diagnostic (file, severity, code, path, message) and exits 1 when
// any file has a diagnostic of severity error (or cannot be read), 0 otherwise.
// The parser is loaded from $CI_NODE/node_modules (default target/ci-node, where
// .ci/run installs a pinned @asyncapi/parser with npm).

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ciNode = path.resolve(root, process.env.CI_NODE ?? 'target/ci-node');
const require = createRequire(path.join(ciNode, 'package.json'));

let parserModule;
try {
  parserModule = require('@asyncapi/parser');
} catch (error) {
  console.error(`cannot load @asyncapi/parser from ${ciNode}/node_modules: ${error.message}`);
  process.exit(2);
}
const { Parser, DiagnosticSeverity } = parserModule;

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node ci/asyncapi/validate.mjs FILE...');
  process.exit(2);
}

const severityName = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
let failed = false;
for (const file of files) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    console.error(`${file}: cannot read: ${error.message}`);
    failed = true;
    continue;
  }
  const { document, diagnostics } = await parser.parse(text, { source: path.resolve(file) });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const d of diagnostics) {
    const where = d.path && d.path.length > 0 ? d.path.join('.') : '(document)';
    console.log(`${file}: ${severityName[d.severity] ?? d.severity}: ${d.code}: ${where}: ${d.message}`);
  }
  if (errors.length > 0 || document === undefined) {
    console.log(`${file}: INVALID (${errors.length} error(s))`);
    failed = true;
  } else {
    const version = document.version();
    console.log(`${file}: valid AsyncAPI ${version} (${diagnostics.length} non-error diagnostic(s))`);
  }
}
process.exit(failed ? 1 : 0);
