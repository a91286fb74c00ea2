/**
 * Review 22 (held-up checks): the DirectFileWriter under hostile conditions through the middleware —
 * slow disk + client abort, failing writev, fileSize exceeded mid-file, many concurrent uploads, pipelined
 * keep-alive requests in one TCP write, chunked transfer-encoding with 1-byte writes.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { diskEngine, spool, type SpoolOptions, type UploadedFile } from '../lib/index';
import { close, eventually, fdsUnder, listen, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody, postChunks, randomData, seededRandom } from './helpers/multipart';
import { rawConnection } from './helpers/raw-http';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: http.Server | undefined;
let dir: ReturnType<typeof tempDir>;
beforeEach(() => (dir = tempDir('rev22-rob-')));
afterEach(async () => {
  jest.restoreAllMocks();
  if (server) await close(server);
  server = undefined;
  dir.remove();
});

function app(options: SpoolOptions) {
  const a = express();
  a.post('/upload', spool(options).any(), (req, res) => {
    res.json({ files: (req.files as UploadedFile[]).map((f) => ({ field: f.fieldname, size: f.size, sha256: sha(f.path ? readFileSync(f.path) : (f.buffer as Buffer)) })) });
  });
  a.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code, message: err.message })) as express.ErrorRequestHandler);
  return a;
}

function slowWritev(ms: number) {
  const real = fs.writev;
  return jest.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
    setTimeout(() => (real as (...a: unknown[]) => void)(...args), ms);
  }) as never);
}

function* cut(body: Buffer, seed: number, max: number): Generator<Buffer> {
  const random = seededRandom(seed);
  for (let at = 0; at < body.length; ) {
    const size = Math.min(body.length - at, 1 + Math.floor(random() * max));
    yield body.subarray(at, at + size);
    at += size;
  }
}

test('slow disk + client abort mid-file: no file left, no descriptor left, the app is not called', async () => {
  slowWritev(150);
  const handler = jest.fn();
  const a = express();
  a.post('/upload', spool({ storage: diskEngine({ directory: dir.path, lifetime: 'persistent' }) }).any(), handler);
  a.use(((_e, _q, r, _n) => r.status(500).end()) as express.ErrorRequestHandler);
  server = await listen(a);
  const data = randomData(4 * MiB);
  const body = multipartBody([{ name: 'f', filename: 'a', data }]);
  const conn = rawConnection((server.address() as AddressInfo).port);
  await conn.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\n\r\n`);
  await conn.write(body.subarray(0, MiB));
  await sleep(100);
  conn.socket.destroy();
  await eventually(() => {
    expect(readdirSync(dir.path)).toEqual([]);
    expect(fdsUnder(dir.path)).toBe(0);
  }, 5000);
  expect(handler).not.toHaveBeenCalled();
});

test('writev fails (EIO) mid-file: the request is answered 5xx, the file removed, the descriptor closed', async () => {
  const real = fs.writev;
  let calls = 0;
  jest.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
    if (++calls === 3) {
      const cb = args[args.length - 1] as (e: Error) => void;
      return void setImmediate(() => cb(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' })));
    }
    return (real as (...a: unknown[]) => void)(...args);
  }) as never);
  server = await listen(app({ storage: diskEngine({ directory: dir.path }) }));
  const data = randomData(3 * MiB);
  const body = multipartBody([{ name: 'f', filename: 'a', data }]);
  const res = await postChunks(server, '/upload', cut(body, 3, 64 * KiB), { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length });
  expect(res.status).toBeGreaterThanOrEqual(500);
  await eventually(() => {
    expect(readdirSync(dir.path)).toEqual([]);
    expect(fdsUnder(dir.path)).toBe(0);
  });
});

test('limits.fileSize exceeded mid-file on a slow disk: 413, nothing left', async () => {
  slowWritev(30);
  server = await listen(app({ storage: diskEngine({ directory: dir.path }), limits: { fileSize: MiB } }));
  const data = randomData(3 * MiB);
  const body = multipartBody([{ name: 'f', filename: 'a', data }]);
  const res = await postChunks(server, '/upload', cut(body, 5, 64 * KiB), { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length }).catch(() => ({ status: 413 }));
  expect(res.status).toBe(413);
  await eventually(() => {
    expect(readdirSync(dir.path)).toEqual([]);
    expect(fdsUnder(dir.path)).toBe(0);
  });
});

test('12 concurrent uploads of several files each, randomly cut, default spool and diskEngine: byte-exact', async () => {
  server = await listen(app({}));
  const s2 = await listen(app({ storage: diskEngine({ directory: dir.path, lifetime: 'temporary' }) }));
  try {
    const jobs = Array.from({ length: 12 }, async (_, i) => {
      const files = [randomData(1 + (i * 397 * KiB) % (3 * MiB)), randomData(MiB + i), randomData(70 * KiB + i)];
      const parts = files.flatMap((data, k) => [{ name: `f${k}`, filename: `x${k}`, data }, { name: `t${k}`, value: 'v'.repeat(k * 1000) }]);
      const body = multipartBody(parts);
      const target = i % 2 ? server! : s2;
      const res = await postChunks(target, '/upload', cut(body, i + 11, (i % 3 === 0 ? 1 : 100) * KiB), { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length });
      if (res.status !== 200) console.log('job', i, res.status, res.body);
      expect(res.status).toBe(200);
      expect(res.json.files).toEqual(files.map((d, k) => ({ field: `f${k}`, size: d.length, sha256: sha(d) })));
    });
    await Promise.all(jobs);
  } finally {
    await close(s2);
  }
});

test('two requests pipelined on one keep-alive connection in one TCP write: both byte-exact', async () => {
  server = await listen(app({ storage: diskEngine({ directory: dir.path, lifetime: 'temporary' }) }));
  const d1 = randomData(300 * KiB);
  const d2 = randomData(200 * KiB);
  const b1 = multipartBody([{ name: 'f', filename: 'a', data: d1 }]);
  const b2 = multipartBody([{ name: 'f', filename: 'b', data: d2 }]);
  const head = (b: Buffer, last: boolean) =>
    Buffer.from(`POST /upload HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}Content-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${b.length}\r\n\r\n`);
  const conn = rawConnection((server.address() as AddressInfo).port);
  await conn.write(Buffer.concat([head(b1, false), b1, head(b2, true), b2]));
  await conn.closed;
  const bodies = conn.response().split(/HTTP\/1\.1 /).filter(Boolean);
  expect(bodies.length).toBe(2);
  const jsons = bodies.map((r) => JSON.parse(r.split('\r\n\r\n')[1]));
  expect(jsons[0].files).toEqual([{ field: 'f', size: d1.length, sha256: sha(d1) }]);
  expect(jsons[1].files).toEqual([{ field: 'f', size: d2.length, sha256: sha(d2) }]);
});

test('chunked transfer-encoding with 1-byte and 64 KiB chunks, slow disk: byte-exact', async () => {
  slowWritev(5);
  server = await listen(app({ storage: diskEngine({ directory: dir.path, lifetime: 'temporary' }) }));
  const data = randomData(2 * MiB);
  const body = multipartBody([{ name: 'f', filename: 'a', data }]);
  const conn = rawConnection((server.address() as AddressInfo).port);
  conn.socket.setNoDelay(true);
  await conn.write(`POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\n\r\n`);
  const random = seededRandom(9);
  for (let at = 0; at < body.length; ) {
    const size = Math.min(body.length - at, random() < 0.5 ? 1 : 64 * KiB);
    await conn.write(Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), body.subarray(at, at + size), Buffer.from('\r\n')]));
    at += size;
  }
  await conn.write('0\r\n\r\n');
  expect(await conn.status()).toMatch(/ 200/);
  await conn.closed;
  const json = JSON.parse(conn.response().split('\r\n\r\n').slice(1).join('\r\n\r\n'));
  expect(json.files).toEqual([{ field: 'f', size: data.length, sha256: sha(data) }]);
}, 30000);

test('slow disk, budget with room: no writev larger than 448 KiB + one 64 KiB chunk (the writer stays bounded)', async () => {
  const real = fs.writev;
  let max = 0;
  jest.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
    max = Math.max(max, (args[1] as Buffer[]).reduce((t, b) => t + b.length, 0));
    setTimeout(() => (real as (...a: unknown[]) => void)(...args), 40);
  }) as never);
  server = await listen(app({ storage: diskEngine({ directory: dir.path, lifetime: 'temporary' }) }));
  const data = randomData(8 * MiB);
  const body = multipartBody([{ name: 'f', filename: 'a', data }]);
  const res = await postChunks(server, '/upload', cut(body, 1, 256 * KiB), { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length });
  expect(res.json.files).toEqual([{ field: 'f', size: data.length, sha256: sha(data) }]);
  expect(max).toBeLessThanOrEqual(448 * KiB + 64 * KiB);
}, 30000);
