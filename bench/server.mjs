// One benchmark target: a small HTTP server on 127.0.0.1 in its own process (forked by bench/run.mjs),
// so that its CPU time and memory are its own.
//
//   node bench/server.mjs <target> <directory>
//
// POST /upload with one multipart file in field "file" (plus text fields). The answer is JSON
// { files: [{ size, storage, sha256?, stored? }] }; `stored` (verification mode only) is the sha256 of
// the bytes the target actually kept, re-read from disk, memory or S3.
//
// IPC from the client: { cmd: 'verify', on } | { cmd: 'cpu' } (answers process.cpuUsage(): all threads,
// µs, in total and split into user and kernel time, the number of full (mark-compact) GCs and of minor page faults so far) | { cmd: 'cleanup' } (deletes what an S3 target stored) | { cmd: 'exit' }; each answered with
// { ack: id, … }.

import { mkdirSync } from 'node:fs';
import { GCProfiler } from 'node:v8';
import { state } from './lib/servers/common.mjs';

const load = (file, extra) => async (options) => (await import(file)).default({ ...options, ...extra });
const TARGETS = {
  'ceiling-disk': load('./lib/servers/ceiling-disk.mjs'),
  'ceiling-s3': load('./lib/servers/ceiling-s3.mjs'),
  'busboy-mem': load('./lib/servers/busboy.mjs', { keep: 'memory' }),
  'busboy-drop': load('./lib/servers/busboy.mjs', { keep: 'none' }),
  'busboy-disk': load('./lib/servers/busboy.mjs', { keep: 'disk' }),
  'busboy-stream': load('./lib/servers/busboy.mjs', { keep: 'stream' }),
  'multer-memory': load('./lib/servers/multer.mjs', { kind: 'memory' }),
  'multer-disk': load('./lib/servers/multer.mjs', { kind: 'disk' }),
  'multer-s3': load('./lib/servers/multer.mjs', { kind: 's3' }),
  spool: load('./lib/servers/spool.mjs', { kind: 'spool' }),
  'spool-sha256': load('./lib/servers/spool.mjs', { kind: 'spool-sha256' }),
  'spool-nohash': load('./lib/servers/spool.mjs', { kind: 'spool-nohash' }),
  'spool-s3': load('./lib/servers/spool.mjs', { kind: 'spool-s3' }),
};

const [target, directory] = process.argv.slice(2);
if (!TARGETS[target] || !directory) {
  process.stderr.write(`usage: node bench/server.mjs <${Object.keys(TARGETS).join('|')}> <directory>\n`);
  process.exit(2);
}
mkdirSync(directory, { recursive: true });

const made = await TARGETS[target]({ directory });
const { server, cleanup } = typeof made.listen === 'function' ? { server: made } : made;
server.keepAliveTimeout = 60_000;
server.requestTimeout = 0;
server.headersTimeout = 60_000;

// Full GCs are counted because on a small heap V8 can run one every few dozen ms during large uploads
// (bench/README.md, "Large uploads and V8's old-generation limit"): the report prints them per run.
// V8's GCProfiler records each GC in C++; a PerformanceObserver would allocate JS objects after every GC,
// which itself makes full GCs more likely on these small heaps (measured: it tipped runs into the cycle).
let majorGcs = 0;
let gcProfiler = new GCProfiler();
gcProfiler.start();
function countMajorGcs() {
  const { statistics } = gcProfiler.stop();
  for (const s of statistics) if (s.gcType === 'MarkSweepCompact') majorGcs++;
  gcProfiler = new GCProfiler();
  gcProfiler.start();
  return majorGcs;
}

process.on('message', async (m) => {
  const ack = (extra) => process.send({ ack: m.id, ...extra });
  try {
    if (m?.cmd === 'verify') {
      state.verify = !!m.on;
      ack();
    } else if (m?.cmd === 'cpu') {
      const u = process.cpuUsage();
      ack({ cpuMicros: u.user + u.system, userMicros: u.user, systemMicros: u.system, majorGcs: countMajorGcs(), minorFaults: process.resourceUsage().minorPageFault });
    } else if (m?.cmd === 'cleanup') {
      await cleanup?.();
      ack();
    } else if (m?.cmd === 'exit') {
      server.close();
      server.closeAllConnections?.();
      setImmediate(() => process.exit(0)); // process.exit() lets --cpu-prof write its profile
    }
  } catch (err) {
    ack({ error: String(err?.stack ?? err) });
  }
});
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => process.send({ ready: true, port: server.address().port, pid: process.pid }));
