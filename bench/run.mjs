#!/usr/bin/env node
// express-spool end-to-end benchmark (issue #13; the resumable workloads r1, r2: issue #14). See bench/README.md.
//
//   npm run bench                      # build, full run (≈ 10–18 min), writes bench/results/latest.{md,json}
//   node bench/run.mjs --quick         # ≈ 3 min smoke test, writes bench/results/partial.{md,json}
//   node bench/run.mjs --only d --modes close --rounds 3
//   node bench/run.mjs --only r                       # resumable: express-spool's resumable() vs @tus/server
//
// This process is the client: it builds every request body once, forks one server process per target
// (bench/server.mjs; resumable: bench/lib/servers/resumable-main.mjs), writes the bodies over raw sockets and reads the servers' CPU time (IPC) and
// RSS (/proc). Rounds interleave the targets; targets.mjs turns the medians into the ratios.

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, USAGE } from './lib/args.mjs';
import { digestCpuSeconds } from './lib/digest.mjs';
import { pairedShaInChild } from './lib/sha-paired.mjs';
import { now } from './lib/http-client.mjs';
import { distFingerprint, machineInfo } from './lib/machine.mjs';
import { runOnce } from './lib/measure.mjs';
import { report } from './lib/report.mjs';
import { isResumableKey, resumablePhase } from './lib/resumable.mjs';
import { openS3 } from './lib/s3.mjs';
import { Server } from './lib/server-process.mjs';
import { spread, summarize } from './lib/stats.mjs';
import { evaluateTargets } from './lib/targets.mjs';
import { makeBody, s3Workloads, workloads } from './lib/workloads.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');

// `--only` also takes r (the resumable workloads r1 and r2; or one of them), which lib/args.mjs does not know:
// taken out of the list here, the rest parsed as before. No `--only`: everything, r included.
function splitResumable(argv) {
  const out = [];
  let only = null;
  for (let i = 0; i < argv.length; i++) {
    const [a, v] = argv[i].split(/=(.*)/s);
    if (a === '--help') {
      process.stdout.write(`${USAGE}  --only r      the resumable workloads (r1, r2; see bench/README.md "Resumable"); in the default run too\n`);
      process.exit(0);
    }
    if (a !== '--only') {
      out.push(argv[i]);
      continue;
    }
    const list = (v ?? argv[++i] ?? '').split(',').map((x) => x.trim()).filter(Boolean);
    only = [...(only ?? []), ...list.filter((x) => /^r\d*$/.test(x)).flatMap((x) => (x === 'r' ? ['r1', 'r2'] : [x]))];
    for (const x of only) if (!['r1', 'r2'].includes(x)) throw new Error(`unknown workload ${x}`);
    out.push(`--only=${list.filter((x) => !/^r\d*$/.test(x)).join(',')}`);
  }
  return { argv: out, onlyResumable: only ?? ['r1', 'r2'] };
}
const split = splitResumable(process.argv.slice(2));
const opts = { ...parseArgs(split.argv), onlyResumable: split.onlyResumable };
const started = now();
const log = (m) => process.stderr.write(`[${((now() - started) / 1e3).toFixed(0).padStart(4)}s] ${m}\n`);
const rotate = (xs, by) => xs.map((_, i) => xs[(i + by) % xs.length]);

const W = Object.fromEntries(Object.entries(workloads(opts)).filter(([k]) => opts.only.includes(k)));
const S3W = opts.only.includes('s3') ? s3Workloads() : [];
const steadyKeys = Object.keys(W).filter((k) => !W[k].fresh);
const base = mkdtempSync(join(os.tmpdir(), 'express-spool-bench-'));
const live = new Set(); // servers to stop on the way out
const bodies = new Map();
const bodyFor = (w) => {
  if (!bodies.has(w.fileSize)) bodies.set(w.fileSize, makeBody(w.fileSize));
  return bodies.get(w.fileSize);
};
const primer = { key: 'prime', fileSize: 16 * 1024, count: 1, concurrency: 1 };
let serial = 0;

async function startServer(name, env, appHeapMiB = opts.appHeapMiB) {
  const s = await Server.start(name, join(base, `${name}-${serial++}`), { cpuProf: opts.cpuProf, nodeFlags: opts.nodeFlags, appHeapMiB, env });
  live.add(s);
  return s;
}
/** New servers for `w`'s targets, each warmed up with one untimed run per client mode. */
async function warmServers(w) {
  const servers = new Map();
  for (const name of w.targets) {
    const s = await startServer(name);
    for (const m of opts.modes) await runOnce(s, w, bodyFor(w), { mode: m });
    servers.set(name, s);
  }
  return servers;
}

async function stopServer(s) {
  live.delete(s);
  await s.stop();
  rmSync(s.dir, { recursive: true, force: true });
}

