// npm run memory-bound: is the memory budget a real bound? Real sockets against a separate server process
// (scripts/memory-bound-server.mjs, one per load and budget) measure
//
//     peak RSS − idle RSS  ≤  memoryBudget + FIXED + PER_REQUEST × (peak admitted requests)
//
// for three loads:
//   text  many slow clients, each trickling a multipart body of text fields (small pieces, pauses);
//   disk  concurrent large uploads through the spool (threshold 1 MiB) into diskEngine;
//   s3    concurrent large uploads through the spool into s3Engine (S3_ENDPOINT & co., or a local Ceph
//         radosgw started with scripts/local-s3.sh and stopped again).
// Every admitted upload must come back byte-exact (text: a digest of req.body; files: the streamed
// sha256 and an independent re-read of the file / GetObject, both against the client's own digest). A
// request the server refuses for memory must be a 503 with Retry-After: the client counts it, waits (the
// Retry-After, or --retry-delay ms) and sends it again, until every upload is stored. After each run the
// budget must be back to 0 and nothing left on disk or in the bucket.
//
// The stated overhead (--fixed, --per-request; measured on Node 20, 2 cores): FIXED = 64 MiB is V8's headroom
// (new space growing to 2 × 16 MiB semi-spaces, garbage awaiting a GC: parser strings, freed part buffers up
// to V8's external-memory GC trigger); PER_REQUEST = 640 KiB is what an admitted upload holds outside the
// budget (socket, IncomingMessage, busboy, file stream, tap and write-stream buffers: 480–700 KiB per disk
// upload live after a forced GC, against a REQUEST_SHARE of 128 KiB; a text-only request ~60–85 KiB).
// Text fields live as V8 strings: with V8's default heap growth the old generation may reach several times
// its live size before a full GC, so text-heavy loads at a small budget can pass the bound (see --gc-probe).
//
// Idle RSS is taken after a warm-up (a few small uploads of the same kind, so lazily loaded modules — the
// S3 SDK — and JIT code are in it) and one second of quiet; the peak is the kernel's VmHWM, reset after
// the warm-up (/proc/PID/clear_refs), and 10 ms samples of VmRSS.
//
// Options (defaults in brackets):
//   --loads text,disk,s3  --budgets 64MiB,16MiB
//   --text-clients 500  --text-size 64KiB-256KiB  --text-fields 4-8  --text-duration 4000 (ms per body)
//   --disk-clients 64   --disk-size 16MiB-64MiB
//   --s3-clients 64     --s3-size 16MiB-32MiB  --part-size 5MiB  --queue-size 4
//   --retry-delay MS     wait this long after a 503 instead of its Retry-After (plus jitter)
//   --admission-timeout MS  the middleware's admissionTimeout [library default, 10000]
//   --fixed 64MiB --per-request 640KiB  the stated overhead the bound is checked against (see the README)
//   --lib source|dist|PATH  what to load: the TypeScript sources transpiled on the fly [source], dist/, or a module
//   --transpile-to DIR  only transpile the sources into DIR (inside the repository) and print the module's path
//   --server-flags "…"  node flags for the server process (profiling: --max-semi-space-size=…, --trace-gc)
//   --gc-probe MS        profiling, with --server-flags --expose-gc: a full GC every MS ms in the server, and the
//                        most memory still live after one (in the JSON) — live data against garbage not yet collected
//   --json  also print the results as one line `MEMORY_BOUND_JSON {…}` (the jest test reads it)
import { fork, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SERVER = join(ROOT, 'scripts', 'memory-bound-server.mjs');
const KiB = 1024;
const MiB = 1024 * KiB;

// ---- options --------------------------------------------------------------------------------------
const UNITS = { b: 1, kib: KiB, kb: 1000, mib: MiB, mb: 1e6, gib: 1024 * MiB, gb: 1e9 };
function size(text) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(text));
  const unit = UNITS[(m?.[2] || 'b').toLowerCase()];
  if (!m || !unit) throw new Error(`not a size: ${text}`);
  return Math.round(Number(m[1]) * unit);
}
const range = (text, parse = size) => {
  const [low, high = low] = String(text).split('-');
  return [parse(low), parse(high)];
};
const defaults = {
  loads: 'text,disk,s3',
  budgets: '64MiB,16MiB',
  'text-clients': '500',
  'text-size': '64KiB-256KiB',
  'text-fields': '4-8',
  'text-duration': '4000',
  'disk-clients': '64',
  'disk-size': '16MiB-64MiB',
  's3-clients': '64',
  's3-size': '16MiB-32MiB',
  'part-size': '5MiB',
  'queue-size': '4',
  'retry-delay': '',
  'admission-timeout': '',
  fixed: '64MiB',
  'per-request': '640KiB',
  lib: 'source',
  'server-flags': '',
  'gc-probe': '',
  'transpile-to': '',
};
const args = { ...defaults, json: false };
for (let i = 2; i < process.argv.length; i++) {
  const name = process.argv[i].replace(/^--/, '');
  if (name === 'json') args.json = true;
  else if (name in defaults) args[name] = process.argv[++i];
  else throw new Error(`unknown option ${process.argv[i]} (see the top of ${fileURLToPath(import.meta.url)})`);
}
const LOADS = args.loads.split(',').filter(Boolean);
const BUDGETS = args.budgets.split(',').map(size);
const FIXED = size(args.fixed);
const PER_REQUEST = size(args['per-request']);
const RETRY_DELAY = args['retry-delay'] === '' ? undefined : Number(args['retry-delay']);
const ADMISSION_TIMEOUT = args['admission-timeout'] === '' ? undefined : Number(args['admission-timeout']);
const log = (message) => process.stderr.write(`[memory-bound] ${message}\n`);
const fmt = (bytes) => (bytes === undefined ? '—' : `${(bytes / MiB).toFixed(1)} MiB`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the library under test -------------------------------------------------------------------------
const cleanups = [];
process.on('exit', () => {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      fn();
    } catch {}
  }
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

/**
 * The library the server loads. 'source' (default) transpiles lib/ and engines/ (no type check, so a
 * colleague's half-typed change elsewhere does not stop the measurement) into node_modules/.cache, where
 * the package's dependencies resolve.
 */
function prepareLibrary(choice, into) {
  if (choice === 'dist') {
    const path = join(ROOT, 'dist', 'lib', 'index.js');
    if (!existsSync(path)) throw new Error('dist/lib/index.js is missing: npm run build first, or use --lib source');
    return path;
  }
  if (choice !== 'source') return resolve(choice);
  const ts = require('typescript');
  const out = into ?? join(ROOT, 'node_modules', '.cache', 'express-spool-memory-bound', `${process.pid}-${randomBytes(3).toString('hex')}`);
  if (!into) cleanups.push(() => rmSync(out, { recursive: true, force: true }));
  const transpile = (dir) => {
    mkdirSync(join(out, dir), { recursive: true });
    for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const name = join(dir, entry.name);
      if (entry.isDirectory()) transpile(name);
      if (!entry.isFile() || !name.endsWith('.ts') || name.endsWith('.d.ts')) continue;
      const { outputText } = ts.transpileModule(readFileSync(join(ROOT, name), 'utf8'), {
        fileName: name,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
      });
      writeFileSync(join(out, name.replace(/\.ts$/, '.js')), outputText);
    }
  };
  transpile('lib');
  transpile('engines');
  return join(out, 'lib', 'index.js');
}

