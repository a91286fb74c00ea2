#!/usr/bin/env node
// express-spool end-to-end benchmark. See bench/README.md.
//
//   npm run bench                         # build, full run, writes bench/results/latest.{md,json}
//   node bench/run.mjs --quick            # 1 repetition, smaller micro-benchmark
//   node bench/run.mjs --reps 3 --only A,D --targets ceiling,spool,multer-disk
//   node bench/run.mjs --no-micro | --only micro
//
// This process is the client: it builds every request body once, forks one
// server process per target (bench/server.mjs), and writes the bodies over raw
// sockets. Server CPU time and RSS come from /proc/<pid>/{stat,status}.

import { fork, spawn, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildBody } from './parser-micro.mjs';
import { requestHead, runPool, now } from './lib/http-client.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

// ---------------------------------------------------------------------------
// Targets and scenarios
// ---------------------------------------------------------------------------

/** name -> description; `disk` = where stored files end up (for the file-count check). */
const TARGETS = {
  ceiling: { about: 'raw node:http, reads and discards the body', raw: true, disk: () => false },
  'ceiling-disk': { about: 'raw node:http, pipes the raw body into one file', raw: true, disk: () => true },
  'express-busboy': { about: 'Express 5 + @fastify/busboy, file bytes counted and dropped', disk: () => false },
  'multer-memory': { about: 'multer 2 memoryStorage', disk: () => false },
  'multer-disk': { about: 'multer 2 diskStorage', disk: () => true },
  spool: {
    about: "express-spool: threshold 1 MiB, rollover diskEngine, memoryBudget 64 MiB, sha256 on (default)",
    spool: true,
    disk: (sc) => sc.fileSize > MiB,
  },
  'spool-memory': { about: 'express-spool storage: memoryEngine(), memoryBudget 2 GiB', spool: true, disk: () => false },
  'spool-disk': { about: 'express-spool storage: diskEngine()', spool: true, disk: () => true },
  'spool-nohash': { about: '`spool` with sha256: false (extra: the cost of hashing)', spool: true, disk: (sc) => sc.fileSize > MiB },
};
const CEILINGS = new Set(['ceiling', 'ceiling-disk']);

const SCENARIOS = {
  // perRep: timed runs per target in each repetition (the short scenarios get more samples).
  A: { title: '4 × 20 MiB, one file per request, 4 in parallel', fileSize: 20 * MiB, count: 4, concurrency: 4, perRep: 2 },
  B: { title: '4 × 20 MiB, one after another', fileSize: 20 * MiB, count: 4, concurrency: 1, perRep: 2 },
  C: { title: 'one 256 MiB file', fileSize: 256 * MiB, count: 1, concurrency: 1 },
  D: { title: '2,000 requests × one 16 KiB file, 32 in flight (keep-alive)', fileSize: 16 * KiB, count: 2000, concurrency: 32, perRequest: true },
  E: { title: '16 × 64 MiB in parallel, fresh server process, peak RSS', fileSize: 64 * MiB, count: 16, concurrency: 16, fresh: true },
};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