/** A run against a fresh server: start, one small request (and for `warmUp` workloads one untimed run), idle RSS, the run, stop. */
async function freshRun(name, w, mode, { verify = false, env } = {}) {
  const s = await startServer(name, env, Math.max(opts.appHeapMiB, w.appHeapMiB ?? 0));
  try {
    await runOnce(s, primer, bodyFor(primer), { mode: 'keep-alive' });
    // A long-running server has taken such uploads before (its heap and young generation sized by them).
    if (w.warmUp) await runOnce(s, w, bodyFor(w), { mode });
    await sleep(250);
    const idle = s.rss();
    return { ...(await runOnce(s, w, bodyFor(w), { mode, verify })), idle };
  } finally {
    await stopServer(s);
  }
}

const emptyRuns = (ws, modes) => Object.fromEntries(ws.map((w) => [w.key, Object.fromEntries(modes.map((m) => [m, Object.fromEntries(w.targets.map((t) => [t, []]))]))]));

/** The S3 pair's verified warm-up and rounds; R entries for the S3 workloads. */
async function s3Phase(env) {
  if (opts.verify) for (const w of S3W) for (const name of w.targets) await freshRun(name, w, 'keep-alive', { verify: true, env });
  const runs = emptyRuns(S3W, ['keep-alive']);
  for (let round = 0; round < opts.freshRounds; round++) {
    for (const w of S3W) for (const name of rotate(w.targets, round)) runs[w.key]['keep-alive'][name].push(await freshRun(name, w, 'keep-alive', { env }));
    log(`S3 round ${round + 1}/${opts.freshRounds} done`);
  }
  return Object.fromEntries(S3W.map((w) => [w.key, { 'keep-alive': summarize(w, runs[w.key]['keep-alive']) }]));
}

/** Paired streaming-sha256 samples per round and workload (each: hash-off, hash-on and the digest alone). */
const PAIRED_REPS = 3;
/** Small files: a sample is short and GCs land on one run or another, so more of them. */
const PAIRED_REPS_SMALL = 9;

/** The paired samples of one workload: their ratio, and each run's user CPU per unit of work. */
function pairedSummary(w, body, samples) {
  const perUnit = (cpu) => (w.perRequest ? (1e6 * cpu) / w.count : cpu / ((w.count * body.body.length) / 1e9));
  const of = (key) => spread(samples.map((s) => perUnit(s[key])));
  return { n: samples.length, ratio: spread(samples.map((s) => s.ratio)), on: of('on'), off: of('off'), digest: of('digest'), digestBetween: of('digestBetween') };
}

