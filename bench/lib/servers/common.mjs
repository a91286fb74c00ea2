// Shared by the benchmark's server targets (bench/lib/servers/*.mjs): JSON answers, the Express app
// shell, and the sha256 helpers of verification mode.

import http from 'node:http';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createRequire } from 'node:module';

export const require = createRequire(import.meta.url);
export const MiB = 1024 * 1024;

/** Verification mode (set over IPC by the client): targets then report `stored`, the sha256 of what they kept. */
export const state = { verify: false };

export function sha256Stream(stream) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    stream.on('data', (c) => h.update(c));
    stream.on('end', () => resolve(h.digest('hex')));
    stream.on('error', reject);
  });
}
export const sha256File = (path) => sha256Stream(createReadStream(path, { highWaterMark: MiB }));
export const sha256Buffer = (buf) => createHash('sha256').update(buf).digest('hex');

export function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

export function fail(res, err) {
  process.stderr.write(`server error: ${err?.stack ?? err}\n`);
  if (res.headersSent) return void res.destroy();
  sendJson(res, err?.status ?? err?.statusCode ?? 500, { error: String(err?.message ?? err), code: err?.code });
}

/** Express 5 with `mount(app)`'s routes and a JSON error handler, as an http.Server. */
export function expressApp(mount) {
  const express = require('express');
  const app = express();
  mount(app);
  app.use((err, _req, res, _next) => fail(res, err));
  return http.createServer(app);
}

/** POST /upload with `middleware`, answering `describe(req.file)` (a promise of the file's record). */
export function uploadRoute(middleware, describe) {
  return expressApp((app) =>
    app.post('/upload', middleware, async (req, res, next) => {
      try {
        if (!req.file) throw Object.assign(new Error('no file in field "file"'), { status: 400 });
        sendJson(res, 200, { files: [await describe(req.file)] });
      } catch (err) {
        next(err);
      }
    }),
  );
}
