import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const multer = require('multer');
import request from 'supertest';
import express from 'express';
import { diskEngine, fromMulterStorage, memoryEngine, MemoryBudget, spool, type StorageEngine, type StoredFile } from '../lib';
import { REQUEST_SHARE } from '../lib/multipart/options';
import { close, echoApp, eventually, jsonErrors, listen, tempDir } from './helpers/app';
import { BOUNDARY, postMultipart, randomData, sha256 } from './helpers/multipart';

// "Every promise settles": whatever an engine, a filter or a client does, each request gets an answer,
// and nothing stays stored or reserved.
const KiB = 1024;
const MiB = 1024 * KiB;

const dir = tempDir();
afterAll(() => dir.remove());

/** The README's example engine: reads its stream to the end, knows nothing about signals. */
function countingEngine(seen: { stored: number; removed: number }): StorageEngine {
  return {
    name: 'count',
    async store(stream: Readable): Promise<StoredFile> {
      let bytes = 0;
      for await (const chunk of stream) bytes += (chunk as Buffer).length;
      seen.stored++;
      return {
        storage: 'count',
        details: { bytes },
        stream: () => {
          throw new Error('dropped');
        },
        remove: async () => {
          seen.removed++;
        },
      };
    },
  };
}

async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('an engine that ignores the abort signal still ends with the request', () => {
  test('a limit hit mid-file: 413 at once, the engine stream errors, nothing kept', async () => {
    const seen = { stored: 0, removed: 0 };
    const upload = spool({ storage: countingEngine(seen), limits: { fileSize: 100 * KiB } });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await within(5000, postMultipart(server, '/upload', [{ name: 'f', filename: 'a', data: randomData(2 * MiB) }]));
      expect(res.status).toBe(413);
      expect(res.json.error.code).toBe('LIMIT_FILE_SIZE');
      expect(seen.stored).toBe(0); // its stream errored: it never claimed to have stored the cut file
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
    }
  });

  test('a later file rejected while the first is still being read slowly: 400, first file removed', async () => {
    const seen = { stored: 0, removed: 0 };
    const slow: StorageEngine = {
      name: 'slow',
      async store(stream, file, context) {
        const out = await countingEngine(seen).store(
          stream.map(async (chunk: Buffer) => {
            await new Promise((r) => setTimeout(r, 20));
            return chunk;
          }, { concurrency: 1 }),
          file,
          context,
        );
        return out;
      },
    };
    const upload = spool({ storage: slow });
    const server = await listen(echoApp(upload.single('a')));
    try {
      const res = await within(8000, postMultipart(server, '/upload', [
        { name: 'a', filename: 'a', data: randomData(300 * KiB) },
        { name: 'b', filename: 'b', data: randomData(10) },
      ]));
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('LIMIT_UNEXPECTED_FILE');
      expect(seen.removed).toBe(seen.stored); // whatever it managed to store was removed
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
    }
  });

  test('multer memoryStorage as rollover, fileSize just past the threshold, a 2 MiB file: 413, not a hang', async () => {
    const upload = spool({
      threshold: '64KiB',
      rollover: fromMulterStorage(multer.memoryStorage()),
      limits: { fileSize: 64 * KiB + 1 },
    });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await within(5000, postMultipart(server, '/upload', [{ name: 'f', filename: 'a', data: randomData(2 * MiB) }]));
      expect(res.status).toBe(413);
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
    }
  });

  test('an engine that never settles at all: the request answers after settleTimeout; a file it reports later is removed', async () => {
    let report: ((file: StoredFile) => void) | undefined;
    let removed = 0;
    const stuck: StorageEngine = {
      name: 'stuck',
      store: () => new Promise((resolve) => (report = resolve)), // never reads, never listens
    };
    const upload = spool({ storage: stuck, limits: { fields: 1 }, settleTimeout: 300, idleTimeout: 0 });
    const server = await listen(echoApp(upload.any()));
    try {
      const started = Date.now();
      const res = await within(5000, postMultipart(server, '/upload', [
        { name: 'f', filename: 'a', data: randomData(10) },
        { name: 'x', value: '1' },
        { name: 'y', value: '2' }, // the second field breaks limits.fields
      ]));
      expect(res.status).toBe(413);
      expect(res.json.error.code).toBe('LIMIT_FIELD_COUNT');
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      report!({ storage: 'stuck', details: {}, stream: () => { throw new Error('no'); }, remove: async () => void removed++ });
      await eventually(() => expect(removed).toBe(1));
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
    }
  });
});