// ---- S3 ---------------------------------------------------------------------------------------------
function localS3(command, dir) {
  const r = spawnSync('bash', [join(ROOT, 'scripts', 'local-s3.sh'), command, dir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 10 * 60 * 1000,
    killSignal: 'SIGKILL',
  });
  const vars = {};
  for (const line of (r.stdout ?? '').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2].replace(/^(['"])(.*)\1$/, '$2');
  }
  return { ok: r.status === 0 && !!vars.S3_ENDPOINT, vars, why: r.error?.message ?? (r.stderr ?? '').trim().split('\n').slice(-2).join(' / ') };
}

async function openS3() {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let vars = process.env;
  let about = `S3 server ${process.env.S3_ENDPOINT}`;
  if (!process.env.S3_ENDPOINT) {
    const dir = join(os.tmpdir(), `express-spool-memory-bound-s3-${process.pid}`);
    let r;
    for (let attempt = 1; attempt <= 3 && !r?.ok; attempt++) {
      log(`starting a local Ceph radosgw (scripts/local-s3.sh)${attempt > 1 ? `, attempt ${attempt}` : ''}…`);
      r = localS3('start', dir);
      if (!r.ok) localS3('stop', dir);
    }
    if (!r.ok) throw new Error(`scripts/local-s3.sh start failed: ${r.why}`);
    cleanups.push(() => localS3('stop', dir));
    vars = r.vars;
    about = `local Ceph radosgw ${vars.S3_ENDPOINT}`;
  }
  const sdk = require('@aws-sdk/client-s3');
  const s3 = {
    endpoint: vars.S3_ENDPOINT,
    region: vars.S3_REGION || 'us-east-1',
    accessKeyId: vars.S3_ACCESS_KEY_ID,
    secretAccessKey: vars.S3_SECRET_ACCESS_KEY,
    bucket: `spool-memory-bound-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
  };
  const client = new sdk.S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await client.send(new sdk.CreateBucketCommand({ Bucket: s3.bucket }));
  const leftovers = async () => {
    const objects = await client.send(new sdk.ListObjectsV2Command({ Bucket: s3.bucket }));
    const uploads = await client.send(new sdk.ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    return (objects.Contents?.length ?? 0) + (uploads.Uploads?.length ?? 0);
  };
  const close = async () => {
    const uploads = await client.send(new sdk.ListMultipartUploadsCommand({ Bucket: s3.bucket }));
    for (const u of uploads.Uploads ?? []) {
      await client.send(new sdk.AbortMultipartUploadCommand({ Bucket: s3.bucket, Key: u.Key, UploadId: u.UploadId }));
    }
    for (;;) {
      const page = await client.send(new sdk.ListObjectsV2Command({ Bucket: s3.bucket }));
      if (!page.Contents?.length) break;
      await client.send(new sdk.DeleteObjectsCommand({ Bucket: s3.bucket, Delete: { Objects: page.Contents.map(({ Key }) => ({ Key })), Quiet: true } }));
    }
    await client.send(new sdk.DeleteBucketCommand({ Bucket: s3.bucket }));
    client.destroy();
  };
  /** Reads an object back, hashes it and deletes it. */
  const readBack = async (key) => {
    const res = await client.send(new sdk.GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of res.Body) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    await client.send(new sdk.DeleteObjectCommand({ Bucket: s3.bucket, Key: key }));
    return { sha256: hash.digest('hex'), bytes };
  };
  return { s3, about, leftovers, close, readBack };
}

// ---- request bodies ---------------------------------------------------------------------------------
const BOUNDARY = '----MemoryBound7d1f0a';
const TEXT_POOL = randomBytes(768 * KiB).toString('base64'); // 1 MiB of ASCII; fields are slices of it
const DATA_POOL = randomBytes(4 * MiB + 256 * KiB);
const CHUNK = 256 * KiB;
/** Deterministic pseudo-random integer in [low, high] from a seed. */
const pick = (seed, [low, high]) => low + (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) >>> 0) % (high - low + 1);

/** A text-only body: `fields` fields named f0…, `total` bytes of values; the digest the server answers for it. */
function textBody(seed, total, fields) {
  const hash = createHash('sha256');
  const parts = [];
  for (let f = 0; f < fields; f++) {
    const length = Math.floor(total / fields);
    const start = pick(seed * 31 + f, [0, TEXT_POOL.length - length]);
    const value = TEXT_POOL.slice(start, start + length);
    hash.update(`f${f}\0${value}\0`);
    parts.push(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f${f}"\r\n\r\n${value}\r\n`);
  }
  parts.push(`--${BOUNDARY}--\r\n`);
  return { body: Buffer.from(parts.join('')), fields: hash.digest('hex') };
}

/** A one-file body of `bytes` pseudo-random bytes (unique per seed), generated chunk by chunk. */
function fileBody(seed, bytes) {
  const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="f${seed}.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  return {
    bytes,
    length: head.length + bytes + tail.length,
    /** Yields the body's buffers; `hash` sees the file's bytes. */
    *chunks(hash) {
      yield head;
      for (let offset = 0, i = 0; offset < bytes; offset += CHUNK, i++) {
        const length = Math.min(CHUNK, bytes - offset);
        const start = pick(seed * 7919 + i, [0, DATA_POOL.length - CHUNK]);
        const chunk = Buffer.from(DATA_POOL.subarray(start, start + length));
        chunk.writeUInt32BE(seed, 0);
        if (length >= 8) chunk.writeUInt32BE(i, 4);
        hash.update(chunk);
        yield chunk;
      }
      yield tail;
    },
  };
}