async function main() {
  if (!existsSync(join(ROOT, 'dist', 'lib', 'index.js'))) throw new Error('dist/lib/index.js is missing: run `npm run build` first (npm run bench does)');
  const machine = machineInfo();
  const dist = distFingerprint();
  const phases = {};
  const R = {};
  const digest = {};
  /** Streaming sha256 measured paired in this process (lib/sha-paired.mjs), per workload with the hashing pair. */
  const paired = { mode: opts.modes[0], byWorkload: {} };
  let s3 = null;
  log(`workloads ${[...Object.keys(W), ...S3W.map((w) => w.key), ...opts.onlyResumable].join(', ')}; modes ${opts.modes.join(', ')}; ${opts.rounds} rounds (c, S3: ${opts.freshRounds})`);

  // ---- a–d ----
  if (Object.keys(W).length) {
    const t = now();
    for (const w of Object.values(W)) bodyFor(w);
    bodyFor(primer);
    const steady = new Map();
    for (const name of new Set(steadyKeys.flatMap((k) => W[k].targets))) steady.set(name, await startServer(name));
    log(`bodies built, ${steady.size} servers up`);
    if (opts.verify) {
      const verifyModes = opts.quick ? opts.modes.slice(0, 1) : opts.modes; // --quick: one mode (the server path is the same)
      for (const k of steadyKeys) for (const m of verifyModes) for (const name of W[k].targets) await runOnce(steady.get(name), W[k], bodyFor(W[k]), { mode: m, verify: true });
      for (const w of Object.values(W).filter((w) => w.fresh)) for (const name of w.targets) await freshRun(name, w, 'keep-alive', { verify: true });
      log('verified warm-up done (every stored byte re-read and checked)');
    }
    const runs = emptyRuns(Object.values(W), opts.modes);
    const digestRuns = Object.fromEntries(Object.keys(W).map((k) => [k, []]));
    const pairedRuns = Object.fromEntries(Object.keys(W).map((k) => [k, []]));
    const rounds = Math.max(opts.rounds, Object.values(W).some((w) => w.fresh) ? opts.freshRounds : 0);
    for (let round = 0; round < rounds; round++) {
      for (const [k, w] of Object.entries(W)) {
        if (round >= (w.fresh ? opts.freshRounds : opts.rounds)) continue;
        // Per-round servers (d): one process can run 15% slower than another of the same target for its
        // whole life (JIT decisions, placement), so each round gets new ones, warmed up untimed.
        const own = w.perRoundServers ? await warmServers(w) : null;
        for (const m of opts.modes) {
          for (let j = 0; j < w.perRound; j++) {
            for (const name of rotate(w.targets, round + j)) {
              const r = w.fresh ? await freshRun(name, w, m) : await runOnce((own ?? steady).get(name), w, bodyFor(w), { mode: m });
              runs[k][m][name].push(r);
            }
          }
        }
        if (own) for (const s of own.values()) await stopServer(s);
        const b = bodyFor(w);
        const cpu = digestCpuSeconds(b.file, w.count);
        digestRuns[k].push(w.perRequest ? (1e6 * cpu) / w.count : cpu / ((w.count * b.body.length) / 1e9));
        if (w.targets.includes('spool-sha256')) pairedRuns[k].push(...pairedShaInChild(w, w.perRequest ? PAIRED_REPS_SMALL : PAIRED_REPS, round));
      }
      log(`round ${round + 1}/${rounds} done`);
    }
    for (const s of steady.values()) await stopServer(s);
    for (const [k, w] of Object.entries(W)) {
      R[k] = Object.fromEntries(opts.modes.map((m) => [m, summarize(w, runs[k][m])]));
      digest[k] = spread(digestRuns[k]);
      if (pairedRuns[k].length) paired.byWorkload[k] = pairedSummary(w, bodyFor(w), pairedRuns[k]);
    }
    bodies.clear();
    phases['a–d'] = (now() - t) / 1e3;
  }

  // ---- the S3 pair, then the resumable workloads (one S3 server for both) ----
  let session = null; // the open S3 server (or why there is none), shared by the two phases
  const closeSession = async () => {
    for (const s of live) await stopServer(s);
    const open = session;
    session = null;
    if (open && !open.skipped) await open.close();
  };
  let resumableS3 = null;
  try {
    if (S3W.length) {
      const t = now();
      // Twice at most: a local radosgw shared with a busy machine has been seen to die mid-run.
      for (let attempt = 1; attempt <= 2; attempt++) {
        s3 = session = await openS3(log);
        if (s3.skipped) break;
        try {
          const res = await s3Phase(s3.env);
          for (const w of S3W) W[w.key] = w;
          Object.assign(R, res);
          break;
        } catch (err) {
          s3.skipped = `a run failed${attempt > 1 ? ' twice' : ''}: ${err?.message ?? err}`;
          log(`S3 pair: ${s3.skipped}`);
          await closeSession();
        }
      }
      if (s3.skipped) log(`S3 pair skipped: ${s3.skipped}`);
      phases.S3 = (now() - t) / 1e3;
    }
    if (opts.onlyResumable.length) {
      const t = now();
      log(`resumable: ${opts.onlyResumable.join(', ')}; ${opts.freshRounds} round${opts.freshRounds > 1 ? 's' : ''}`);
      const res = await resumablePhase({
        opts,
        log,
        base,
        live,
        s3: {
          get: async () => (session ??= await openS3(log)),
          restart: async () => {
            await closeSession();
            return (session = await openS3(log));
          },
        },
      });
      Object.assign(W, res.W);
      Object.assign(R, res.R);
      resumableS3 = res.s3;
      phases.resumable = (now() - t) / 1e3;
    }
  } finally {
    await closeSession();
  }

  const total = (now() - started) / 1e3;
  machine.loadAfter = os.loadavg().map((x) => +x.toFixed(2));
  machine.distChanged = distFingerprint() !== dist;
  if (machine.distChanged) log('⚠ dist/ was rebuilt during the run (see the report)');
  // (the S3 and resumable workloads run keep-alive only: their targets get that column whatever --modes says)
  const keepAliveOnly = Object.keys(R).some((k) => k.startsWith('s3-') || isResumableKey(k));
  const allModes = keepAliveOnly && !opts.modes.includes('keep-alive') ? [...opts.modes, 'keep-alive'] : opts.modes;
  const targets = evaluateTargets(W, R, digest, allModes, paired);
  const targetModes = allModes.filter((m) => targets.some((t) => t.byMode[m])); // (no empty columns)
  const out = opts.out ?? join(HERE, 'results', opts.full ? 'latest.md' : 'partial.md');
  const md = report({ opts, machine, W, R, digest, paired, targets, targetModes, s3, resumableS3, total, phases });
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, md);
  const json = { machine, options: opts, workloads: W, results: R, digest, paired, targets, s3: s3 && { about: s3.about, skipped: s3.skipped }, resumableS3, phases, total };
  writeFileSync(out.replace(/\.md$/, '.json'), `${JSON.stringify(json, null, 1)}\n`);
  process.stdout.write(`${md}\n`);
  log(`wrote ${relative(process.cwd(), out)} (total ${(total / 60).toFixed(1)} min)`);
}

async function cleanup() {
  await Promise.all([...live].map((s) => s.stop().catch(() => {})));
  rmSync(base, { recursive: true, force: true });
}
process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
main()
  .then(cleanup)
  .catch(async (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    await cleanup();
    process.exit(1);
  });