function parseArgs(argv) {
  const o = { reps: null, ereps: null, only: null, targets: null, quick: false, micro: true, out: null, microReps: null, verifyE: true, verify: true, cpuProf: null };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf('=');
    if (eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const val = () => v ?? argv[++i];
    switch (a) {
      case '--reps': o.reps = Number(val()); break;
      case '--e-reps': o.ereps = Number(val()); break;
      case '--micro-reps': o.microReps = Number(val()); break;
      case '--only': o.only = val().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--targets': o.targets = val().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--quick': o.quick = true; break;
      case '--no-micro': o.micro = false; break;
      case '--no-verify-e': o.verifyE = false; break;
      case '--no-verify': o.verify = false; o.verifyE = false; break;
      case '--cpu-prof': o.cpuProf = resolve(val()); break;
      case '--out': o.out = val(); break;
      case '--help':
        process.stdout.write(
          'usage: node bench/run.mjs [--reps N] [--e-reps N] [--micro-reps N] [--only A,B,C,D,E,micro]\n' +
            '                          [--targets ceiling,spool,...] [--quick] [--no-micro] [--no-verify-e] [--out file.md]\n' +
            '                          [--no-verify] [--cpu-prof DIR]  (servers run with node --cpu-prof; see README)\n' +
            `targets: ${Object.keys(TARGETS).join(', ')}\n`,
        );
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${argv[i]} (try --help)`);
    }
  }
  for (const t of o.targets ?? []) if (!TARGETS[t]) throw new Error(`unknown target ${t}`);
  for (const s of o.only ?? []) if (!SCENARIOS[s] && s !== 'micro') throw new Error(`unknown scenario ${s}`);
  return o;
}

// ---------------------------------------------------------------------------
// procfs
// ---------------------------------------------------------------------------

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

/** utime + stime of the process (all its threads), seconds. */
function cpuSeconds(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** { rss, hwm } in bytes. */
function memory(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * KiB;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Busy CPU seconds of the whole machine (all cores, everything but idle and iowait). */
function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLK_TCK;
}

/** Resets VmHWM to the current RSS (Linux clear_refs "5"). */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

class Server {
  static async start(name, dir, { cpuProf } = {}) {
    mkdirSync(dir, { recursive: true });
    const execArgv = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : [];
    const child = fork(join(HERE, 'server.mjs'), [name, dir], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv,
    });
    const ready = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`server ${name} exited with ${code} before listening`)));
    });
    const s = new Server();
    s.name = name;
    s.dir = dir;
    s.child = child;
    s.pid = ready.pid;
    s.port = ready.port;
    s.startRss = memory(s.pid).rss;
    s.seq = 0;
    child.on('exit', (code, signal) => {
      s.exited = true;
      if (!s.stopping) process.stderr.write(`!! server ${name} exited unexpectedly (${code ?? signal})\n`);
    });
    return s;
  }

  setVerify(on) {
    const id = ++this.seq;
    return new Promise((resolve) => {
      const onMsg = (m) => {
        if (m?.ack === id) {
          this.child.off('message', onMsg);
          resolve();
        }
      };
      this.child.on('message', onMsg);
      this.child.send({ cmd: 'verify', on, id });
    });
  }

  async stop() {
    if (this.exited) return;
    this.stopping = true;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.send({ cmd: 'exit' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** Names of files currently stored in the target's directory. */
  storedFiles() {
    return readdirSync(this.dir);
  }

  removeStored() {
    for (const f of readdirSync(this.dir)) rmSync(join(this.dir, f), { force: true, recursive: true });
  }
}

// ---------------------------------------------------------------------------
// One run of one scenario against one server
// ---------------------------------------------------------------------------

function makeWorkload(sc) {
  const w = buildBody({ files: 1, fileSize: sc.fileSize });
  const o = w.fileOffsets[0];
  w.fileSha256 = createHash('sha256').update(w.body.subarray(o, o + w.fileSize)).digest('hex');
  w.bodySha256 = createHash('sha256').update(w.body).digest('hex');
  return w;
}

async function runOnce(server, key, sc, w, { verify }) {
  const name = server.name;
  const target = TARGETS[name];
  const head = requestHead({ port: server.port, contentType: w.headers['content-type'], length: w.body.length });
  if (verify) await server.setVerify(true);
  const peakReset = resetPeak(server.pid);
  const rssBefore = memory(server.pid).rss;
  const cpu0 = cpuSeconds(server.pid);
  const busy0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  const problems = [];
  const storages = new Set();
  const t0 = now();
  const finish = await runPool({
    port: server.port,
    head,
    body: w.body,
    count: sc.count,
    concurrency: sc.concurrency,
    t0,
    onResponse: (res, i) => {
      if (problems.length > 5) return;
      if (res.status !== 200) return void problems.push(`#${i}: HTTP ${res.status} ${res.body.toString().slice(0, 200)}`);
      const { files } = res.json();
      if (files?.length !== 1) return void problems.push(`#${i}: ${files?.length} files in the answer`);
      const f = files[0];
      const wantSize = target.raw ? w.body.length : w.fileSize;
      const wantSha = target.raw ? w.bodySha256 : w.fileSha256;
      if (f.size !== wantSize) problems.push(`#${i}: size ${f.size}, want ${wantSize}`);
      if (f.storage) storages.add(f.storage);
      if (name === 'spool-nohash' ? f.sha256 !== undefined : target.spool && f.sha256 !== w.fileSha256) {
        problems.push(`#${i}: express-spool sha256 ${f.sha256}`);
      }
      if (verify && f.stored !== wantSha) problems.push(`#${i}: stored bytes sha256 ${f.stored}, want ${wantSha}`);
    },
  });
  const seconds = (now() - t0) / 1e3;
  const cpu = cpuSeconds(server.pid) - cpu0;
  const selfCpu = process.cpuUsage(self0);
  const client = (selfCpu.user + selfCpu.system) / 1e6;
  // What the rest of the machine did meanwhile (other processes, unattributed kernel work): a noise gauge.
  const others = Math.max(0, machineBusySeconds() - busy0 - cpu - client);
  const mem = memory(server.pid);
  if (verify) await server.setVerify(false);

  const stored = server.storedFiles().length;
  const wantStored = target.disk(sc) ? sc.count : 0;
  if (stored !== wantStored) problems.push(`${stored} files on disk, want ${wantStored}`);
  if (target.spool && name !== 'spool-memory') {
    const want = target.disk(sc) ? 'disk' : 'memory';
    if (storages.size !== 1 || !storages.has(want)) problems.push(`storage ${[...storages]}, want ${want}`);
  }
  server.removeStored();
  if (problems.length) throw new Error(`${name} / ${key}${verify ? ' (verification)' : ''}: ${problems.join('; ')}`);
  return {
    seconds,
    bytes: sc.count * w.body.length,
    cpu,
    client,
    others,
    peak: peakReset ? mem.hwm : NaN,
    rssBefore,
    rssAfter: mem.rss,
    finish,
  };
}

