/**
 * `storeTimeout`: a store that goes that long in an append without reading the body or finishing it (stuck on
 * a request that never returns, or one that stopped reading) must not hold a waiting client for ever. The
 * append is ended (what the store recorded is kept), the request answered 500 STORAGE_FAILED; a store that
 * also ignores its signal keeps the upload locked until it settles (settleTimeout, as before). A store that is
 * slow but reads steadily, and time the store spends waiting for the client, never count.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { Readable } from 'node:stream';
import { resumable, resumableDiskStore, type Resumable, type ResumableOptions, type ResumableStore, type ResumableUpload } from '../lib/index';
import { eventually, tempDir } from './helpers/app';
import { createTusUpload, OCTETS, request, serveAtFiles, sha256Of, TUS, withAppend } from './helpers/resumable';

const KiB = 1024;

/** `resumable(options)` at /files of a new app; `close()` closes both. */
async function serve(options: ResumableOptions): Promise<{ url: string; middleware: Resumable; close(): Promise<void> }> {
  const middleware = resumable({ sweepInterval: 0, ...options });
  return { middleware, ...(await serveAtFiles(middleware)) };
}

async function storedSha256(store: ResumableStore, id: string): Promise<string> {
  return sha256Of(store.read((await store.get(id)) as ResumableUpload));
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const idOf = (upload: string) => upload.split('/').pop()!;

test('a store that stored the body and never settles (ignoring its signal): the waiting client gets 500 STORAGE_FAILED; the upload stays locked until the store settles, its bytes kept', async () => {
  const dir = tempDir('spool-store-timeout-');
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const store = withAppend(resumableDiskStore({ directory: dir.path }), async (append, ...args) => {
    const offset = await append(...args);
    await held; // a state commit that never returns, deaf to the signal
    return offset;
  });
  const srv = await serve({ store, storeTimeout: 300, settleTimeout: 300, lockTimeout: 500 });
  try {
    const data = randomBytes(100 * KiB);
    const upload = await createTusUpload(srv.url, 200 * KiB);
    const started = Date.now();
    const res = await request(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(res.status).toBe(500);
    expect(Date.now() - started).toBeGreaterThanOrEqual(550); // storeTimeout, then settleTimeout
    expect(Date.now() - started).toBeLessThan(5000);
    // Still the store's: no second writer beside it, its memory still counted.
    expect((await request(upload, 'HEAD', TUS)).status).toBe(423);
    expect(srv.middleware.memoryBudget.used).toBeGreaterThan(0);
    release();
    await eventually(async () => {
      const head = await request(upload, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset']]).toEqual([200, String(data.length)]);
    }, 5000);
    expect(await storedSha256(store, idOf(upload))).toBe(sha256(data));
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});

test('a store that never reads while its client waits mid-body: answered 500 STORAGE_FAILED once storeTimeout passes, nothing stored, the upload free again', async () => {
  const dir = tempDir('spool-store-timeout-');
  const store = withAppend(resumableDiskStore({ directory: dir.path }), (_append, upload, _stream, context) => {
    // Never reads; honours its signal, having stored nothing.
    return new Promise<number>((resolve) => context.signal.addEventListener('abort', () => resolve(upload.offset), { once: true }));
  });
  // idleTimeout far away: the client is not what stalls here.
  const srv = await serve({ store, storeTimeout: 300, idleTimeout: 60_000 });
  try {
    const upload = await createTusUpload(srv.url, 4096 * KiB);
    const started = Date.now();
    const status = await new Promise<number>((resolve) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4096 * KiB } });
      req.on('error', () => resolve(-1));
      req.on('response', (res) => (res.resume(), resolve(res.statusCode!)));
      req.write(randomBytes(1024 * KiB)); // a quarter of the body, then the client waits for the server
    });
    expect(status).toBe(500);
    expect(Date.now() - started).toBeLessThan(10_000);
    const head = await request(upload, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('a slow store that keeps reading is not cut off, however long the whole append takes', async () => {
  const dir = tempDir('spool-store-timeout-');
  const store = withAppend(resumableDiskStore({ directory: dir.path }), (append, upload, stream, context) => {
    // Takes each chunk 40 ms late: the append lasts several storeTimeouts, each pause well within one.
    const slow = Readable.from(
      (async function* () {
        for await (const chunk of stream) {
          await new Promise((r) => setTimeout(r, 40));
          yield chunk as Buffer;
        }
      })(),
      { objectMode: false },
    );
    return append(upload, slow, context);
  });
  const srv = await serve({ store, storeTimeout: 300 });
  try {
    const data = randomBytes(2048 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const started = Date.now();
    // Written 16 KiB at a time, so the store sees many chunks.
    const res = await new Promise<number>((resolve, reject) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': data.length } });
      req.on('error', reject);
      req.on('response', (r) => (r.resume(), resolve(r.statusCode!)));
      Readable.from((function* () { for (let o = 0; o < data.length; o += 16 * KiB) yield data.subarray(o, o + 16 * KiB); })()).pipe(req);
    });
    expect(res).toBe(204);
    expect(Date.now() - started).toBeGreaterThan(600); // longer than storeTimeout twice over
    expect(await storedSha256(store, idOf(upload))).toBe(sha256(data));
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('time the store spends waiting for a slow client does not count: a client pausing longer than storeTimeout completes', async () => {
  const dir = tempDir('spool-store-timeout-');
  const store = resumableDiskStore({ directory: dir.path });
  const srv = await serve({ store, storeTimeout: 200, idleTimeout: 5_000 });
  try {
    const data = randomBytes(256 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const res = await new Promise<number>((resolve, reject) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': data.length } });
      req.on('error', reject);
      req.on('response', (r) => (r.resume(), resolve(r.statusCode!)));
      req.write(data.subarray(0, 100 * KiB));
      setTimeout(() => req.end(data.subarray(100 * KiB)), 700); // pauses 3.5 storeTimeouts
    });
    expect(res).toBe(204);
    expect(await storedSha256(store, idOf(upload))).toBe(sha256(data));
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('storeTimeout is validated, and 0 turns it off', () => {
  const store = resumableDiskStore({ directory: tempDir('spool-store-timeout-').path });
  expect(() => resumable({ store, storeTimeout: -1 })).toThrow(/storeTimeout/);
  expect(() => resumable({ store, storeTimeout: 'soon' as unknown as number })).toThrow(/storeTimeout/);
  expect(() => resumable({ store, storeTimeout: 0, sweepInterval: 0 })).not.toThrow();
});
