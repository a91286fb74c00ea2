#!/usr/bin/env node
// Summarises V8 .cpuprofile files (from `node bench/run.mjs --cpu-prof DIR`):
// top functions by self time and by total (inclusive) time, with file:line
// mapped back to lib/ and engines/ TypeScript through dist/'s source maps,
// and self time grouped by area (express-spool, @fastify/busboy, express, node internals, GC…).
//
//   node bench/profile-summary.mjs /tmp/prof/spool-*.cpuprofile [--top 30]

import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';
import { relative, dirname, join } from 'node:path';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
let top = 30;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i]);
  else files.push(args[i]);
}
if (!files.length) {
  process.stderr.write('usage: node bench/profile-summary.mjs <file.cpuprofile>... [--top N]\n');
  process.exit(2);
}

const maps = new Map();
function sourceMapFor(path) {
  if (!maps.has(path)) {
    try {
      maps.set(path, new SourceMap(JSON.parse(readFileSync(`${path}.map`, 'utf8'))));
    } catch {
      maps.set(path, null);
    }
  }
  return maps.get(path);
}

/** "lib/file-tap.ts:42" for dist code, "node_modules/x/y.js:10" or "node:internal/…:10" otherwise. */
function location(cf) {
  const { url, lineNumber, columnNumber } = cf;
  if (!url) return '';
  if (url.startsWith('node:')) return `${url}:${lineNumber + 1}`;
  let path;
  try {
    path = url.startsWith('file:') ? fileURLToPath(url) : url;
  } catch {
    return url;
  }
  if (path.includes('/dist/')) {
    const sm = sourceMapFor(path);
    const e = sm?.findEntry(lineNumber, columnNumber);
    if (e && e.originalSource) {
      const src = e.originalSource.startsWith('file:') ? fileURLToPath(e.originalSource) : join(dirname(path), e.originalSource);
      return `${relative(ROOT, src)}:${e.originalLine + 1}`;
    }
  }
  return `${relative(ROOT, path)}:${lineNumber + 1}`;
}

function area(cf) {
  const { url, functionName } = cf;
  if (!url) {
    if (functionName === '(garbage collector)') return 'GC';
    if (functionName === '(program)') return '(program: native/VM, not attributed)';
    if (functionName === '(idle)') return '(idle)';
    return `native: ${functionName || '(anonymous)'}`;
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/').slice(0, 2).join('/')}`;
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.includes('/dist/lib/') || url.includes('/dist/engines/')) return 'express-spool (lib/, engines/)';
  if (url.includes('/bench/')) return 'bench harness (server.mjs)';
  return url;
}

/** Frames that are "transparent": node internals and natives take their cost to the code that called them. */
const transparent = (cf) => !cf.url || cf.url.startsWith('node:');
const owners = new Map(); // owner frame key -> ms (its self time + node internals it called directly)
const ownerAreas = new Map();
const self = new Map();
const incl = new Map();
const areas = new Map();
let busy = 0;
let idle = 0;
for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = new Map();
  for (const n of p.nodes) {
    const cf = n.callFrame;
    keyOf.set(n.id, `${cf.functionName || '(anonymous)'}  ${location(cf)}`);
  }
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1e3; // ms
    const id = p.samples[i];
    const n = byId.get(id);
    if (n.callFrame.functionName === '(idle)') {
      idle += dt;
      continue;
    }
    busy += dt;
    const k = keyOf.get(id);
    self.set(k, (self.get(k) ?? 0) + dt);
    const a = area(n.callFrame);
    areas.set(a, (areas.get(a) ?? 0) + dt);
    // Owner: the innermost non-node frame on the stack.
    let owner = id;
    while (owner !== undefined && transparent(byId.get(owner).callFrame) && parent.get(owner) !== undefined) owner = parent.get(owner);
    const ok = owner !== undefined && !transparent(byId.get(owner).callFrame) ? keyOf.get(owner) : `(node/native with no JS caller) ${k}`;
    owners.set(ok, (owners.get(ok) ?? 0) + dt);
    const oa = owner !== undefined ? area(byId.get(owner).callFrame) : a;
    ownerAreas.set(oa, (ownerAreas.get(oa) ?? 0) + dt);
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const kk = keyOf.get(cur);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + dt);
    }
  }
}

const pct = (x) => `${((100 * x) / busy).toFixed(1)}%`;
const out = [];
out.push(`${files.length} profile(s); busy ${busy.toFixed(0)} ms, idle ${idle.toFixed(0)} ms; percentages are of busy time`, '');
out.push('By area (self time):', '');
for (const [k, v] of [...areas].sort((a, b) => b[1] - a[1])) out.push(`  ${pct(v).padStart(6)}  ${v.toFixed(0).padStart(7)} ms  ${k}`);
out.push('', `Top ${top} functions by self time:`, '');
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(v).padStart(6)}  ${v.toFixed(0).padStart(7)} ms  ${k}`);
out.push('', 'By owner: self time plus the node internals each JS package called directly (streams, events, crypto, AbortController…):', '');
for (const [k, v] of [...ownerAreas].sort((a, b) => b[1] - a[1]).slice(0, 15)) out.push(`  ${pct(v).padStart(6)}  ${v.toFixed(0).padStart(7)} ms  ${k}`);
out.push('', `express-spool functions (lib/, engines/) by owned time (self + node internals they call, not other JS), top ${top}:`, '');
for (const [k, v] of [...owners].filter(([k]) => /\s(dist\/)?(lib|engines)\//.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) {
  out.push(`  ${pct(v).padStart(6)}  ${v.toFixed(0).padStart(7)} ms  owned   (self ${(self.get(k) ?? 0).toFixed(0)} ms)  ${k}`);
}
out.push('', `express-spool functions (lib/, engines/) by total time (self + callees), top ${top}:`, '');
for (const [k, v] of [...incl].filter(([k]) => /\s(dist\/)?(lib|engines)\//.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) {
  out.push(`  ${pct(v).padStart(6)}  ${v.toFixed(0).padStart(7)} ms  total   (self ${(self.get(k) ?? 0).toFixed(0)} ms)  ${k}`);
}
process.stdout.write(`${out.join('\n')}\n`);
