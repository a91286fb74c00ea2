// The workloads of issue #13, who runs them, and the request bodies.

import { createHash } from 'node:crypto';
import { buildBody } from '../parser-micro.mjs';

const KiB = 1024;
export const MiB = 1024 * KiB;

/** Client modes: reuse connections, or one connection per request (`Connection: close`). */
export const MODES = ['keep-alive', 'close'];

const SPOOLS = ['spool', 'spool-sha256', 'spool-nohash'];
/** Large files: multer's disk storage and a raw-body-to-file ceiling. */
const LARGE_TARGETS = [...SPOOLS, 'multer-disk', 'busboy-disk', 'busboy-stream', 'busboy-drop', 'ceiling-disk'];
/** Small files: multer's memory storage and the bare Express + @fastify/busboy floor. */
const SMALL_TARGETS = [...SPOOLS, 'multer-memory', 'busboy-mem', 'busboy-drop'];
const S3_TARGETS = ['spool-s3', 'multer-s3', 'ceiling-s3'];
/** c with an app-sized heap: the throughput and CPU comparisons (the hashing pair and RSS stay with c). */
const APP_TARGETS = ['spool', 'multer-disk', 'busboy-disk', 'busboy-stream', 'busboy-drop', 'ceiling-disk'];
/** JS objects every `c-app` server holds (~16 MiB live after a full GC on top of the bare ~8 MB). */
export const APP_HEAP_MIB = 16;

/**
 * `perRound`: timed runs per target in each round (short workloads get more samples); `fresh`: every run
 * against a new server process (for its idle and peak RSS); `perRoundServers`: new, warmed-up server processes every
 * round (so no single process's luck decides a median); `perRequest`: report req/s and CPU µs/request
 * instead of MB/s and CPU s/GB; `reportTime`: the targets also quote the run's time.
 */
export function workloads({ quick }) {
  const c = quick ? 8 : 16; // --quick: smaller counts (c: still 8× the memory budget in flight)
  return {
    a: { key: 'a', title: '4 × 20 MiB in parallel', fileSize: 20 * MiB, count: 4, concurrency: 4, perRound: quick ? 2 : 3, reportTime: true, targets: LARGE_TARGETS },
    b: { key: 'b', title: 'one 256 MiB file', fileSize: 256 * MiB, count: 1, concurrency: 1, perRound: 1, targets: LARGE_TARGETS },
    c: { key: 'c', title: `${c} × 64 MiB in parallel, fresh server per run (peak RSS)`, fileSize: 64 * MiB, count: c, concurrency: c, perRound: 1, fresh: true, targets: LARGE_TARGETS },
    // c again with every server holding an application's worth of JS objects (lib/app-heap.cjs): the bare
    // servers' ~8 MB heaps sit on V8's 8 MB incremental-marking threshold, where full GCs depend on trifles
    // (bench/README.md, "Large uploads and V8's old-generation limit"); an app's heap does not. Each run gets a
    // new server warmed up with one untimed run of the workload, as a long-running app has taken uploads before.
    'c-app': { key: 'c-app', title: `${c} × 64 MiB in parallel, every server holding ${APP_HEAP_MIB} MiB of application state and warmed up with one untimed run`, fileSize: 64 * MiB, count: c, concurrency: c, perRound: 1, fresh: true, warmUp: true, appHeapMiB: APP_HEAP_MIB, targets: APP_TARGETS },
    d: { key: 'd', title: `${quick ? 500 : '2,000'} × 16 KiB, 32 in flight`, fileSize: 16 * KiB, count: quick ? 500 : 2000, concurrency: 32, perRound: quick ? 1 : 3, perRoundServers: true, perRequest: true, targets: SMALL_TARGETS },
  };
}

/** The S3 pair: one file per run, fresh server per run (RSS should not grow with the file). */
export const s3Workloads = () =>
  [64, 256].map((n) => ({ key: `s3-${n}MiB`, title: `S3: one ${n} MiB file`, fileSize: n * MiB, count: 1, concurrency: 1, perRound: 1, fresh: true, targets: S3_TARGETS }));