// ---------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const min = (xs) => Math.min(...xs);
const max = (xs) => Math.max(...xs);
const mib = (b) => (Number.isFinite(b) ? (b / MiB).toFixed(0) : '—');
const fx = (x, d = 2) => (Number.isFinite(x) ? `${x.toFixed(d)}×` : '—');
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : '—');
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : '—');
const f3 = (x) => (Number.isFinite(x) ? x.toFixed(3) : '—');

/** Per-scenario, per-target summary of the timed runs. */
function summarize(key, runs) {
  const sc = SCENARIOS[key];
  const rows = {};
  for (const [name, rs] of Object.entries(runs)) {
    if (!rs.length) continue;
    const secs = rs.map((r) => r.seconds);
    const rate = rs.map((r) => (sc.perRequest ? sc.count / r.seconds : r.bytes / 1e6 / r.seconds));
    const spread = rs.map((r) => (max(r.finish) - min(r.finish)) / max(r.finish));
    rows[name] = {
      n: rs.length,
      medianS: median(secs),
      minS: min(secs),
      maxS: max(secs),
      rate: median(rate),
      minRate: min(rate),
      maxRate: max(rate),
      cpuPerUnit: median(rs.map((r) => (sc.perRequest ? (1e3 * r.cpu) / sc.count : r.cpu / (r.bytes / 1e9)))),
      cpuCores: median(rs.map((r) => r.cpu / r.seconds)),
      clientCores: median(rs.map((r) => r.client / r.seconds)),
      otherCores: median(rs.map((r) => r.others / r.seconds)),
      peak: max(rs.map((r) => r.peak)),
      idle: median(rs.map((r) => r.idle)),
      peakOverIdle: max(rs.map((r) => r.peak - r.idle)),
      spread: median(spread),
      spreadMax: max(spread),
      spreadOver20: spread.filter((x) => x > 0.2).length,
      firstLast: median(rs.map((r) => min(r.finish) / max(r.finish))),
      finishes: sc.count <= 16 ? rs.map((r) => r.finish.map((t) => +(t / 1e3).toFixed(3))) : undefined,
    };
  }
  for (const [name, r] of Object.entries(rows)) {
    r.vsCeiling = rows.ceiling ? r.rate / rows.ceiling.rate : NaN;
    r.vsCeilingDisk = rows['ceiling-disk'] ? r.rate / rows['ceiling-disk'].rate : NaN;
    let best = null;
    for (const [other, o] of Object.entries(rows)) {
      if (other === name || CEILINGS.has(other)) continue;
      if (!best || o.rate > rows[best].rate) best = other;
    }
    r.bestOther = best;
    r.vsBest = best ? r.rate / rows[best].rate : NaN;
  }
  return rows;
}