// ---- HTTP -----------------------------------------------------------------------------------------
/**
 * POSTs a body on a fresh connection, piece by piece (with `pause` ms between pieces when given), and
 * stops sending as soon as an answer arrives. Resolves { status, headers, json } or { reset: code } when
 * the connection failed before any answer.
 */
function post(port, pieces, length, pause) {
  return new Promise((resolvePost) => {
    let answered = false;
    let settled = false;
    const settle = (value) => {
      if (settled) return;
      settled = true;
      resolvePost(value);
    };
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/upload',
      agent: false,
      headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': length },
    });
    req.on('response', (res) => {
      answered = true;
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      const done = () => {
        let json;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString());
        } catch {}
        settle({ status: res.statusCode, headers: res.headers, json });
        req.destroy();
      };
      res.once('end', done).once('close', done);
    });
    req.on('error', (err) => {
      if (!answered) settle({ reset: err.code ?? err.message });
    });
    (async () => {
      for (const piece of pieces) {
        if (answered || req.destroyed) return;
        if (!req.write(piece)) {
          await new Promise((r) => {
            const done = () => {
              req.off('drain', done).off('close', done);
              r();
            };
            req.on('drain', done).on('close', done);
          });
        }
        if (pause) await sleep(pause());
      }
      if (!answered && !req.destroyed) req.end();
    })().catch(() => undefined);
  });
}

