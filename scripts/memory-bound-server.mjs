// The server process of `npm run memory-bound` (scripts/memory-bound.mjs forks one per load and budget).
// express-spool with its defaults except the memory budget and where large files go, plus a little
// instrumentation that does not change what the library does:
//   - the MemoryBudget is created here and its methods wrapped, so the exact peak of `used` is known;
//   - its leases are wrapped too: a request counts as admitted while its lease holds memory (from its
//     REQUEST_SHARE on admission until the lease closes: failure, or the response's end);
//   - process.memoryUsage() is sampled every 25 ms, so the report can say what held the memory at the peak.
// Configuration comes as JSON in MEMORY_BOUND_CONFIG (see memory-bound.mjs); the parent talks to it over IPC.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import express from 'express';

const config = JSON.parse(process.env.MEMORY_BOUND_CONFIG ?? '{}');
// Profiling: MEMORY_BOUND_SNAPSHOT=<MiB>:<file> writes one heap snapshot when live memory passes <MiB> (with --gc-probe).
if (process.env.MEMORY_BOUND_SNAPSHOT) {
  const [mib, path] = process.env.MEMORY_BOUND_SNAPSHOT.split(':');
  config.snapshot = { bytes: Number(mib) * 1024 * 1024, path };
}
const require = createRequire(import.meta.url);
const { spool, diskEngine, s3Engine, MemoryBudget } = require(config.lib);
/** What each admitted request holds from the budget (not exported by the package entry). */
const REQUEST_SHARE = require(join(dirname(config.lib), 'multipart', 'options.js')).REQUEST_SHARE;

// ---- instrumentation ------------------------------------------------------------------------------
const budget = new MemoryBudget(config.budget);
const stats = {
  peakUsed: 0,
  admitted: 0,
  peakAdmitted: 0,
  connections: 0,
  peakConnections: 0,
  peakWaiting: 0,
  requests: 0,
  ok: 0,
  refusedAtAdmission: 0, // 503 before the body was read
  failedAfterAdmission: 0, // 503 MEMORY_BUDGET_EXCEEDED after the body started (a field or file did not fit)
  otherErrors: {},
  missingRetryAfter: 0,
};
const track = () => {
  if (budget.used > stats.peakUsed) stats.peakUsed = budget.used;
  if (budget.waiting > stats.peakWaiting) stats.peakWaiting = budget.waiting;
};
for (const name of ['tryReserve', 'release']) {
  const original = budget[name].bind(budget);
  budget[name] = (bytes) => {
    const result = original(bytes);
    track();
    return result;
  };
}
// Admitted requests = leases that hold memory: a request takes its REQUEST_SHARE first and gives everything
// back when its lease closes (when it failed, or its response ended).
const holding = new Set();
{
  const original = budget.lease.bind(budget);
  budget.lease = () => {
    const lease = original();
    const update = () => {
      if (lease.held > 0) holding.add(lease);
      else holding.delete(lease);
      stats.admitted = holding.size;
      if (stats.admitted > stats.peakAdmitted) stats.peakAdmitted = stats.admitted;
    };
    for (const name of ['tryReserve', 'release', 'close']) {
      const method = lease[name].bind(lease);
      lease[name] = (bytes) => {
        const result = method(bytes);
        update();
        return result;
      };
    }
    const reserve = lease.reserve.bind(lease);
    lease.reserve = (bytes, signal) => reserve(bytes, signal).finally(update);
    return lease;
  };
}
{
  const original = budget.reserve.bind(budget);
  budget.reserve = (bytes, signal) => {
    const granted = original(bytes, signal);
    track(); // now waiting
    return granted.then(() => void track());
  };
}

const memory = { samples: 0, atPeak: undefined, max: {} };
const sampleMemory = () => {
  const now = process.memoryUsage();
  memory.samples++;
  for (const [key, value] of Object.entries(now)) memory.max[key] = Math.max(memory.max[key] ?? 0, value);
  if (!memory.atPeak || now.rss >= memory.atPeak.rss) memory.atPeak = { ...now, used: budget.used, admitted: stats.admitted, connections: stats.connections };
};
setInterval(sampleMemory, 25).unref();

