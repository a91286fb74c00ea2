import type { Server } from 'node:http';
import request from 'supertest';
import express, { type RequestHandler } from 'express';
import { S3Client } from '@aws-sdk/client-s3';
import { diskEngine, MemoryBudget, memoryEngine, s3Engine, spool } from '../lib';
import { REQUEST_SHARE } from '../lib/multipart/options';
import { close, echoApp, eventually, jsonErrors, listen, tempDir } from './helpers/app';
import { patternSha256, postMultipart, randomData, sha256 } from './helpers/multipart';

const dir = tempDir();
afterAll(() => dir.remove());

test('four 20 MiB uploads in parallel all succeed, intact, and overlap in time', async () => {
  const upload = spool({ rollover: diskEngine({ directory: dir.path }), sha256: true });
  const spans: { start: number; end: number }[] = [];
  const app = echoApp(
    (req: any, _res, next) => {
      req.startedAt = performance.now();
      next();
    },
    upload.single('file'),
    (req: any, _res, next) => {
      spans.push({ start: req.startedAt, end: performance.now() });
      next();
    },
  );
  const server: Server = await listen(app);
  try {
    const sources = [1, 2, 3, 4].map((seed) => ({ size: 20 * 1024 * 1024, seed }));
    const results = await Promise.all(
      sources.map((data, i) => postMultipart(server, '/upload', [{ name: 'file', filename: `p${i}.bin`, data }])),
    );
    results.forEach((res, i) => {
      expect(res.status).toBe(200);
      expect(res.json.file.size).toBe(sources[i].size);
      expect(res.json.file.sha256).toBe(patternSha256(sources[i]));
      expect(res.json.file.storage).toBe('disk');
    });
    // Truly parallel: every upload had started before the first one finished.
    const lastStart = Math.max(...spans.map((s) => s.start));
    const firstEnd = Math.min(...spans.map((s) => s.end));
    expect(lastStart).toBeLessThan(firstEnd);
  } finally {
    await close(server);
  }
});

describe('memory budget', () => {
  test('concurrent uploads that together exceed it roll over early and all succeed', async () => {
    const upload = spool({ threshold: '512KiB', memoryBudget: '2MiB', rollover: diskEngine({ directory: dir.path }), sha256: true });
    let peak = 0;
    const app = echoApp(upload.any(), async (_req, _res, next) => {
      peak = Math.max(peak, upload.memoryBudget.used);
      await new Promise((r) => setTimeout(r, 150)); // hold memory while the others arrive
      next();
    });
    const data = Array.from({ length: 8 }, () => randomData(400 * 1024));
    const responses = await Promise.all(data.map((d, i) => request(app).post('/upload').attach('f', d, `${i}`)));
    const files = responses.map((r) => {
      expect(r.status).toBe(200);
      return r.body.files[0];
    });
    expect(files.map((f) => f.sha256)).toEqual(data.map(sha256));
    const storages = files.map((f) => f.storage);
    expect(storages).toContain('memory');
    expect(storages).toContain('disk');
    expect(peak).toBeLessThanOrEqual(2 * 1024 * 1024);
    await eventually(() => expect(upload.memoryBudget.used).toBe(0));
  });

  test('the plain memory engine answers 503 MEMORY_BUDGET_EXCEEDED (with Retry-After: 5) instead of growing', async () => {
    const upload = spool({ storage: memoryEngine(), memoryBudget: '300KiB' }); // the request's 192 KiB share + less than the file
    const res = await request(echoApp(upload.any())).post('/upload').attach('f', randomData(200 * 1024), 'big');
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe('MEMORY_BUDGET_EXCEEDED');
    expect(res.headers['retry-after']).toBe('5');
    expect(upload.memoryBudget.used).toBe(0);
  });

  test('a budget of exactly one S3 part: the part can never fit beside the request\'s share, so that upload is refused at once (503) and a small upload beside it is served', async () => {
    const budget = new MemoryBudget('8MiB');
    // Never reached: the part's reservation comes before any S3 request.
    const client = new S3Client({ endpoint: 'http://127.0.0.1:9', region: 'us-east-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' }, forcePathStyle: true });
    const upload = spool({ memoryBudget: budget, threshold: '64KiB', rollover: s3Engine({ client, bucket: 'b' }), requestTimeout: 5000, admissionTimeout: 1000 });
    const server = await listen(echoApp(upload.any()));
    try {
      const started = Date.now();
      const big = postMultipart(server, '/upload', [{ name: 'f', filename: 'big', data: randomData(1024 * 1024) }]).then((r) => ({ r, ms: Date.now() - started }));
      await new Promise((r) => setTimeout(r, 200));
      const small = await postMultipart(server, '/upload', [{ name: 'f', filename: 'small', data: randomData(10) }]);
      const { r, ms } = await big;
      expect([r.status, r.json.error.code]).toEqual([503, 'MEMORY_BUDGET_EXCEEDED']);
      expect(ms).toBeLessThan(1000); // not at requestTimeout
      expect(small.status).toBe(200);
      await eventually(() => expect(budget.used).toBe(0));
    } finally {
      await close(server);
      client.destroy();
    }
  });

  test('a shared MemoryBudget instance counts two spool() instances at once and is released after each request', async () => {
    const budget = new MemoryBudget('10MiB');
    const first = spool({ storage: memoryEngine(), memoryBudget: budget });
    const second = spool({ storage: memoryEngine(), memoryBudget: budget });
    expect(first.memoryBudget).toBe(budget);
    expect(second.memoryBudget).toBe(budget);

    // Each route holds its request (and so its memory) until both have arrived.
    let arrived = 0;
    let bothArrived!: () => void;
    const overlap = new Promise<void>((resolve) => (bothArrived = resolve));
    const usedWhileBothHeld: number[] = [];
    const hold: RequestHandler = async (_req, _res, next) => {
      if (++arrived === 2) bothArrived();
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the two requests never overlapped')), 5000)));
      try {
        await Promise.race([overlap, gaveUp]);
        usedWhileBothHeld.push(budget.used);
        next();
      } catch (err) {
        next(err);
      } finally {
        clearTimeout(timer);
      }
    };
    const app = express();
    app.post('/first', first.single('f'), hold, (req, res) => res.json({ size: req.file?.size, sha256: sha256(req.file!.buffer!) }));
    app.post('/second', second.single('f'), hold, (req, res) => res.json({ size: req.file?.size, sha256: sha256(req.file!.buffer!) }));
    app.use(jsonErrors);
    const server = await listen(app);
    try {
      const data = [randomData(300_000), randomData(200_000)];
      const [a, b] = await Promise.all([
        postMultipart(server, '/first', [{ name: 'f', filename: 'a', data: data[0] }]),
        postMultipart(server, '/second', [{ name: 'f', filename: 'b', data: data[1] }]),
      ]);
      expect([a.status, b.status]).toEqual([200, 200]);
      expect([a.json.sha256, b.json.sha256]).toEqual(data.map(sha256));
      // Both requests' bytes (each one's admission share plus its file, kept in memory) on the one budget.
      const both = 2 * REQUEST_SHARE + data[0].length + data[1].length;
      expect(usedWhileBothHeld).toEqual([both, both]);
      await eventually(() => expect(budget.used).toBe(0));
      expect(budget.waiting).toBe(0);
    } finally {
      await close(server);
    }
  });
});