/** Splits a buffer into pieces of about `size` bytes. */
function* slices(buffer, size) {
  for (let offset = 0; offset < buffer.length; offset += size) yield buffer.subarray(offset, offset + size);
}

// ---- one run: one server, one load, one budget ------------------------------------------------------
function rssOf(pid, key = 'VmRSS') {
  try {
    return Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * KiB;
  } catch {
    return undefined;
  }
}

async function startServer(config) {
  const flags = args['server-flags'].split(' ').filter(Boolean);
  const child = fork(SERVER, [], {
    env: { ...process.env, MEMORY_BOUND_CONFIG: JSON.stringify(config) },
    execArgv: flags,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let nextId = 0;
  const waiting = new Map();
  let onListening;
  const listening = new Promise((r, reject) => {
    onListening = r;
    child.once('exit', (code) => reject(new Error(`server exited (${code}) before listening`)));
  });
  child.on('message', (message) => {
    if (message.type === 'listening') onListening(message.port);
    else waiting.get(message.id)?.(message), waiting.delete(message.id);
  });
  const port = await listening;
  const rpc = (type) =>
    new Promise((r, reject) => {
      const id = ++nextId;
      const timer = setTimeout(() => reject(new Error(`server did not answer ${type}`)), 10_000);
      waiting.set(id, (message) => (clearTimeout(timer), r(message)));
      child.send({ type, id });
    });
  const stop = () =>
    new Promise((r) => {
      if (child.exitCode !== null) return r();
      child.once('exit', r);
      child.send({ type: 'exit' });
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    });
  return { child, port, rpc, stop };
}

/**
 * Runs `clients` client loops; each sends its body until the server stores it, retrying after every 503
 * (which must carry Retry-After) or connection reset. `send(i)` → { result, verify(result) → problem? }.
 */
async function drive(clients, send, counts) {
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      for (let attempt = 1; ; attempt++) {
        const { result, verify } = await send(i, attempt);
        if (result.status === 200) {
          const problem = await verify(result);
          if (problem) {
            counts.mismatches++;
            log(`client ${i}: ${problem}`);
          } else counts.ok++;
          return;
        }
        let wait;
        if (result.status === 503) {
          if (result.json?.admitted) counts.failedAfterAdmission++;
          else counts.refusedAtAdmission++;
          const retryAfter = Number(result.headers['retry-after']);
          if (!(retryAfter > 0)) counts.missingRetryAfter++;
          wait = RETRY_DELAY ?? (retryAfter > 0 ? retryAfter * 1000 : 1000);
        } else if (result.reset) {
          counts.resets[result.reset] = (counts.resets[result.reset] ?? 0) + 1;
          wait = RETRY_DELAY ?? 1000;
        } else {
          counts.errors[result.status] = (counts.errors[result.status] ?? 0) + 1;
          log(`client ${i}: status ${result.status} ${JSON.stringify(result.json)}`);
          return;
        }
        if (attempt >= 500) {
          counts.gaveUp++;
          return;
        }
        counts.retries++;
        await sleep(wait * (1 + Math.random() * 0.5)); // jitter: retries do not come back in one wave
      }
    }),
  );
}

