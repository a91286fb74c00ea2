/**
 * Multipart files go to disk by reference, and the body chunks they were cut from are given back once written
 * (engines/direct-file-writer.ts, lib/core/chunk-release.ts). These tests hold body chunks the way others could
 * — an app listening to the request, a part sharing its chunk with the next part's headers, the parser's own
 * lookbehind buffer — and check that no chunk someone else holds goes empty and every stored byte is right.
 * (.ci/run runs this file on Node 20, 22 and 24.)
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { diskEngine, spool, type SpoolOptions, type UploadedFile } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody, postChunks, randomData, seededRandom, type Part } from './helpers/multipart';
import { rawConnection } from './helpers/raw-http';
import { onDataWrites } from './helpers/data-writes';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An app that records every body chunk the request receives without listening to it (as a proxy or an
 * instrumentation layer could: by wrapping `push`), and answers the sha256 of each stored file, read back
 * before temporary files go.
 */
function recordingApp(options: SpoolOptions, route: express.RequestHandler[] = []) {
  const chunks: Buffer[] = [];
  const app = express();
  app.use((req, _res, next) => {
    const push = req.push;
    req.push = function (chunk: unknown, encoding?: BufferEncoding) {
      if (Buffer.isBuffer(chunk)) chunks.push(chunk);
      return push.call(this, chunk, encoding);
    };
    next();
  });
  app.post('/upload', ...route, spool(options).any(), (req, res) => {
    const files = (req.files as UploadedFile[]).map((f) => ({ field: f.fieldname, size: f.size, sha256: sha(readFileSync(f.path!)) }));
    res.json({ files });
  });
  app.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code, message: err.message })) as express.ErrorRequestHandler);
  return { app, chunks };
}

let server: http.Server | undefined;
afterEach(async () => {
  if (server) await close(server);
  server = undefined;
});

async function post(app: express.Express, parts: Part[]) {
  server = await listen(app);
  const body = multipartBody(parts);
  const res = await postChunks(server, '/upload', cutRandomly(body, 7), {
    'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
    'content-length': body.length,
  });
  return { res, body };
}

/** `body` in pieces of 1 byte to 100 KiB, as a client's writes may come. */
function* cutRandomly(body: Buffer, seed: number): Generator<Buffer> {
  const random = seededRandom(seed);
  for (let at = 0; at < body.length; ) {
    const size = Math.min(body.length - at, 1 + Math.floor(random() * 100 * KiB));
    yield body.subarray(at, at + size);
    at += size;
  }
}

test('a large file rolled over to disk is byte-exact, and the body chunks holding only its bytes were given back', async () => {
  const data = randomData(8 * MiB);
  const { app, chunks } = recordingApp({});
  const { res } = await post(app, [{ name: 'note', value: 'hello' }, { name: 'file', filename: 'big.bin', data }]);
  expect(res.status).toBe(200);
  expect(res.json.files).toEqual([{ field: 'file', size: data.length, sha256: sha(data) }]);
  const emptied = chunks.filter((c) => c.length === 0).length;
  // Most chunks are the file's alone (the rest hold the headers, the field or the closing boundary).
  expect(emptied).toBeGreaterThan(chunks.length / 2);
});

test('a file of the spool threshold plus one byte: the chunks held in memory before the rollover are written byte-exact', async () => {
  for (const size of [MiB + 1, MiB + 64 * KiB - 1, 3 * MiB]) {
    const data = randomData(size);
    const { app } = recordingApp({});
    const { res } = await post(app, [{ name: 'file', filename: 'edge.bin', data }]);
    expect(res.json.files).toEqual([{ field: 'file', size, sha256: sha(data) }]);
    await close(server!);
    server = undefined;
  }
});

test('chunks that hold more than one part (headers, another file, a field) are never given back', async () => {
  const dir = tempDir('spool-release-mp-');
  try {
    const parts: Part[] = [];
    const files: Buffer[] = [];
    for (let i = 0; i < 12; i++) {
      const data = randomData(1 + Math.floor(Math.random() * 150 * KiB));
      files.push(data);
      parts.push({ name: `f${i}`, filename: `f${i}.bin`, data }, { name: `t${i}`, value: 'x'.repeat(i * 100) });
    }
    const { app, chunks } = recordingApp({ storage: diskEngine({ directory: dir.path, lifetime: 'temporary' }) });
    const { res } = await post(app, parts);
    expect(res.status).toBe(200);
    expect(res.json.files).toEqual(files.map((d, i) => ({ field: `f${i}`, size: d.length, sha256: sha(d) })));
    const boundary = Buffer.from(BOUNDARY);
    const withBoundary = chunks.filter((c) => c.includes(boundary));
    expect(withBoundary.length).toBeGreaterThan(0);
    // Every chunk that held a boundary (a part's edge) is as it came.
    for (const c of withBoundary) expect(c.length).toBeGreaterThan(0);
  } finally {
    dir.remove();
  }
});