/**
 * What a target should answer for a file of `fileSize`: where it went (`storage`), whether it saw the raw body
 * (`raw`), whether its files stay on disk (`filesLeft`), and for express-spool whether it hashes.
 */
export function expected(target, fileSize) {
  const spilled = fileSize > MiB; // express-spool's default threshold
  switch (target) {
    case 'ceiling-disk': return { storage: 'disk', raw: true, filesLeft: true };
    case 'ceiling-s3': return { storage: 's3', raw: true };
    case 'busboy-disk': case 'busboy-stream': return { storage: 'disk', filesLeft: true };
    case 'multer-disk': return { storage: 'disk', filesLeft: true };
    case 'multer-memory': case 'busboy-mem': return { storage: 'memory' };
    case 'busboy-drop': return { storage: 'none' };
    case 'multer-s3': return { storage: 's3', sizeUnknown: true }; // multer-s3 reports size 0 for streams of unknown length
    case 'spool-s3': return { storage: spilled ? 's3' : 'memory', spool: true };
    case 'spool-sha256': return { storage: spilled ? 'disk' : 'memory', spool: true, sha256: true };
    case 'spool-nohash': return { storage: spilled ? 'disk' : 'memory', spool: true, sha256: false };
    case 'spool': return { storage: spilled ? 'disk' : 'memory', spool: true }; // sha256: whatever the default is
    default: throw new Error(`unknown target ${target}`);
  }
}

/** A browser-style body (text field, the file, text field) with random file bytes, built once per size. */
export function makeBody(fileSize) {
  const w = buildBody({ files: 1, fileSize });
  const o = w.fileOffsets[0];
  w.file = w.body.subarray(o, o + fileSize);
  w.fileSha256 = createHash('sha256').update(w.file).digest('hex');
  w.bodySha256 = createHash('sha256').update(w.body).digest('hex');
  return w;
}

/** One line per server target, for the report. */
export const TARGET_ABOUT = {
  spool: 'express-spool, `spool()` with no options: its defaults (1 MiB threshold, temporary files under os.tmpdir(), 64 MiB memory budget, default `sha256`)',
  'spool-sha256': 'express-spool, `spool({ sha256: true })` (hash on)',
  'spool-nohash': 'express-spool, `spool({ sha256: false })` (hash off)',
  'multer-disk': 'multer 2 `diskStorage({ destination })`',
  'multer-memory': 'multer 2 `memoryStorage()`',
  'busboy-mem': 'bare Express 5 + @fastify/busboy, file bytes collected into one Buffer (the CPU floor for keeping small files in memory)',
  'busboy-drop': 'bare Express 5 + @fastify/busboy, file bytes counted and dropped',
  'busboy-disk': 'bare Express 5 + @fastify/busboy, each file `stream.pipeline`d into `fs.createWriteStream` (the textbook hand-written handler; no limits, no cleanup)',
  'busboy-stream': 'bare Express 5 + @fastify/busboy, each file `stream.pipeline`d into `fs.createWriteStream` with `ceiling-disk`\'s 1 MiB buffer (the parser\'s chunks written as they are, no copy): the fastest plain parse-and-write handler, the floor for a multipart server writing to disk',
  'ceiling-disk': 'raw node:http, the request body piped into one file (1 MiB write buffer)',
  'spool-s3': 'express-spool, `spool({ rollover: s3Engine({ client, bucket, prefix }) })`, the rest default',
  'multer-s3': 'multer 2 + multer-s3 3 (its defaults)',
  'ceiling-s3': 'raw node:http, the request body streamed into one S3 object by @aws-sdk/lib-storage `Upload` (its defaults: 5 MiB parts, 4 in flight), no parsing: the limit for receiving to this S3 server',
};
