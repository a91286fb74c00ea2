/**
 * Review 22: the request's chunk is marked "parsed only" when, at the moment the mark listener runs, the request
 * has exactly 2 'data' listeners. But an app listener that runs earlier in the same emit and removes itself
 * (`req.once('data')`, `events.once(req, 'data')`, or a sniffer that calls `req.off('data', fn)` once it has
 * seen enough) has already received — and may keep — that very chunk: the count is 2 by the time the mark
 * runs, the chunk is claimed by the disk writer and detached once written, and the app's copy goes empty.
 * (Found by that review; fixed: the mark listener is prepended, so it counts before any listener runs.)
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { diskEngine, spool, type SpoolOptions } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { BOUNDARY, randomData } from './helpers/multipart';
import { rawConnection } from './helpers/raw-http';

const KiB = 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: http.Server | undefined;
let dir: ReturnType<typeof tempDir> | undefined;
afterEach(async () => {
  if (server) await close(server);
  server = undefined;
  dir?.remove();
  dir = undefined;
});

/** Part headers in one TCP segment, the file in 16 KiB segments (each its own body chunk), then the close. */
async function upload(port: number, data: Buffer) {
  const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${BOUNDARY}--\r\n`);
  const conn = rawConnection(port);
  conn.socket.setNoDelay(true);
  await conn.write(`POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${head.length + data.length + tail.length}\r\n\r\n`);
  await sleep(30);
  await conn.write(head);
  await sleep(30);
  for (let at = 0; at < data.length; at += 16 * KiB) {
    await conn.write(data.subarray(at, at + 16 * KiB));
    await sleep(20);
  }
  await conn.write(tail);
  const status = await conn.status();
  await conn.closed;
  return status;
}

function appWith(before: express.RequestHandler, options: SpoolOptions) {
  const a = express();
  a.post('/upload', before, spool(options).single('file'), (_req, res) => res.end('ok'));
  a.use(((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code, message: err.message })) as express.ErrorRequestHandler);
  return a;
}

test('a sniffer that keeps the first chunks and then removes itself (req.off inside its listener) keeps them whole', async () => {
  dir = tempDir('rev22-sniff-');
  const kept: Buffer[] = [];
  const sniff: express.RequestHandler = (req, _res, next) => {
    let bytes = 0;
    const onData = (c: Buffer) => {
      kept.push(c);
      bytes += c.length;
      if (bytes >= 40 * KiB) req.off('data', onData); // seen enough: stop listening
    };
    req.on('data', onData);
    next();
  };
  server = await listen(appWith(sniff, { storage: diskEngine({ directory: dir.path }) }));
  const data = randomData(256 * KiB);
  expect(await upload((server.address() as AddressInfo).port, data)).toMatch(/ 200/);
  await sleep(50);
  const lengths = kept.map((c) => c.length);
  // Every chunk the sniffer kept must still hold the bytes it was given.
  expect(lengths).not.toContain(0);
});

// (held in that review) A listener added after the parser's, in fileFilter: the count is 3 when the mark runs.
test('a fileFilter that samples the next body chunk with events.once(req, "data") keeps it whole', async () => {
  dir = tempDir('rev22-once-');
  let sample: Buffer | undefined;
  let sampleSha: string | undefined;
  server = await listen(
    appWith((_req, _res, next) => next(), {
      storage: diskEngine({ directory: dir.path }),
      fileFilter: (req, _file, cb) => {
        cb(null, true);
        void once(req, 'data').then((args: unknown[]) => {
          const c = args[0] as Buffer;
          sample = c;
          sampleSha = sha(c);
        });
      },
    }),
  );
  const data = randomData(256 * KiB);
  expect(await upload((server.address() as AddressInfo).port, data)).toMatch(/ 200/);
  await sleep(50);
  expect(sample).toBeDefined();
  expect(sample!.length).toBeGreaterThan(0);
  expect(sha(sample!)).toBe(sampleSha);
});
