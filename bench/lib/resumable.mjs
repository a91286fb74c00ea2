// Resumable uploads (issue #14's performance part): express-spool's resumable() against @tus/server, on disk
// and on S3, driven by a small tus 1.0 client on node:http. See bench/README.md, "Resumable".
//
// Every run is against a fresh server process (bench/lib/servers/resumable-main.mjs): start, one 16 KiB
// upload (libraries loaded), 250 ms, idle RSS and /proc/PID/io write_bytes, then the run. Rounds interleave
// the servers (order rotated each round); the S3 pair shares the S3 server of the S3 workloads.

import { fork } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import http from 'node:http';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { now } from './http-client.mjs';
import { machineBusySeconds, peakRss } from './proc.mjs';
import { Server, serverSpawn } from './server-process.mjs';
import { spread, summarize } from './stats.mjs';
import { MiB } from './workloads.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const MAIN = join(HERE, 'servers', 'resumable-main.mjs');
const ROOT = join(HERE, '..', '..');
const MOUNT = '/files';
/** PATCH size of the client: tus-js-client's usual `chunkSize` in the README's example. */
export const CHUNK = 8 * MiB;

export const DISK_TARGETS = ['spool-tus-disk', 'tus-file', 'ceiling-tus'];
export const S3_TARGETS = ['spool-tus-s3', 'tus-s3', 'ceiling-tus-s3'];
export const isResumableKey = (k) => /^r\d+$/.test(k);

export const RESUMABLE_ABOUT = {
  'spool-tus-disk': 'express-spool, Express 5 + `resumable({ store: resumableDiskStore({ directory }) })`, the rest default (64 MiB memory budget, whole-upload `sha256` off)',
  'tus-file': '@tus/server + @tus/file-store (`new FileStore({ directory })`, its defaults), mounted in Express 5 as its README shows',
  'ceiling-tus': 'raw node:http, uploads known only in memory, each PATCH body piped into the upload\'s file at its offset (1 MiB write buffer): the limit for tus uploads to disk on this machine',
  'spool-tus-s3': 'express-spool, `resumable({ store: s3ResumableStore({ client, bucket, prefix }) })` (8 MiB parts, queueSize 1), the rest default',
  'tus-s3': '@tus/server + @tus/s3-store (its defaults: 8 MiB parts staged as files in os.tmpdir(), up to 60 part uploads in flight)',
  'ceiling-tus-s3': 'raw node:http, uploads known only in memory, one S3 multipart upload per upload, each 8 MiB PATCH body streamed as one UploadPart: the limit for tus uploads to this S3 server',
};

/**
 * r1: one upload, sequential PATCHes; r2: concurrent uploads, fresh server per run (peak RSS). `count`
 * uploads of `fileSize`, all at once, each in PATCHes of CHUNK.
 */
export function resumableWorkloads({ quick }) {
  const n = quick ? 8 : 16;
  const base = { chunk: CHUNK, perRound: 1, fresh: true, resumable: true };
  return {
    r1: { ...base, key: 'r1', title: `one 256 MiB upload in ${CHUNK / MiB} MiB PATCHes`, fileSize: 256 * MiB, count: 1, concurrency: 1 },
    r2: { ...base, key: 'r2', title: `${n} concurrent 64 MiB uploads in ${CHUNK / MiB} MiB PATCHes, fresh server per run`, fileSize: 64 * MiB, count: n, concurrency: n },
  };
}

/** Bytes a process caused to be written to storage (`write_bytes` of /proc/PID/io; page-cache writes count when dirtied). */
export function diskWriteBytes(pid) {
  const m = /^write_bytes:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  if (!m) throw new Error(`no write_bytes in /proc/${pid}/io`);
  return Number(m[1]);
}