// Profiling (node --expose-gc, config.gcProbe = ms): a full GC every so often, and the most memory that was
// still live right after one — what the process really holds, against what merely waits to be collected.
const live = { probes: 0, max: {}, before: {} };
if (config.gcProbe && typeof globalThis.gc === 'function') {
  setInterval(() => {
    const before = process.memoryUsage();
    globalThis.gc();
    const after = process.memoryUsage();
    live.probes++;
    for (const key of Object.keys(after)) {
      live.max[key] = Math.max(live.max[key] ?? 0, after[key]);
      live.before[key] = Math.max(live.before[key] ?? 0, before[key]);
    }
    live.max.admitted = Math.max(live.max.admitted ?? 0, stats.admitted);
    // Live memory the budget does not explain: heap + array buffers over their idle level, less what the
    // budget counts beyond the requests' fixed shares (field values, spooled chunks, S3 parts).
    if (live.idle) {
      const counted = budget.used - stats.admitted * REQUEST_SHARE;
      const excess = after.heapUsed + after.arrayBuffers - live.idle.heapUsed - live.idle.arrayBuffers - counted;
      if (live.excess === undefined || excess > live.excess.bytes) {
        live.excess = { bytes: excess, admitted: stats.admitted, counted, heapUsed: after.heapUsed - live.idle.heapUsed, arrayBuffers: after.arrayBuffers - live.idle.arrayBuffers };
      }
    }
    // Profiling: one heap snapshot (to find what retains the memory) once live array buffers pass a mark.
    if (config.snapshot && !live.snapshot && after.arrayBuffers + after.heapUsed > config.snapshot.bytes) {
      live.snapshot = require('node:v8').writeHeapSnapshot(config.snapshot.path);
    }
  }, config.gcProbe).unref();
}

// ---- the app -------------------------------------------------------------------------------------
let engineOptions;
if (config.load === 'disk') {
  engineOptions = { rollover: diskEngine({ directory: config.dir, lifetime: 'persistent' }) };
} else if (config.load === 's3') {
  const { S3Client } = require('@aws-sdk/client-s3');
  const { endpoint, region, accessKeyId, secretAccessKey, bucket } = config.s3;
  const client = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  engineOptions = { rollover: s3Engine({ client, bucket, partSize: config.partSize, queueSize: config.queueSize, integrity: 'none' }) };
} else {
  engineOptions = {};
}
const upload = spool({
  memoryBudget: budget,
  sha256: true,
  ...engineOptions,
  ...(config.admissionTimeout !== undefined ? { admissionTimeout: config.admissionTimeout } : {}),
});

const admittedRequests = new WeakSet();
/** Marks the request admitted when the middleware starts reading its body, to tell the two kinds of 503 apart. */
function countAdmission(req, res, next) {
  stats.requests++;
  const pipe = req.pipe;
  req.pipe = function (destination, options) {
    admittedRequests.add(req);
    return pipe.call(this, destination, options);
  };
  next();
}

const app = express();
app.post('/upload', countAdmission, upload.any(), (req, res) => {
  stats.ok++;
  const files = (req.files ?? []).map((file) => ({
    size: file.size,
    sha256: file.sha256,
    storage: file.storage,
    path: file.path,
    key: file.key,
  }));
  // Fields: a digest of what the app sees (name NUL value NUL, in order), so the client can check every
  // byte without a big answer, and without this handler building big strings of its own.
  const hash = createHash('sha256');
  for (const [name, value] of Object.entries(req.body ?? {})) hash.update(name).update('\0').update(String(value)).update('\0');
  res.json({ files, fields: hash.digest('hex') });
});
app.use((err, req, res, _next) => {
  if (err?.code === 'MEMORY_BUDGET_EXCEEDED') {
    if (admittedRequests.has(req)) stats.failedAfterAdmission++;
    else stats.refusedAtAdmission++;
    if (!res.getHeader('retry-after')) stats.missingRetryAfter++;
  } else {
    const key = err?.code ?? err?.name ?? 'unknown';
    stats.otherErrors[key] = (stats.otherErrors[key] ?? 0) + 1;
  }
  res.status(err?.status ?? 500).json({ code: err?.code, message: err?.message, admitted: admittedRequests.has(req) });
});

const server = app.listen(0, '127.0.0.1', () => process.send({ type: 'listening', port: server.address().port }));
server.on('connection', (socket) => {
  stats.connections++;
  if (stats.connections > stats.peakConnections) stats.peakConnections = stats.connections;
  socket.once('close', () => stats.connections--);
});

process.on('message', (message) => {
  if (message.type === 'stats') {
    sampleMemory();
    process.send({ type: 'stats', id: message.id, stats: { ...stats, used: budget.used, waiting: budget.waiting, limit: budget.limit, share: REQUEST_SHARE, memory, live } });
  } else if (message.type === 'reset') {
    // After the warm-up: peaks start again from here.
    Object.assign(stats, { peakUsed: budget.used, peakAdmitted: stats.admitted, peakConnections: stats.connections, peakWaiting: 0 });
    Object.assign(stats, { requests: 0, ok: 0, refusedAtAdmission: 0, failedAfterAdmission: 0, otherErrors: {}, missingRetryAfter: 0 });
    Object.assign(memory, { samples: 0, atPeak: undefined, max: {} });
    Object.assign(live, { probes: 0, max: {}, before: {}, excess: undefined });
    if (typeof globalThis.gc === 'function') {
      globalThis.gc();
      live.idle = process.memoryUsage();
    }
    process.send({ type: 'reset', id: message.id });
  } else if (message.type === 'exit') {
    server.close();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