function scenarioTable(key, rows) {
  const sc = SCENARIOS[key];
  const unit = sc.perRequest ? 'req/s' : 'MB/s';
  const cpuUnit = sc.perRequest ? 'CPU ms/req' : 'CPU s/GB';
  const cols = ['target', 'median s', 'min–max s', unit, `min–max ${unit}`, '× ceiling', '× ceiling-disk', '× best other', cpuUnit, 'server CPU cores', 'client / other cores', 'peak RSS MiB'];
  if (key === 'A') cols.push('finish spread: median (max), runs > 20%');
  if (sc.fresh) cols.push('idle RSS MiB', 'peak − idle MiB');
  const lines = [`| ${cols.join(' | ')} |`, `|${cols.map((c, i) => (i === 0 ? '---' : '--:')).join('|')}|`];
  for (const [name, r] of Object.entries(rows)) {
    const cells = [
      `\`${name}\``,
      f3(r.medianS),
      `${f3(r.minS)}–${f3(r.maxS)}`,
      f0(r.rate),
      `${f0(r.minRate)}–${f0(r.maxRate)}`,
      fx(r.vsCeiling),
      fx(r.vsCeilingDisk),
      r.bestOther ? `${fx(r.vsBest)} (${r.bestOther})` : '—',
      sc.perRequest ? f3(r.cpuPerUnit) : f2(r.cpuPerUnit),
      f2(r.cpuCores),
      `${f2(r.clientCores)} / ${f2(r.otherCores)}`,
      mib(r.peak),
    ];
    if (key === 'A') cells.push(`${(100 * r.spread).toFixed(0)}% (${(100 * r.spreadMax).toFixed(0)}%), ${r.spreadOver20}/${r.n}`);
    if (sc.fresh) cells.push(mib(r.idle), mib(r.peakOverIdle));
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Goals from the issue
// ---------------------------------------------------------------------------

function evaluateGoals(S, micro) {
  const goals = [];
  const g = (id, text, value, ok, detail, cpu = '—') => goals.push({ id, text, value, ok, detail, cpu });
  const r = (k, t) => S[k]?.[t];
  const ratio = (k, a, b) => (r(k, a) && r(k, b) ? r(k, a).rate / r(k, b).rate : NaN);
  // The same comparison from server CPU time per unit of work: what the ratio would be for CPU-bound
  // servers with the machine to themselves. Much less sensitive to other load than wall-clock ratios.
  const cpuRatio = (k, a, b) => (r(k, a) && r(k, b) ? fx(r(k, b).cpuPerUnit / r(k, a).cpuPerUnit) : '—');
  const check = (x, min) => (Number.isFinite(x) ? x >= min : null);
  const rates = (k, a, b) => {
    const unit = SCENARIOS[k].perRequest ? 'req/s' : 'MB/s';
    const cpuUnit = SCENARIOS[k].perRequest ? 'CPU ms/req' : 'CPU s/GB';
    const d = SCENARIOS[k].perRequest ? 3 : 2;
    if (!r(k, a) || !r(k, b)) return '';
    return `${f0(r(k, a).rate)} vs ${f0(r(k, b).rate)} ${unit} (min–max ${f0(r(k, a).minRate)}–${f0(r(k, a).maxRate)} vs ${f0(r(k, b).minRate)}–${f0(r(k, b).maxRate)}); ` +
      `${cpuUnit} ${r(k, a).cpuPerUnit.toFixed(d)} vs ${r(k, b).cpuPerUnit.toFixed(d)}`;
  };
  const vs = (id, k, other, min, label = `${k}: \`spool\` ≥ ${min}× \`${other}\` ${SCENARIOS[k].perRequest ? 'req/s' : 'MB/s'}`) => {
    if (!S[k]) return;
    const x = ratio(k, 'spool', other);
    g(id, label, fx(x), check(x, min), rates(k, 'spool', other), cpuRatio(k, 'spool', other));
  };

  vs('A1', 'A', 'ceiling-disk', 0.95);
  vs('A2', 'A', 'multer-disk', 1.0);
  const sp = r('A', 'spool');
  if (sp) {
    const worst = sp.finishes.map((f) => ({ f, s: (max(f) - min(f)) / max(f) })).sort((a, b) => b.s - a.s)[0];
    g('A3', 'A: `spool`\'s four requests finish close together: spread = (last − first finish) ÷ last finish ≤ 20% in ≥ 90% of runs',
      `median ${(100 * sp.spread).toFixed(0)}%, ${sp.spreadOver20}/${sp.n} runs > 20%`, sp.spreadOver20 <= Math.floor(sp.n * 0.1),
      `max spread ${(100 * sp.spreadMax).toFixed(0)}% (worst run's finish times, s: [${worst.f.join(', ')}]); 75% would be one after another`);
  }
  if (r('A', 'spool') && r('B', 'spool')) {
    const x = r('B', 'spool').medianS / r('A', 'spool').medianS;
    const cd = r('A', 'ceiling-disk') && r('B', 'ceiling-disk') ? f2(r('B', 'ceiling-disk').medianS / r('A', 'ceiling-disk').medianS) : '—';
    g('A4', 'A: `spool` B ÷ A (serial time ÷ parallel time) ≥ 1.2', f2(x), x >= 1.2,
      `B ${f3(r('B', 'spool').medianS)} s, A ${f3(r('A', 'spool').medianS)} s; the same ratio for \`ceiling-disk\`: ${cd}`);
  }
  vs('D1', 'D', 'express-busboy', 0.95);
  vs('D2', 'D', 'multer-memory', 1.3);
  vs('D3', 'D', 'multer-disk', 5);
  vs('C1', 'C', 'multer-disk', 0.95);
  vs('E1', 'E', 'multer-disk', 0.95);
  if (S.E) {
    const e = r('E', 'spool');
    if (e) {
      const allowed = 64 * MiB + 32 * MiB;
      g('E2', 'E: `spool` peak RSS ≤ idle + memoryBudget (64 MiB) + 32 MiB', `+${mib(e.peakOverIdle)} MiB`, e.peakOverIdle <= allowed,
        `worst run: peak − idle = ${mib(e.peakOverIdle)} MiB (allowed ${mib(allowed)}); idle ${mib(e.idle)} MiB, peak ${mib(e.peak)} MiB; 1 GiB in flight`);
    }
    const mm = r('E', 'multer-memory');
    if (mm) g('E3', 'E: (reference) `multer-memory` needs > 1 GiB', `+${mib(mm.peakOverIdle)} MiB`, mm.peakOverIdle > GiB, `peak ${mib(mm.peak)} MiB, idle ${mib(mm.idle)} MiB`);
    const sm = r('E', 'spool-memory');
    if (sm) {
      const allowed = 1.1 * GiB;
      g('E4', 'E: `spool-memory` peak RSS ≤ idle + 1.1 × bytes in flight (1 GiB)', `+${mib(sm.peakOverIdle)} MiB`, sm.peakOverIdle <= allowed,
        `worst run: peak − idle = ${mib(sm.peakOverIdle)} MiB (allowed ${mib(allowed)}); idle ${mib(sm.idle)} MiB, peak ${mib(sm.peak)} MiB`);
    }
  }
  if (micro) {
    const big = micro.results.filter((x) => x.workload === '1x256MiB');
    const get = (variant, parser) => big.find((x) => x.variant === variant && x.parser === parser);
    const family = (variant) => ['busboy', '@fastify/busboy'].map((p) => get(variant, p)).filter(Boolean);
    const bestRate = (variant) => Math.max(...family(variant).map((x) => x.medianMBps));
    const bestCpu = (variant) => Math.min(...family(variant).map((x) => x.medianCpuMs));
    const m = (id, text, ours, variant) => {
      if (!ours || !family(variant).length) return;
      const x = ours.medianMBps / bestRate(variant);
      g(id, text, fx(x), x >= 1, `${f0(ours.medianMBps)} vs ${f0(bestRate(variant))} MB/s; CPU ${f0(ours.medianCpuMs)} vs ${f0(bestCpu(variant))} ms`,
        fx(bestCpu(variant) / ours.medianCpuMs));
    };
    m('M1', 'Micro (256 MiB): express-spool\'s path, hashing off ≥ fastest busboy-family parser (counting bytes)', get('count', 'express-spool (sha256 off)'), 'count');
    m('M2', 'Micro (256 MiB): express-spool\'s path, sha256 on (default) ≥ fastest busboy-family parser + sha256 in the consumer', get('count', 'express-spool (sha256 on)'), 'sha256');
  }
  return goals;
}

function microTables(micro) {
  const lines = [];
  const byWorkload = new Map();
  for (const x of micro.results) {
    if (!byWorkload.has(x.workload)) byWorkload.set(x.workload, []);
    byWorkload.get(x.workload).push(x);
  }
  const rows = [
    ['no hashing', 'count', ['busboy', '@fastify/busboy', 'express-spool (sha256 off)', 'indexOf (ceiling)']],
    ['sha256 of every file', null, [
      ['busboy', 'sha256', 'busboy + sha256 in consumer'],
      ['@fastify/busboy', 'sha256', '@fastify/busboy + sha256 in consumer'],
      ['express-spool (sha256 on)', 'count', 'express-spool (sha256 on: the library hashes)'],
      ['express-spool (sha256 off)', 'sha256', 'express-spool (sha256 off) + sha256 in consumer'],
      ['indexOf (ceiling)', 'sha256', 'indexOf + sha256 (ceiling)'],
    ]],
  ];
  for (const [workload, rs] of byWorkload) {
    lines.push(`**${workload}** (body ${(rs[0].bodyBytes / MiB).toFixed(1)} MiB, ${micro.meta.chunkSize / KiB} KiB chunks)`, '');
    lines.push('| hashing | parser path | median MB/s | min–max MB/s | median ms | CPU ms | × fastest busboy-family |', '|---|---|--:|--:|--:|--:|--:|');
    for (const [label, variant, parsers] of rows) {
      const entries = parsers.map((p) => (Array.isArray(p) ? p : [p, variant, p]));
      const family = entries.filter(([p]) => p === 'busboy' || p === '@fastify/busboy').map(([p, v]) => rs.find((x) => x.parser === p && x.variant === v)?.medianMBps ?? 0);
      const best = Math.max(...family);
      for (const [p, v, shown] of entries) {
        const x = rs.find((y) => y.parser === p && y.variant === v);
        if (!x) continue;
        lines.push(`| ${label} | ${shown} | ${f0(x.medianMBps)} | ${f0(x.minMBps)}–${f0(x.maxMBps)} | ${x.medianMs.toFixed(1)} | ${f0(x.medianCpuMs)} | ${p.startsWith('indexOf') ? '—' : fx(x.medianMBps / best)} |`);
      }
    }
    lines.push('');
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// Machine
// ---------------------------------------------------------------------------

function machineInfo() {
  const v = (p) => {
    try {
      return JSON.parse(readFileSync(join(ROOT, 'node_modules', p, 'package.json'), 'utf8')).version;
    } catch {
      return '?';
    }
  };
  let git = '';
  try {
    git = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'lib', 'engines'], { encoding: 'utf8' }).trim();
    if (dirty) git += ' + uncommitted changes in lib/ or engines/';
  } catch {}
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model ?? '?',
    cores: cpus.length,
    memGiB: +(os.totalmem() / GiB).toFixed(1),
    load: os.loadavg().map((x) => +x.toFixed(2)),
    tmpdir: os.tmpdir(),
    node: process.version,
    versions: {
      'express-spool': `${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}${git ? ` (${git})` : ''}`,
      express: v('express'),
      multer: v('multer'),
      '@fastify/busboy': v('@fastify/busboy'),
      busboy: v('busboy'),
    },
  };
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = now();
  const log = (m) => process.stderr.write(`[${((now() - started) / 1e3).toFixed(0).padStart(4)}s] ${m}\n`);
  const reps = opts.reps ?? (opts.quick ? 1 : 7);
  const ereps = opts.ereps ?? (opts.quick ? 1 : 3);
  const microReps = opts.microReps ?? (opts.quick ? 2 : 5);
  const targets = opts.targets ?? Object.keys(TARGETS);
  const only = opts.only ?? [...Object.keys(SCENARIOS), ...(opts.micro ? ['micro'] : [])];
  const scenarios = Object.keys(SCENARIOS).filter((k) => only.includes(k));
  const runMicro = only.includes('micro') && opts.micro;
  const full = !opts.quick && !opts.only && !opts.targets && opts.reps == null && opts.ereps == null && opts.microReps == null && opts.micro && opts.verifyE && !opts.cpuProf;
  if (opts.cpuProf) mkdirSync(opts.cpuProf, { recursive: true });
  const out = opts.out ?? join(HERE, 'results', full ? 'latest.md' : 'partial.md');

  const distIndex = join(ROOT, 'dist', 'lib', 'index.js');
  try {
    readFileSync(distIndex);
  } catch {
    throw new Error(`${relative(ROOT, distIndex)} is missing: run \`npm run build\` first (npm run bench does)`);
  }

  const machine = machineInfo();
  log(`targets: ${targets.join(', ')}; scenarios: ${scenarios.join(', ')}${runMicro ? ', micro' : ''}; reps ${reps}, E reps ${ereps}`);
  const base = mkdtempSync(join(os.tmpdir(), 'express-spool-bench-'));
  const servers = new Map();
  const cleanup = async () => {
    await Promise.all([...servers.values()].map((s) => s.stop().catch(() => {})));
    rmSync(base, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanup().finally(() => process.exit(130));
  });

  const S = {};
  const phases = {};
  try {
    // Bodies, built once and reused for every request.
    const tb = now();
    const bodies = new Map();
    const bodyFor = (sc) => {
      if (!bodies.has(sc.fileSize)) bodies.set(sc.fileSize, makeWorkload(sc));
      return bodies.get(sc.fileSize);
    };
    for (const k of scenarios) bodyFor(SCENARIOS[k]);
    log(`bodies built in ${((now() - tb) / 1e3).toFixed(1)} s`);

    // ---- A–D: one long-lived server per target ----
    const steady = scenarios.filter((k) => !SCENARIOS[k].fresh);
    if (steady.length) {
      const t = now();
      for (const name of targets) servers.set(name, await Server.start(name, join(base, name), { cpuProf: opts.cpuProf }));
      log(`${servers.size} servers up`);
      // Warm-up: one verified run per target and scenario (not timed).
      for (const name of targets) {
        for (const k of steady) await runOnce(servers.get(name), k, SCENARIOS[k], bodyFor(SCENARIOS[k]), { verify: opts.verify });
      }
      log(`warm-up${opts.verify ? ' + verification' : ' (not verified: --no-verify)'} done (${steady.join(', ')}: every stored byte checked with sha256, file counts checked)`);
      const runs = Object.fromEntries(steady.map((k) => [k, Object.fromEntries(targets.map((n) => [n, []]))]));
      for (let rep = 0; rep < reps; rep++) {
        for (const k of steady) {
          for (let j = 0; j < (SCENARIOS[k].perRep ?? 1); j++) {
            // Interleave targets, rotating the start each time.
            const order = targets.map((_, i) => targets[(i + rep + j) % targets.length]);
            for (const name of order) {
              const r = await runOnce(servers.get(name), k, SCENARIOS[k], bodyFor(SCENARIOS[k]), { verify: false });
              runs[k][name].push(r);
            }
          }
        }
        log(`rep ${rep + 1}/${reps} of ${steady.join(', ')} done`);
      }
      for (const k of steady) S[k] = summarize(k, runs[k]);
      for (const s of servers.values()) await s.stop();
      servers.clear();
      phases['A–D'] = (now() - t) / 1e3;
    }

    // ---- E: a fresh server process per run ----
    if (scenarios.includes('E')) {
      const t = now();
      const sc = SCENARIOS.E;
      const w = bodyFor(sc);
      const small = bodyFor(SCENARIOS.D ?? { fileSize: 16 * KiB });
      let n = 0;
      const freshRun = async (name, verify) => {
        const s = await Server.start(name, join(base, `${name}-E${n++}`), { cpuProf: opts.cpuProf });
        servers.set(name, s);
        try {
          // One small request loads what the first request loads (lazy requires, JIT of the request path).
          await runOnce(s, 'E-prime', { ...SCENARIOS.D, fileSize: small.fileSize, count: 1, concurrency: 1 }, small, { verify: false });
          await sleep(250);
          const idle = memory(s.pid).rss;
          const r = await runOnce(s, 'E', sc, w, { verify });
          return { ...r, idle, startRss: s.startRss };
        } finally {
          await s.stop();
          servers.delete(name);
          rmSync(s.dir, { recursive: true, force: true });
        }
      };
      if (opts.verifyE) {
        for (const name of targets) {
          const tv = now();
          await freshRun(name, true);
          log(`E verification ${name}: ${((now() - tv) / 1e3).toFixed(1)} s`);
        }
        log('E verification runs done');
      }
      const runs = Object.fromEntries(targets.map((n) => [n, []]));
      for (let rep = 0; rep < ereps; rep++) {
        const order = targets.map((_, i) => targets[(i + rep) % targets.length]);
        for (const name of order) runs[name].push(await freshRun(name, false));
        log(`E rep ${rep + 1}/${ereps} done`);
      }
      S.E = summarize('E', runs);
      phases.E = (now() - t) / 1e3;
    }
    bodies.clear();
  } finally {
    await cleanup();
  }

  // ---- parser micro-benchmark, in its own process ----
  let micro = null;
  if (runMicro) {
    const t = now();
    log('parser micro-benchmark (256 MiB body in memory, 64 KiB chunks)…');
    micro = await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(HERE, 'micro.mjs'), '--json', `--reps=${microReps}`, '--sizes=1x256MiB,16384x16KiB'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let outText = '';
      child.stdout.on('data', (c) => (outText += c));
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(outText)) : reject(new Error(`micro.mjs exited with ${code}`))));
    });
    phases.micro = (now() - t) / 1e3;
  }

  const total = (now() - started) / 1e3;
  machine.loadAfter = os.loadavg().map((x) => +x.toFixed(2));
  const goals = evaluateGoals(S, micro);
  const md = report({ machine, S, micro, goals, reps, ereps, microReps, targets, total, phases, full });
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, md);
  writeFileSync(out.replace(/\.md$/, '.json'), `${JSON.stringify({ machine, reps, ereps, targets, scenarios: S, micro, goals, phases, total }, null, 1)}\n`);
  process.stdout.write(`${md}\n`);
  log(`wrote ${relative(process.cwd(), out)} (total ${total.toFixed(0)} s)`);
}

