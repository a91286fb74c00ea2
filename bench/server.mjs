// One benchmark target: a small HTTP server on 127.0.0.1, run in its own process
// (forked by bench/run.mjs) so that its CPU time and RSS can be read from procfs.
//
//   node bench/server.mjs <target> <directory>
//
// POST /upload with one multipart file in field "file" (plus text fields).
// The answer is JSON { files: [{ size, storage?, sha256?, stored? }] }.
// In verification mode (IPC { cmd: 'verify', on: true }) every target also
// reports `stored`: the sha256 of the bytes it actually kept (re-read from the
// disk file or the memory buffer; hashed while streaming for targets that
// discard). Outside verification mode no target hashes anything, except
// express-spool, which hashes by default (sha256: true) — that is part of
// what it does; `spool-nohash` shows the cost.

import http from 'node:http';
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [target, directory] = process.argv.slice(2);
if (!target || !directory) {
  process.stderr.write('usage: node bench/server.mjs <target> <directory>\n');
  process.exit(2);
}
mkdirSync(directory, { recursive: true });

let verify = false;
const MiB = 1024 * 1024;

function sha256File(path) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: MiB })
      .on('data', (c) => h.update(c))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}
const sha256Buffer = (buf) => createHash('sha256').update(buf).digest('hex');

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function fail(res, err) {
  process.stderr.write(`[${target}] ${err?.stack ?? err}\n`);
  if (!res.headersSent) sendJson(res, 500, { error: String(err?.code ?? err?.message ?? err) });
  else res.destroy();
}

// ---------------------------------------------------------------------------
// Raw node:http ceilings
// ---------------------------------------------------------------------------

/** Reads and discards the body. */
function ceiling() {
  return http.createServer((req, res) => {
    let size = 0;
    const h = verify ? createHash('sha256') : null;
    req.on('data', (c) => {
      size += c.length;
      h?.update(c);
    });
    req.on('end', () => sendJson(res, 200, { files: [{ size, stored: h?.digest('hex') }] }));
    req.on('error', (err) => fail(res, err));
  });
}

/**
 * Pipes the raw body into one file. The write stream gets the same 1 MiB highWaterMark as express-spool's
 * disk engine (a ceiling should not be handicapped by a smaller buffer than the contenders use).
 */
function ceilingDisk() {
  return http.createServer(async (req, res) => {
    const path = join(directory, randomUUID());
    try {
      const out = createWriteStream(path, { flags: 'wx', highWaterMark: MiB });
      await pipeline(req, out);
      sendJson(res, 200, { files: [{ size: out.bytesWritten, stored: verify ? await sha256File(path) : undefined }] });
    } catch (err) {
      fail(res, err);
    }
  });
}

// ---------------------------------------------------------------------------
// Express targets
// ---------------------------------------------------------------------------

function expressApp(mount) {
  const express = require('express');
  const app = express();
  mount(app);
  app.use((err, _req, res, _next) => fail(res, err));
  return http.createServer(app);
}

/** Express + @fastify/busboy (the parser express-spool wraps), file bytes counted and dropped. */
function expressBusboy() {
  const { Busboy } = require('@fastify/busboy');
  return expressApp((app) =>
    app.post('/upload', (req, res, next) => {
      let bb;
      try {
        bb = new Busboy({ headers: req.headers });
      } catch (err) {
        return next(err);
      }
      const files = [];
      let open = 1;
      const done = () => {
        if (--open === 0) sendJson(res, 200, { files });
      };
      bb.on('file', (_name, stream) => {
        const rec = { size: 0 };
        files.push(rec);
        open++;
        const h = verify ? createHash('sha256') : null;
        stream.on('data', (c) => {
          rec.size += c.length;
          h?.update(c);
        });
        stream.on('end', () => {
          if (h) rec.stored = h.digest('hex');
          done();
        });
      });
      bb.on('field', () => {});
      bb.on('error', next);
      bb.on('finish', done);
      req.pipe(bb);
    }),
  );
}

function multerTarget(kind) {
  const multer = require('multer');
  const upload =
    kind === 'memory'
      ? multer({ storage: multer.memoryStorage() })
      : multer({ storage: multer.diskStorage({ destination: directory }) });
  return expressApp((app) =>
    app.post('/upload', upload.single('file'), async (req, res, next) => {
      try {
        const f = req.file;
        const rec = { size: f.size, storage: kind };
        if (verify) rec.stored = kind === 'memory' ? sha256Buffer(f.buffer) : await sha256File(f.path);
        sendJson(res, 200, { files: [rec] });
      } catch (err) {
        next(err);
      }
    }),
  );
}

function spoolTarget(kind) {
  // The BUILT library, as an application would load it (npm run bench builds first).
  const { spool, diskEngine, memoryEngine } = require('../dist/lib/index.js');
  const disk = () => diskEngine({ directory, lifetime: 'persistent' });
  const options = {
    spool: { threshold: '1MiB', rollover: disk(), memoryBudget: '64MiB' },
    'spool-nohash': { threshold: '1MiB', rollover: disk(), memoryBudget: '64MiB', sha256: false },
    'spool-memory': { storage: memoryEngine(), memoryBudget: '2GiB' },
    'spool-disk': { storage: disk(), memoryBudget: '64MiB' },
  }[kind];
  const upload = spool(options);
  return expressApp((app) =>
    app.post('/upload', upload.single('file'), async (req, res, next) => {
      try {
        const f = req.file;
        const rec = { size: f.size, storage: f.storage, sha256: f.sha256 };
        if (verify) rec.stored = f.storage === 'memory' ? sha256Buffer(f.buffer) : await sha256File(f.path);
        sendJson(res, 200, { files: [rec] });
      } catch (err) {
        next(err);
      }
    }),
  );
}

const TARGETS = {
  ceiling,
  'ceiling-disk': ceilingDisk,
  'express-busboy': expressBusboy,
  'multer-memory': () => multerTarget('memory'),
  'multer-disk': () => multerTarget('disk'),
  spool: () => spoolTarget('spool'),
  'spool-memory': () => spoolTarget('spool-memory'),
  'spool-disk': () => spoolTarget('spool-disk'),
  'spool-nohash': () => spoolTarget('spool-nohash'),
};

const make = TARGETS[target];
if (!make) {
  process.stderr.write(`unknown target ${target}\n`);
  process.exit(2);
}
const server = make();
server.keepAliveTimeout = 60_000;
server.requestTimeout = 0;
server.headersTimeout = 60_000;

process.on('message', (m) => {
  if (m?.cmd === 'verify') {
    verify = !!m.on;
    process.send({ ack: m.id });
  } else if (m?.cmd === 'exit') {
    server.close();
    server.closeAllConnections?.();
    // process.exit() lets --cpu-prof write its profile.
    setImmediate(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => {
  process.send({ ready: true, port: server.address().port, pid: process.pid });
});