describe('fileFilter', () => {
  test('an async filter that resolves nothing accepts the file (the natural `if (bad) throw`)', async () => {
    const upload = spool({
      storage: memoryEngine(),
      fileFilter: async (_req, file) => {
        if (file.originalname.endsWith('.exe')) throw new Error('no executables');
      },
    });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await within(3000, postMultipart(server, '/upload', [{ name: 'f', filename: 'ok.txt', data: Buffer.from('hello') }]));
      expect(res.status).toBe(200);
      expect(res.json.files).toHaveLength(1);
      expect(res.json.files[0].bufferLength).toBe(5);
      const bad = await within(3000, postMultipart(server, '/upload', [{ name: 'f', filename: 'x.exe', data: Buffer.from('MZ') }]));
      expect(bad.status).toBe(500);
      expect(bad.json.error.message).toBe('no executables');
    } finally {
      await close(server);
    }
  });

  test('a callback filter that never calls back is ended by requestTimeout (408), nothing stored', async () => {
    const seen = { stored: 0, removed: 0 };
    const upload = spool({ storage: countingEngine(seen), fileFilter: (_req, _file, _cb) => undefined, requestTimeout: 400 });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await within(5000, postMultipart(server, '/upload', [{ name: 'f', filename: 'a', data: randomData(1000) }]));
      expect(res.status).toBe(408);
      expect(res.json.error.code).toBe('REQUEST_TIMEOUT');
      expect(seen.stored).toBe(0);
    } finally {
      await close(server);
    }
  });
});

