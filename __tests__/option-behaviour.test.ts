import { REQUEST_SHARE } from '../lib/multipart/options';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import request from 'supertest';
import { diskEngine, memoryEngine, MemoryBudget, spool } from '../lib';
import { echoApp, eventually, tempDir } from './helpers/app';
import { BOUNDARY, randomData } from './helpers/multipart';

// What the README promises about individual options, each checked by behaviour.
const dir = tempDir();
afterAll(() => dir.remove());

const withPath = (preservePath: boolean) =>
  request(echoApp(spool({ storage: memoryEngine(), preservePath }).any()))
    .post('/upload')
    .set('content-type', `multipart/form-data; boundary=${BOUNDARY}`)
    .send(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="photos/2026/cat.png"\r\n\r\nx\r\n--${BOUNDARY}--\r\n`));

test('preservePath keeps the directory part of originalname; off by default', async () => {
  expect((await withPath(false)).body.files[0].originalname).toBe('cat.png');
  expect((await withPath(true)).body.files[0].originalname).toBe('photos/2026/cat.png');
});

test('sha256: false stores the file without a digest', async () => {
  const res = await request(echoApp(spool({ storage: memoryEngine(), sha256: false }).any())).post('/upload').attach('f', randomData(3 * 1024 * 1024), 'x').expect(200);
  expect(res.body.files[0].size).toBe(3 * 1024 * 1024);
  expect(res.body.files[0]).not.toHaveProperty('sha256');
});

test('one MemoryBudget shared by two spool() instances counts both; each request gives its share back', async () => {
  const budget = new MemoryBudget('10MiB');
  const a = spool({ storage: memoryEngine(), memoryBudget: budget });
  const b = spool({ storage: memoryEngine(), memoryBudget: budget });
  let seen = 0;
  const hold = (upload: typeof a) =>
    echoApp(upload.any(), async (_req, _res, next) => {
      await new Promise((r) => setTimeout(r, 100)); // both requests hold their files at once
      seen = Math.max(seen, budget.used);
      next();
    });
  await Promise.all([
    request(hold(a)).post('/upload').attach('f', randomData(300_000), 'a').expect(200),
    request(hold(b)).post('/upload').attach('f', randomData(300_000), 'b').expect(200),
  ]);
  expect(seen).toBe(600_000 + 2 * REQUEST_SHARE); // the files, and each admitted request's fixed share
  await eventually(() => expect(budget.used).toBe(0));
});

test('diskEngine filename(): the app names files; a name with a path in it is refused, nothing written', async () => {
  const named = spool({ threshold: 0, rollover: diskEngine({ directory: dir.path, filename: (f) => `upload-${f.fieldname}.bin` }) });
  const ok = await request(echoApp(named.any())).post('/upload').attach('doc', randomData(100), 'x').expect(200);
  expect(ok.body.files[0].filename).toBe('upload-doc.bin');
  expect(readdirSync(dir.path)).toEqual(['upload-doc.bin']);

  const unsafe = spool({ threshold: 0, rollover: diskEngine({ directory: dir.path, filename: (f) => `../${f.originalname}` }) });
  const res = await request(echoApp(unsafe.any())).post('/upload').attach('doc', randomData(100), 'evil');
  expect(res.status).toBe(500);
  expect(res.body.error.code).toBe('STORAGE_FAILED');
  expect(res.body.error.message).toMatch(/plain file name/);
  expect(readdirSync(dir.path)).toEqual(['upload-doc.bin']);
});

test('a fileFilter that throws a non-Error fails with FILE_REJECTED', async () => {
  const upload = spool({
    storage: memoryEngine(),
    fileFilter: () => {
      throw 'no executables'; // eslint-disable-line no-throw-literal
    },
  });
  const res = await request(echoApp(upload.any())).post('/upload').attach('f', randomData(10), 'a.exe');
  expect(res.status).toBe(400);
  expect(res.body.error).toMatchObject({ code: 'FILE_REJECTED', message: 'no executables' });
});

describe('a fileFilter declaring no parameters (a wrapper) answers with a returned boolean, or else through cb', () => {
  /** A callback API whose return value has nothing to do with the verdict: it answers through cb 30 ms later. */
  const legacyCheck = (returns: unknown, verdict: boolean) => (_file: unknown, cb: (err: null, ok: boolean) => void) => {
    setTimeout(() => cb(null, verdict), 30);
    return returns;
  };
  test.each([
    ['returns true (an unrelated return value), cb says no later → yes: stored', true, false, true],
    ['returns false, cb says yes later → no: skipped', false, true, false],
    ['returns nothing, cb says yes later → waits for cb: stored', undefined, true, true],
    ['returns nothing, cb says no later → waits for cb: skipped', undefined, false, false],
  ])('%s', async (_label, returns, verdict, stored) => {
    const check = legacyCheck(returns, verdict);
    const wrapper = ((...args: unknown[]) => check(args[1], args[2] as never)) as never;
    expect((wrapper as (...a: unknown[]) => unknown).length).toBe(0);
    const upload = spool({ storage: memoryEngine(), sha256: true, requestTimeout: 5000, fileFilter: wrapper });
    const data = randomData(5000);
    const started = Date.now();
    const res = await request(echoApp(upload.any())).post('/upload').attach('f', data, 'a.bin').field('after', '1');
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(2000); // answered by the filter, not ended by requestTimeout
    expect(res.body.body).toEqual({ after: '1' });
    expect(res.body.files.map((f: any) => [f.originalname, f.size, f.sha256])).toEqual(stored ? [['a.bin', 5000, createHash('sha256').update(data).digest('hex')]] : []);
  });
});

test('file.remove() is idempotent and file.stream() reads what was stored', async () => {
  const data = randomData(2 * 1024 * 1024);
  let second: unknown = 'unset';
  const upload = spool({ threshold: 0, rollover: diskEngine({ directory: dir.path }) });
  const app = echoApp(upload.single('f'), async (req: any, _res, next) => {
    const chunks: Buffer[] = [];
    for await (const c of req.file.stream()) chunks.push(c);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    await req.file.remove();
    second = await req.file.remove();
    next();
  });
  const res = await request(app).post('/upload').attach('f', data, 'x').expect(200);
  expect(second).toBeUndefined();
  expect(readdirSync(dir.path)).not.toContain(res.body.file.filename);
});

test('memory files: file.buffer is read-only whatever the size, and file.remove() empties it at once', async () => {
  const upload = spool({ storage: memoryEngine() });
  const seen: Array<{ before: string; assign: string; afterCall: number; json: number }> = [];
  const app = echoApp(upload.any(), async (req: any, _res, next) => {
    for (const file of req.files) {
      const before = createHash('sha256').update(file.buffer).digest('hex');
      const json = JSON.parse(JSON.stringify(file)).buffer.data.length;
      let assign = 'ok';
      try {
        file.buffer = Buffer.from('x'); // strict mode (a module): a getter-only property throws
      } catch (err) {
        assign = (err as Error).name;
      }
      const removal = file.remove();
      seen.push({ before, assign, afterCall: file.buffer.length, json });
      await removal;
    }
    next();
  });
  const small = randomData(1000);
  const large = randomData(600 * 1024); // past the size joined at once: the chunks are joined on first read
  await request(app).post('/upload').attach('a', small, 'a').attach('b', large, 'b').expect(200);
  expect(seen).toEqual([
    { before: createHash('sha256').update(small).digest('hex'), assign: 'TypeError', afterCall: 0, json: small.length },
    { before: createHash('sha256').update(large).digest('hex'), assign: 'TypeError', afterCall: 0, json: large.length },
  ]);
});

test('custom engine details: keys named like UploadedFile members or __proto__ cannot break the file, a synchronous remove() works', async () => {
  let removed = 0;
  const engine = {
    name: 'custom',
    async store(stream: NodeJS.ReadableStream) {
      for await (const _ of stream) void _;
      return {
        storage: 'custom',
        details: JSON.parse('{"isTemporary":"no","__proto__":{"polluted":true},"id":"x1"}'),
        temporary: true,
        stream: () => { throw new Error('unused'); },
        remove: () => void removed++, // not a promise: plain JavaScript engines do this
      };
    },
  };
  const upload = spool({ storage: engine as any });
  let shape: unknown;
  const app = echoApp(upload.single('f'), async (req: any, _res, next) => {
    const file = req.file;
    shape = { remove: typeof file.remove, temporary: file.isTemporary, id: file.id, polluted: file.polluted };
    await file.remove();
    await file.remove();
    next();
  });
  await request(app).post('/upload').attach('f', randomData(10), 'a').expect(200);
  expect(shape).toEqual({ remove: 'function', temporary: true, id: 'x1', polluted: undefined });
  expect(removed).toBe(1);
});

test('an engine context lets go of the request once store() has settled; the digest stays readable', async () => {
  let kept: any;
  const during: unknown[] = [];
  const engine = {
    name: 'capture',
    async store(stream: NodeJS.ReadableStream, _file: unknown, context: any) {
      for await (const _ of stream) void _;
      during.push(typeof context.request.headers, await context.sha256());
      kept = context;
      return { storage: 'capture', details: {}, stream: () => { throw new Error('unused'); }, remove: async () => undefined };
    },
  };
  const data = randomData(5000);
  const app = echoApp(spool({ storage: engine as any, sha256: true }).single('f'));
  await request(app).post('/upload').attach('f', data, 'a').expect(200);
  const digest = createHash('sha256').update(data).digest('hex');
  expect(during).toEqual(['object', digest]);
  // Released: a context V8 placed in old space must not keep the request (and its parser) alive.
  expect(kept.request).toBeUndefined();
  expect(await kept.sha256()).toBe(digest);
  const { sha256 } = kept; // callable detached
  expect(await sha256()).toBe(digest);
  expect(kept.signal).toBeInstanceOf(AbortSignal);
});