function report({ machine, S, micro, goals, reps, ereps, microReps, targets, total, phases, full }) {
  const L = [];
  L.push('# express-spool benchmark', '');
  if (!full) L.push('> Partial run (options changed from the defaults); not comparable one-to-one with `latest.md`.', '');
  L.push(`${machine.date} · ${machine.os} · ${machine.cores}× ${machine.cpu} · ${machine.memGiB} GiB RAM · load average before / after the run ${machine.load[0]} / ${machine.loadAfter?.[0] ?? '?'} · tmpdir ${machine.tmpdir}`, '');
  L.push(`Node ${machine.node} · ${Object.entries(machine.versions).map(([k, v]) => `${k} ${v}`).join(' · ')}`, '');
  L.push(
    `A–D: ${reps} timed repetitions per target after one verified warm-up run, targets interleaved (order rotated each repetition); ` +
      `E: ${ereps} repetitions, each against a fresh server process. Medians, with min–max. MB = 10^6 bytes of request body. ` +
      `CPU = server process utime+stime from /proc (all threads). Peak RSS = VmHWM, reset (clear_refs) before each run; the table shows the worst run. ` +
      `“× best other” compares with the fastest other non-ceiling target. Run time ${(total / 60).toFixed(1)} min ` +
      `(${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(', ')}).`,
    '',
  );
  const others = Object.values(S).flatMap((rows) => Object.values(rows).map((r) => r.otherCores)).filter(Number.isFinite);
  if (others.length) {
    const noise = median(others);
    L.push(
      `Other load during the timed runs (CPU time of everything but the bench's server and client, median over runs): **${f2(noise)} of ${machine.cores} cores**.` +
        (noise > 0.25 ? ' ⚠ The machine was shared during this run: wall-clock numbers are slowed and noisy; lean on the CPU columns and CPU-time ratios.' : ''),
      '',
    );
  }
  if (goals.length) {
    L.push('## Targets from the issue', '');
    L.push(
      '“measured” is the wall-clock ratio of medians, which is what the goals are about. “CPU-time ratio” is the same comparison ' +
        'made from server CPU time per unit of work (the other target’s CPU per GB or per request ÷ `spool`’s): roughly what the ' +
        'wall-clock ratio would be for CPU-bound servers on an otherwise idle machine; it is much less disturbed by other load.',
      '',
    );
    L.push('| | goal | measured | met | CPU-time ratio | details |', '|---|---|--:|:-:|--:|---|');
    for (const x of goals) L.push(`| ${x.id} | ${x.text} | ${x.value} | ${x.ok == null ? '?' : x.ok ? '✅ met' : '❌ missed'} | ${x.cpu} | ${x.detail} |`);
    L.push('');
  }
  for (const k of Object.keys(SCENARIOS)) {
    if (!S[k]) continue;
    L.push(`## ${k}) ${SCENARIOS[k].title}`, '', scenarioTable(k, S[k]), '');
    if (k === 'A') {
      L.push('Finish spread = (last − first response) ÷ last response of one run: 0% = all four finish together, 75% = one after another. ' +
        'The raw ceilings and `express-busboy` are limited by the client and the kernel rather than by their own work, so their spreads say little.', '');
    }
    if (k === 'E') {
      L.push('Idle RSS: after start-up and one small request (libraries loaded, nothing held), just before the 16 requests. Peak − idle: the worst repetition.', '');
    }
  }
  if (micro) {
    L.push('## Parser micro-benchmark (no network)', '');
    L.push(
      `Each body built in memory and written in 64 KiB chunks into each parser; every file stream consumed (byte count, or sha256 where noted); ` +
        `${microReps} repetitions + 1 warm-up, interleaved; one process. “express-spool” is the real middleware (built library) on a fake request/response, ` +
        'with a storage engine that hands the file stream to the harness (i.e. discards it): parser + strictness layer + FileTap + engine hand-off + UploadedFile + next().',
      '',
      microTables(micro),
    );
  }
  L.push('## Targets', '');
  for (const t of targets) L.push(`- \`${t}\`: ${TARGETS[t].about}`);
  L.push('');
  return L.join('\n');
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exit(1);
});