/** Starts resumable-main.mjs as bench/lib/server-process.mjs starts bench/server.mjs; the same handle. */
async function startServer(name, dir, { cpuProf, nodeFlags, appHeapMiB, env } = {}) {
  mkdirSync(dir, { recursive: true });
  const { execArgv, env: runEnv } = serverSpawn(name, dir, { cpuProf, nodeFlags, appHeapMiB });
  const child = fork(MAIN, [name, dir], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv,
    env: { ...runEnv, ...env },
  });
  const ready = await new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`server ${name} exited with ${code} before listening`)));
  });
  const s = new Server();
  Object.assign(s, { name, dir, child, pid: ready.pid, port: ready.port, seq: 0 });
  child.on('exit', (code, signal) => {
    s.exited = true;
    if (!s.stopping) process.stderr.write(`!! server ${name} exited unexpectedly (${code ?? signal})\n`);
  });
  return s;
}

// ---- the tus 1.0 client ----

function request(agent, port, method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: '127.0.0.1', port, method, path, headers: { 'Tus-Resumable': '1.0.0', ...headers } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * One tus 1.0 upload on its own keep-alive connection: POST (creation, Upload-Length, no body), then
 * PATCHes of `chunk` bytes one after another, each checked (status, Upload-Offset).
 */
async function tusUpload(port, file, chunk) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const fail = (what, r) => {
    throw new Error(`${what}: HTTP ${r.status} ${r.body.slice(0, 300)}`);
  };
  try {
    const created = await request(agent, port, 'POST', MOUNT, {
      'Upload-Length': String(file.length),
      'Upload-Metadata': `filename ${Buffer.from('upload.bin').toString('base64')},filetype ${Buffer.from('application/octet-stream').toString('base64')}`,
      'Content-Length': '0',
    });
    if (created.status !== 201 || !created.headers.location) fail('POST', created);
    const path = new URL(created.headers.location, `http://127.0.0.1:${port}${MOUNT}/`).pathname;
    let patches = 0;
    for (let offset = 0; offset < file.length; ) {
      const body = file.subarray(offset, offset + chunk);
      const r = await request(agent, port, 'PATCH', path, {
        'Upload-Offset': String(offset),
        'Content-Type': 'application/offset+octet-stream',
        'Content-Length': String(body.length),
      }, body);
      patches++;
      if (r.status !== 204 && r.status !== 200) fail(`PATCH at ${offset}`, r);
      const next = Number(r.headers['upload-offset']);
      if (next !== offset + body.length) throw new Error(`PATCH at ${offset}: Upload-Offset ${r.headers['upload-offset']}, want ${offset + body.length}`);
      offset = next;
    }
    return { requests: 1 + patches };
  } finally {
    agent.destroy();
  }
}

// ---- the files ----

let pool = null;
/**
 * The bytes: one random buffer of the largest size, generated once; upload i of a workload is the slice at
 * i × 12 MiB (all distinct, so a server that mixed uploads up fails the check). sha256 per slice, once.
 */
function filesFor(w) {
  const total = Math.max(w.fileSize, (w.count - 1) * 12 * MiB + w.fileSize);
  if (!pool || pool.length < total) pool = randomFillSync(Buffer.allocUnsafe(Math.max(total, 256 * MiB)));
  w.files ??= new WeakMap();
  if (!w.files.has(pool)) {
    const files = Array.from({ length: w.count }, (_, i) => pool.subarray(i * 12 * MiB, i * 12 * MiB + w.fileSize));
    w.files.set(pool, { files, sha256: files.map((f) => createHash('sha256').update(f).digest('hex')).sort() });
  }
  return w.files.get(pool);
}
const primer = randomFillSync(Buffer.alloc(16 * 1024));
const RUN_DEADLINE_MS = 5 * 60_000;

const sameSorted = (a, b) => a.length === b.length && [...a].sort().every((x, i) => x === b[i]);

// ---- one run ----

/**
 * A run against a fresh server: start, one 16 KiB upload, 250 ms, idle RSS and disk writes, the run
 * (`count` uploads at once), checks, S3 cleanup, stop.
 */