test("an app listening to the request's data keeps every chunk it saw, whole and as sent", async () => {
  const data = randomData(6 * MiB);
  const kept: Buffer[] = [];
  const { app } = recordingApp({
    // Starts listening once the file has begun: chunks from then on have two readers.
    fileFilter: (req, _file, cb) => {
      req.on('data', (c: Buffer) => kept.push(c));
      cb(null, true);
    },
  });
  const { res, body } = await post(app, [{ name: 'file', filename: 'big.bin', data }]);
  expect(res.json.files).toEqual([{ field: 'file', size: data.length, sha256: sha(data) }]);
  expect(kept.length).toBeGreaterThan(10);
  const seen = Buffer.concat(kept);
  expect(seen.length).toBeGreaterThan(4 * MiB);
  expect(seen.equals(body.subarray(body.length - seen.length))).toBe(true);
});

test("boundary look-alikes across chunk edges (the parser's lookbehind) are stored byte-exact", async () => {
  // Lines that start like the boundary and stop short of it, cut at random places by the client's writes,
  // so that the parser keeps tails in its lookbehind buffer and hands them out as parts of the file.
  const random = seededRandom(42);
  const pieces: Buffer[] = [];
  for (let size = 0; size < 2 * MiB; ) {
    // (a NUL after each: random bytes could otherwise complete the boundary, 1 in 256 for the longest ones)
    const look = Buffer.from(`\r\n--${BOUNDARY.slice(0, Math.floor(random() * BOUNDARY.length))}\0`);
    const noise = randomData(Math.floor(random() * 3000));
    pieces.push(look, noise);
    size += look.length + noise.length;
  }
  const data = Buffer.concat(pieces);
  const { app, chunks } = recordingApp({});
  server = await listen(app);
  const { port } = server.address() as AddressInfo;
  for (let round = 0; round < 3; round++) {
    const body = multipartBody([{ name: 'file', filename: 'look.bin', data }]);
    const conn = rawConnection(port);
    conn.socket.setNoDelay(true);
    await conn.write(`POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\n\r\n`);
    for (let at = 0; at < body.length; ) {
      const size = Math.min(body.length - at, 1 + Math.floor(random() * 90));
      await conn.write(body.subarray(at, at + size));
      at += size;
      if (random() < 0.002) await sleep(1);
      // (larger pieces too, so that some chunks hold only file bytes)
      if (random() < 0.05) {
        const big = Math.min(body.length - at, 64 * KiB);
        await conn.write(body.subarray(at, at + big));
        at += big;
      }
    }
    const status = await conn.status();
    if (!/ 200/.test(status)) console.log(conn.response());
    expect(status).toMatch(/^HTTP\/1\.1 200/);
    await conn.closed;
    const json = JSON.parse(conn.response().split('\r\n\r\n').slice(1).join('\r\n\r\n'));
    expect(json.files).toEqual([{ field: 'file', size: data.length, sha256: sha(data) }]);
  }
  expect(chunks.some((c) => c.length === 0)).toBe(true);
});

test('with the memory budget more than half used, files are written one chunk behind another, byte-exact', async () => {
  const data = randomData(4 * MiB);
  // 256 KiB: the request's share leaves no room for the 1 MiB the writer would reserve.
  const { app } = recordingApp({ memoryBudget: '256KiB', threshold: '64KiB' });
  const sizes: number[] = [];
  onDataWrites((bytes) => void sizes.push(bytes));
  const { res } = await post(app, [{ name: 'file', filename: 'big.bin', data }]);
  jest.restoreAllMocks();
  expect(res.json.files).toEqual([{ field: 'file', size: data.length, sha256: sha(data) }]);
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
  expect(Math.max(...sizes)).toBeLessThanOrEqual(64 * KiB); // one socket read at a time
});

test('a middleware that peeked at the body (read() then unshift()) before the upload keeps its chunks whole', async () => {
  const data = randomData(4 * MiB);
  const peeked: Buffer[] = [];
  // Reads 200 KiB (the part's headers and whole chunks of the file), keeps them, and puts them back.
  const peek: express.RequestHandler = (req, _res, next) => {
    const take = () => {
      for (let chunk; (chunk = req.read() as Buffer | null) !== null; ) peeked.push(chunk);
      if (peeked.reduce((n, c) => n + c.length, 0) < 200 * KiB) return;
      req.off('readable', take);
      for (const chunk of [...peeked].reverse()) req.unshift(chunk);
      next();
    };
    req.on('readable', take);
  };
  const { app } = recordingApp({}, [peek]);
  const { res } = await post(app, [{ name: 'file', filename: 'big.bin', data }]);
  expect(res.json.files).toEqual([{ field: 'file', size: data.length, sha256: sha(data) }]);
  expect(peeked.length).toBeGreaterThan(1);
  for (const chunk of peeked) expect(chunk.length).toBeGreaterThan(0);
});