describe('clients that trickle', () => {
  test('one byte at a time, steadily: idleTimeout never fires, requestTimeout ends it (408), nothing left on disk', async () => {
    // A byte every 150 ms with idleTimeout 1.5 s: the request lasts two idle periods and more, so only
    // the bytes keep the idle clock from firing; requestTimeout (4 s) is what ends it. drainTimeout is short
    // so the answer follows the timeout closely (the client is still sending when it fires).
    const files = tempDir();
    const upload = spool({ threshold: 0, rollover: diskEngine({ directory: files.path }), idleTimeout: 1500, requestTimeout: 4000, drainTimeout: 100 });
    const server = await listen(echoApp(upload.any()));
    const { port } = server.address() as AddressInfo;
    let sent = 0;
    try {
      const started = Date.now();
      const answer = await within(12_000, new Promise<{ status: number; body: string; ms: number }>((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1', port, path: '/upload', method: 'POST',
          headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': 100_000 },
        }, (res) => {
          const ms = Date.now() - started;
          clearInterval(drip);
          let body = '';
          res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body, ms }));
        });
        req.on('error', reject);
        const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n`);
        req.write(head);
        const drip = setInterval(() => {
          sent++;
          req.write('x');
        }, 150);
      }));
      expect(answer.status).toBe(408);
      const error = JSON.parse(answer.body).error;
      expect(error.code).toBe('REQUEST_TIMEOUT');
      expect(error.message).toBe('Request took longer than requestTimeout'); // not the idle clock's 'Request body stalled'
      // Answered after ≈ requestTimeout (+ a watchdog tick and the 100 ms drain), not after ≈ idleTimeout.
      expect(answer.ms).toBeGreaterThanOrEqual(3950);
      expect(sent).toBeGreaterThanOrEqual(20); // it was trickling the whole time
      await eventually(() => expect(files.files()).toEqual([]));
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
      files.remove();
    }
  });
});

describe('admission and fields against the memory budget', () => {
  test('a request the budget cannot admit waits admissionTimeout, then 503 with Retry-After; its body is never read', async () => {
    const budget = new MemoryBudget(REQUEST_SHARE + 1000); // room for one request's share only
    const upload = spool({ storage: memoryEngine(), memoryBudget: budget, admissionTimeout: 200 });
    let release: (() => void) | undefined;
    const held = new Promise<void>((r) => (release = r));
    const app = express();
    app.post('/hold', upload.any(), async (_req, res) => {
      await held;
      res.json({ ok: true });
    });
    app.post('/upload', upload.any(), (_req, res) => res.json({ ok: true }));
    app.use(jsonErrors);
    const server = await listen(app);
    try {
      const first = request(server).post('/hold').field('a', '1').then((r) => r);
      await eventually(() => expect(budget.used).toBeGreaterThanOrEqual(REQUEST_SHARE));
      const refused = await within(3000, request(server).post('/upload').field('b', '2').then((r) => r));
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe('MEMORY_BUDGET_EXCEEDED');
      expect(refused.headers['retry-after']).toBe('5');
      release!();
      expect((await first).status).toBe(200);
      // Once memory is back, the same request is admitted.
      expect((await request(server).post('/upload').field('b', '2')).status).toBe(200);
      await eventually(() => expect(budget.used).toBe(0));
    } finally {
      await close(server);
    }
  });

  test('text field values count: 60 × 20 KiB fields with a 1 MiB budget → 503 with Retry-After: 5, budget back to 0', async () => {
    const upload = spool({ storage: memoryEngine(), memoryBudget: '1MiB' });
    const server = await listen(echoApp(upload.none()));
    try {
      const fields = Array.from({ length: 60 }, (_, i) => ({ name: `f${i}`, value: 'v'.repeat(20 * KiB) }));
      const res = await within(5000, postMultipart(server, '/upload', fields));
      expect(res.status).toBe(503);
      expect(res.json.error.code).toBe('MEMORY_BUDGET_EXCEEDED');
      expect(res.headers['retry-after']).toBe('5');
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
      // Within the budget the same fields are fine.
      const ok = await postMultipart(server, '/upload', fields.slice(0, 20));
      expect(ok.status).toBe(200);
      expect(Object.keys(ok.json.body)).toHaveLength(20);
    } finally {
      await close(server);
    }
  });
});

describe('like multer, for apps that migrate', () => {
  test('a failed request still has the fields parsed so far on req.body', async () => {
    const upload = spool({ storage: memoryEngine() });
    const app = express();
    app.post('/upload', upload.none(), (_req, res) => res.json({ ok: true }));
    app.use(((err, req, res, _next) => res.status(err.status).json({ code: err.code, body: req.body })) as express.ErrorRequestHandler);
    const server = await listen(app);
    try {
      const res = await postMultipart(server, '/upload', [
        { name: 'title', value: 'hello' },
        { name: 'f', filename: 'a', data: Buffer.from('x') },
      ]);
      expect(res.status).toBe(400);
      expect(res.json).toEqual({ code: 'LIMIT_UNEXPECTED_FILE', body: { title: 'hello' } });
    } finally {
      await close(server);
    }
  });

  test('a second upload middleware on the same request fails with ALREADY_PARSED instead of silently skipping its rules', async () => {
    const upload = spool({ storage: memoryEngine() });
    const app = express();
    app.use(upload.any());
    app.post('/upload', upload.single('avatar'), (_req, res) => res.json({ ok: true }));
    app.use(jsonErrors);
    const res = await request(app).post('/upload').attach('avatar', Buffer.from('x'), 'a.png');
    expect(res.status).toBe(500);
    expect(res.body.error.code).toBe('ALREADY_PARSED');
  });

  test.each([
    ['persistent (a directory given): it stays, the app\'s as after any error past the upload', 'persistent', 1],
    ['temporary (the default rollover): removed when the response ends', 'temporary', 0],
  ] as const)('ALREADY_PARSED leaves the first middleware\'s file %s', async (_label, lifetime, left) => {
    const dir = tempDir('spool-already-parsed-');
    try {
      const upload = spool({ threshold: 0, rollover: diskEngine({ directory: dir.path, lifetime }) });
      const app = express();
      app.use(upload.any());
      app.post('/upload', upload.single('avatar'), (_req, res) => res.json({ ok: true }));
      app.use(jsonErrors);
      const data = randomData(5000);
      const res = await request(app).post('/upload').attach('avatar', data, 'a.png');
      expect([res.status, res.body.error.code]).toEqual([500, 'ALREADY_PARSED']);
      await eventually(() => expect(dir.files()).toHaveLength(left));
      if (left) expect(sha256(readFileSync(join(dir.path, dir.files()[0])))).toBe(sha256(data));
    } finally {
      dir.remove();
    }
  });
});