async function freshRun(ctx, name, w, { verify = false, env } = {}) {
  const { files, sha256 } = filesFor(w);
  const s = await startServer(name, join(ctx.base, `${name}-${ctx.serial++}`), { cpuProf: ctx.cpuProf, nodeFlags: ctx.nodeFlags, appHeapMiB: ctx.appHeapMiB, env });
  ctx.live.add(s);
  // A run that has not finished in 5 minutes (the longest take seconds) is stuck: seen once, a local radosgw
  // that stopped answering one request. The server is killed, which fails the run (an S3 run is retried once
  // against a restarted S3 server, see resumablePhase) instead of holding the whole bench.
  let stuck = false;
  const deadline = setTimeout(() => {
    stuck = true;
    s.child.kill('SIGKILL');
  }, RUN_DEADLINE_MS);
  try {
    await tusUpload(s.port, primer, CHUNK);
    await s.command('completed');
    await sleep(250);
    const idle = s.rss();
    const io0 = diskWriteBytes(s.pid);
    if (verify) await s.setVerify(true);
    const usage0 = await s.usage();
    const busy0 = machineBusySeconds();
    const self0 = process.cpuUsage();
    const peak = peakRss(s.pid);
    const t0 = now();
    const done = await Promise.all(files.map((f) => tusUpload(s.port, f, w.chunk)));
    const seconds = (now() - t0) / 1e3;
    const mem = peak.stop();
    const usage = await s.usage();
    const cpu = usage.cpu - usage0.cpu;
    const selfCpu = process.cpuUsage(self0);
    const client = (selfCpu.user + selfCpu.system) / 1e6;
    const others = Math.max(0, machineBusySeconds() - busy0 - cpu - client);
    const diskWrites = diskWriteBytes(s.pid) - io0;
    const { completed } = await s.command('completed');
    const problems = [];
    if (completed.length !== w.count) problems.push(`${completed.length} uploads completed, want ${w.count}`);
    for (const c of completed) if (c.size !== w.fileSize) problems.push(`completed with size ${c.size}, want ${w.fileSize}`);
    const spool = name.startsWith('spool-');
    // resumable()'s sha256 is off by default: when a digest is given it must be right.
    if (spool && completed.some((c) => c.sha256 !== undefined) && !sameSorted(completed.map((c) => c.sha256), sha256)) problems.push(`express-spool's file.sha256 ${completed.map((c) => c.sha256).join(', ')} is not the uploads' sha256`);
    if (verify && !sameSorted(completed.map((c) => c.stored), sha256)) problems.push(`stored bytes sha256 ${completed.map((c) => c.stored).join(', ')}, want ${sha256.join(', ')}`);
    if (verify) await s.setVerify(false);
    await s.command('cleanup');
    if (problems.length) throw new Error(`${name} / ${w.key}${verify ? ' (verification)' : ''}: ${problems.slice(0, 5).join('; ')}`);
    return {
      seconds,
      bytes: w.count * w.fileSize,
      requests: done.reduce((n, d) => n + d.requests, 0),
      cpu,
      cpuUser: usage.user - usage0.user,
      cpuSystem: usage.system - usage0.system,
      client,
      others,
      peak: mem.peak,
      rssBefore: idle,
      rssAfter: mem.rssAfter,
      idle,
      diskWrites,
      sha256Seen: spool ? completed.every((c) => c.sha256) : undefined,
    };
  } catch (err) {
    throw stuck ? new Error(`${name} / ${w.key}: no end after ${RUN_DEADLINE_MS / 60_000} minutes (server killed)`, { cause: err }) : err;
  } finally {
    clearTimeout(deadline);
    ctx.live.delete(s);
    await s.stop();
    rmSync(s.dir, { recursive: true, force: true });
  }
}

function summarizeResumable(w, runsByTarget) {
  const rows = summarize(w, runsByTarget);
  for (const [t, rs] of Object.entries(runsByTarget)) if (rows[t]) rows[t].diskWrites = spread(rs.map((r) => r.diskWrites));
  return rows;
}