async function hashFile(path) {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/** What each load sends and how it checks the answer. */
function loadOf(kind, s3) {
  if (kind === 'text') {
    const clients = Number(args['text-clients']);
    const sizes = range(args['text-size']);
    const fieldCounts = range(args['text-fields'], Number);
    const duration = Number(args['text-duration']);
    const bodies = Array.from({ length: clients }, (_, i) => textBody(i + 1, pick(i + 1, sizes), pick(i + 7, fieldCounts)));
    const bytes = bodies.reduce((n, b) => n + b.body.length, 0);
    return {
      clients,
      describe: `${clients} × ${args['text-size']} text (${args['text-fields']} fields, ~${(duration / 1000).toFixed(1)} s each)`,
      bytes,
      warmup: async (port) => {
        for (let i = 0; i < 3; i++) await post(port, [textBody(1000 + i, 16 * KiB, 2).body], textBody(1000 + i, 16 * KiB, 2).body.length);
      },
      send: async (i) => {
        const { body, fields } = bodies[i];
        const pieces = [...slices(body, 8 * KiB)];
        const result = await post(port(), pieces, body.length, () => (duration / pieces.length) * (0.5 + Math.random()));
        return { result, verify: (r) => (r.json?.fields === fields ? undefined : `fields digest ${r.json?.fields} ≠ ${fields}`) };
      },
    };
  }
  const clients = Number(args[`${kind}-clients`]);
  const sizes = range(args[`${kind}-size`]);
  const files = Array.from({ length: clients }, (_, i) => fileBody(i + 1, pick(i + 1, sizes)));
  const sendFile = async (file) => {
    const hash = createHash('sha256');
    const result = await post(port(), file.chunks(hash), file.length);
    const expected = hash.digest('hex');
    const verify = async (r) => {
      const stored = r.json?.files?.[0];
      if (!stored) return 'no file in the answer';
      const back =
        stored.storage === 'memory' ? { sha256: stored.sha256, bytes: stored.size } // warm-up only: below the threshold
          : kind === 'disk' ? await hashFile(stored.path).finally(() => unlinkSync(stored.path))
            : await s3.readBack(stored.key);
      if (stored.size !== file.bytes || back.bytes !== file.bytes) return `size ${stored.size}/${back.bytes} ≠ ${file.bytes}`;
      if (stored.sha256 !== expected) return `streamed sha256 ${stored.sha256} ≠ ${expected}`;
      if (back.sha256 !== expected) return `re-read sha256 ${back.sha256} ≠ ${expected}`;
      return undefined;
    };
    return { result, verify };
  };
  return {
    clients,
    describe: `${clients} × ${args[`${kind}-size`]} files → ${kind === 'disk' ? 'disk' : 'S3'}`,
    bytes: files.reduce((n, f) => n + f.bytes, 0),
    warmup: async (port) => {
      for (const bytes of [2 * MiB, 6 * MiB, 512 * KiB]) {
        const { result, verify } = await sendFile(fileBody(5000 + bytes, bytes));
        if (result.status !== 200 || (await verify(result))) throw new Error(`warm-up upload failed: ${JSON.stringify(result.json ?? result)}`);
      }
    },
    send: (i) => sendFile(files[i]),
  };
}

let currentPort = 0;
const port = () => currentPort;

async function run(kind, budget, libPath, s3) {
  const load = loadOf(kind, s3);
  const dir = kind === 'disk' ? mkdtempSync(join(os.tmpdir(), 'spool-memory-bound-')) : undefined;
  if (dir) cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const server = await startServer({
    lib: libPath,
    load: kind,
    budget,
    dir,
    s3: s3?.s3,
    partSize: size(args['part-size']),
    queueSize: Number(args['queue-size']),
    admissionTimeout: ADMISSION_TIMEOUT,
    gcProbe: args['gc-probe'] === '' ? undefined : Number(args['gc-probe']),
  });
  currentPort = server.port;
  try {
    await load.warmup(server.port);
    await sleep(1000);
    await server.rpc('reset');
    const idle = rssOf(server.child.pid);
    let hwmReset = true;
    try {
      writeFileSync(`/proc/${server.child.pid}/clear_refs`, '5');
    } catch {
      hwmReset = false; // not permitted: the 10 ms samples are the peak then
    }
    let sampled = idle;
    const sampler = setInterval(() => (sampled = Math.max(sampled, rssOf(server.child.pid) ?? 0)), 10);
    const counts = { ok: 0, mismatches: 0, refusedAtAdmission: 0, failedAfterAdmission: 0, missingRetryAfter: 0, retries: 0, resets: {}, errors: {}, gaveUp: 0 };
    const started = Date.now();
    log(`${kind}, budget ${fmt(budget)}: ${load.describe}, ${fmt(load.bytes)} in all…`);
    await drive(load.clients, load.send, counts);
    const seconds = (Date.now() - started) / 1000;
    clearInterval(sampler);
    const hwm = hwmReset ? rssOf(server.child.pid, 'VmHWM') : undefined;
    const peak = Math.max(sampled, hwm ?? 0);
    // Every response has closed by now; the budget must drain to 0 at once (give the closes a moment).
    let stats = (await server.rpc('stats')).stats;
    for (let i = 0; i < 50 && stats.used !== 0; i++) {
      await sleep(100);
      stats = (await server.rpc('stats')).stats;
    }
    const leftovers = dir ? readdirSync(dir).length : s3 ? await s3.leftovers() : 0;
    const delta = peak - idle;
    const admitted = stats.peakAdmitted;
    const bound = budget + FIXED + PER_REQUEST * admitted;
    const row = {
      load: kind,
      describe: load.describe,
      budget,
      clients: load.clients,
      bytes: load.bytes,
      seconds,
      ...counts,
      serverRefusedAtAdmission: stats.refusedAtAdmission,
      serverFailedAfterAdmission: stats.failedAfterAdmission,
      serverOtherErrors: stats.otherErrors,
      idle,
      peak,
      peakSource: hwmReset ? 'VmHWM' : 'samples',
      delta,
      peakUsed: stats.peakUsed,
      peakAdmitted: admitted,
      peakConnections: stats.peakConnections,
      peakWaiting: stats.peakWaiting,
      overheadPerRequest: delta > budget && admitted > 0 ? (delta - budget) / admitted : 0,
      bound,
      usedAfter: stats.used,
      leftovers,
      atPeak: stats.memory.atPeak,
      memoryMax: stats.memory.max,
      live: stats.live,
    };
    row.holds = delta <= bound;
    row.pass =
      row.holds && counts.ok === load.clients && counts.mismatches === 0 && counts.missingRetryAfter === 0 &&
      Object.keys(counts.errors).length === 0 && counts.gaveUp === 0 && stats.used === 0 && leftovers === 0 &&
      stats.peakUsed <= budget;
    log(
      `  ${counts.ok}/${load.clients} stored in ${seconds.toFixed(1)} s; 503: ${counts.refusedAtAdmission} at admission, ${counts.failedAfterAdmission} after; ` +
        `idle ${fmt(idle)}, peak ${fmt(peak)} (+${fmt(delta)}), peak admitted ${admitted}, peak used ${fmt(stats.peakUsed)}; ` +
        `at the peak: heap ${fmt(row.atPeak?.heapUsed)}/${fmt(row.atPeak?.heapTotal)}, external ${fmt(row.atPeak?.external)}, arrayBuffers ${fmt(row.atPeak?.arrayBuffers)} → ${row.pass ? 'ok' : 'FAIL'}`,
    );
    return row;
  } finally {
    await server.stop();
  }
}

// ---- main -----------------------------------------------------------------------------------------
function table(rows) {
  const head = [
    'load', 'budget', 'clients × size', 'stored', '503 at admission / after', 'retries', 'idle RSS', 'peak RSS', 'peak − idle',
    'peak budget used', 'peak admitted', '(peak − idle − budget) / admitted', `bound: budget + ${fmt(FIXED)} + ${PER_REQUEST / KiB} KiB × admitted`, 'byte-exact, budget 0, nothing left',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const perRequest = r.overheadPerRequest > 0 ? `${(r.overheadPerRequest / KiB).toFixed(1)} KiB` : '≤ 0 (within the budget)';
    const clean = r.mismatches === 0 && r.usedAfter === 0 && r.leftovers === 0 ? 'yes' : `mismatches ${r.mismatches}, used after ${r.usedAfter}, left ${r.leftovers}`;
    lines.push(
      `| ${r.load} | ${fmt(r.budget)} | ${r.describe} | ${r.ok}/${r.clients} in ${r.seconds.toFixed(0)} s | ${r.refusedAtAdmission} / ${r.failedAfterAdmission} | ${r.retries} | ` +
        `${fmt(r.idle)} | ${fmt(r.peak)} | **${fmt(r.delta)}** | ${fmt(r.peakUsed)} | ${r.peakAdmitted} | ${perRequest} | ${fmt(r.bound)} ${r.holds ? 'holds' : '**EXCEEDED**'} | ${clean} |`,
    );
  }
  return lines.join('\n');
}

if (args['transpile-to']) {
  // Only transpile (the jest test does it once for its three runs, then passes --lib).
  console.log(prepareLibrary('source', resolve(args['transpile-to'])));
  process.exit(0);
}
const libPath = prepareLibrary(args.lib);
let s3;
const rows = [];
try {
  if (LOADS.includes('s3')) {
    s3 = await openS3();
    log(`S3: ${s3.about}, bucket ${s3.s3.bucket}`);
  }
  for (const budget of BUDGETS) for (const kind of LOADS) rows.push(await run(kind, budget, libPath, s3));
} finally {
  await s3?.close().catch((err) => log(`could not delete the bucket: ${err.message}`));
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model?.trim()}, ${fmt(os.totalmem())}, Node ${process.version}`;
console.log(`\nmemory bound (${machine}; library: ${args.lib}${args['server-flags'] ? `; server flags ${args['server-flags']}` : ''})\n`);
console.log(table(rows));
const pass = rows.every((r) => r.pass);
console.log(`\nmemory-bound: ${pass ? 'PASS' : 'FAIL'}`);
if (args.json) console.log(`MEMORY_BOUND_JSON ${JSON.stringify({ pass, fixed: FIXED, perRequest: PER_REQUEST, rows })}`);
process.exitCode = pass ? 0 : 1;