/** The packages the comparison ran against (read from node_modules). */
export function tusVersions() {
  const v = (p) => {
    try {
      return JSON.parse(readFileSync(join(ROOT, 'node_modules', p, 'package.json'), 'utf8')).version;
    } catch {
      return '?';
    }
  };
  return Object.fromEntries(['@tus/server', '@tus/file-store', '@tus/s3-store'].map((p) => [p, v(p)]));
}

/**
 * The resumable phase: verified warm-up (one run per server and workload, r2 only with --quick), then
 * `opts.freshRounds` rounds in which every workload runs every server once, order rotated.
 *
 * @param {{ opts, log, base, live: Set, s3: { get(): Promise<{ env?, about?, skipped? }>, restart(): Promise<object> } }} ctx
 *   `s3.get()` opens (or reuses) the S3 server; `s3.restart()` replaces one that failed.
 * @returns {{ W, R, s3: { about?, skipped? } }}
 */
export async function resumablePhase({ opts, log, base, live, s3 }) {
  const W = Object.fromEntries(Object.entries(resumableWorkloads(opts)).filter(([k]) => opts.onlyResumable.includes(k)));
  const ctx = { base, live, cpuProf: opts.cpuProf, nodeFlags: opts.nodeFlags, appHeapMiB: opts.appHeapMiB, serial: 0 };
  let session = await s3.get();
  const s3Status = { about: session.about, skipped: session.skipped };
  if (session.skipped) log(`resumable S3 pair skipped: ${session.skipped}`);
  const targets = () => (s3Status.skipped ? DISK_TARGETS : [...DISK_TARGETS, ...S3_TARGETS]);
  for (const w of Object.values(W)) filesFor(w);

  /** A run; an S3 target's failure (a local radosgw under load has been seen to die) restarts the S3 server once, then drops the S3 pair. */
  let s3Failures = 0;
  const run = async (name, w, options = {}) => {
    if (!S3_TARGETS.includes(name)) return freshRun(ctx, name, w, options);
    for (;;) {
      try {
        return await freshRun(ctx, name, w, { ...options, env: session.env });
      } catch (err) {
        const why = err?.message ?? String(err);
        log(`resumable ${name} / ${w.key} failed: ${why}`);
        if (++s3Failures > 1) {
          s3Status.skipped = `a run failed twice (last: ${why})`;
          return null;
        }
        session = await s3.restart();
        if (session.skipped) {
          s3Status.skipped = `a run failed (${why}), and the S3 server could not be restarted: ${session.skipped}`;
          return null;
        }
        s3Status.about = session.about;
      }
    }
  };

  if (opts.verify) {
    const verifyKeys = opts.quick && W.r2 ? ['r2'] : Object.keys(W);
    for (const k of verifyKeys) for (const name of targets()) if (targets().includes(name)) await run(name, W[k], { verify: true });
    log(`resumable: verified warm-up done (${verifyKeys.join(', ')}: every stored upload re-read and its sha256 checked)`);
  }
  const runs = Object.fromEntries(Object.keys(W).map((k) => [k, Object.fromEntries([...DISK_TARGETS, ...S3_TARGETS].map((t) => [t, []]))]));
  for (let round = 0; round < opts.freshRounds; round++) {
    for (const [k, w] of Object.entries(W)) {
      const order = targets().map((_, i, xs) => xs[(i + round) % xs.length]);
      for (const name of order) {
        if (!targets().includes(name)) continue; // the S3 pair was dropped this round
        const r = await run(name, w);
        if (r) runs[k][name].push(r);
      }
    }
    log(`resumable round ${round + 1}/${opts.freshRounds} done`);
  }
  if (s3Status.skipped) for (const k of Object.keys(W)) for (const t of S3_TARGETS) runs[k][t] = [];
  const R = Object.fromEntries(Object.entries(W).map(([k, w]) => [k, { 'keep-alive': summarizeResumable(w, runs[k]) }]));
  for (const w of Object.values(W)) delete w.files;
  pool = null;
  return { W, R, s3: s3Status };
}
