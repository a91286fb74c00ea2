/**
 * Review of 02dd3af (storeTimeout). A store that buffers bytes in memory reserves them on `context.memory`
 * (the store contract, lib/resumable/upload-store.ts: "stores that buffer bytes in memory reserve them
 * here"), waiting first come first served while the budget is full — exactly what `s3ResumableStore` does
 * (engines/resumable-s3-append.ts, `allocate()`: `await memory.reserve(want, signal)` before a part buffer
 * is filled). The README (S3 store, *Memory*) says "an append waits (first come, first served) while the
 * budget is full, so a budget of `partSize + 64 KiB × concurrent requests` already lets every upload
 * progress".
 *
 * That wait is neither the store being stuck nor the store having stopped reading: it is the store queued
 * behind other uploads' clients. storeTimeout counts it as the store's turn (the tap was made / a chunk
 * handed, and no `_read()` since), so with the README's recommended budget an upload queued behind a slow
 * but steady client is answered 500 STORAGE_FAILED — storage blamed for memory contention, and a client that
 * retries joins the back of the queue again.
 *
 * The store below is the real disk store with the S3 store's memory step in front of it (reserve the part
 * buffer with the append's signal, release it when the part is stored); real sockets, real disk.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { resumable, resumableDiskStore, type Resumable, type ResumableOptions, type ResumableStore, type ResumableUpload } from '../lib/index';
import { tempDir } from './helpers/app';
import { createTusUpload, OCTETS, request, serveAtFiles, sha256Of, TUS, withAppend } from './helpers/resumable';

const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The disk store behind the S3 store's memory step: a part buffer reserved (waiting) before the body is read. */
function partBufferedStore(directory: string, partSize: number): ResumableStore {
  return withAppend(resumableDiskStore({ directory }), async (append, upload, stream, context) => {
    const want = Math.min(partSize, (upload.length ?? Infinity) - upload.offset);
    try {
      await context.memory.reserve(want, context.signal);
    } catch {
      // As allocate(): the request ended while waiting, nothing appended.
      stream.destroy();
      return upload.offset;
    }
    try {
      return await append(upload, stream, context);
    } finally {
      context.memory.release(want);
    }
  });
}

async function serve(options: ResumableOptions): Promise<{ url: string; middleware: Resumable; close(): Promise<void> }> {
  const middleware = resumable({ sweepInterval: 0, ...options });
  return { middleware, ...(await serveAtFiles(middleware)) };
}

/** A PATCH of `data` from offset 0, `piece` bytes every `pace` ms (a slow but steady client). */
function slowPatch(url: string, data: Buffer, piece: number, pace: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': data.length } });
    req.on('error', reject);
    req.on('response', (r) => (r.resume(), resolve(r.statusCode!)));
    void (async () => {
      for (let o = 0; o < data.length; o += piece) {
        const last = o + piece >= data.length;
        if (last) req.end(data.subarray(o));
        else req.write(data.subarray(o, o + piece));
        if (!last) await wait(pace);
      }
    })();
  });
}

test('an append queued for memory inside the store (as s3ResumableStore waits for a part buffer), behind a slow but steady client, is not answered 500 STORAGE_FAILED by storeTimeout', async () => {
  const dir = tempDir('spool-review23-');
  const PART = 384 * KiB;
  // The README's S3 recommendation: partSize plus 64 KiB per concurrent request (two here).
  const srv = await serve({ store: partBufferedStore(dir.path, 512 * KiB), memoryBudget: 512 * KiB + 2 * 64 * KiB, storeTimeout: 400, idleTimeout: 10_000 });
  try {
    const first = randomBytes(PART);
    const second = randomBytes(PART);
    const a = await createTusUpload(srv.url, first.length);
    const b = await createTusUpload(srv.url, second.length);
    // A: 16 KiB every 60 ms, ~1.4 s in all; never idle, its store always reading.
    const slow = slowPatch(a, first, 16 * KiB, 60);
    await wait(150); // A holds its part buffer
    const started = Date.now();
    let tookB = 0;
    const fast = request(b, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, second).then((r) => ((tookB = Date.now() - started), r));
    const [statusA, resB] = await Promise.all([slow, fast]);
    expect(statusA).toBe(204);
    // B waited for A's part buffer: the budget was full, not the store stuck. Served once A finished
    // (or refused as a memory shortage, 503 + Retry-After) — not a storage failure after storeTimeout.
    expect([204, 503].includes(resB.status) ? 'served, or refused as a memory shortage' : `${resB.status} after ${tookB} ms: ${resB.body}`).toBe('served, or refused as a memory shortage');
    if (resB.status === 204) {
      const head = await request(b, 'HEAD', TUS);
      expect(head.headers['upload-offset']).toBe(String(second.length));
    }
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('control: the same store and budget without storeTimeout serve both uploads (the queued one after the slow one)', async () => {
  const dir = tempDir('spool-review23-');
  const PART = 384 * KiB;
  const store = partBufferedStore(dir.path, 512 * KiB);
  const srv = await serve({ store, memoryBudget: 512 * KiB + 2 * 64 * KiB, storeTimeout: 0, idleTimeout: 10_000 });
  try {
    const first = randomBytes(PART);
    const second = randomBytes(PART);
    const a = await createTusUpload(srv.url, first.length);
    const b = await createTusUpload(srv.url, second.length);
    const slow = slowPatch(a, first, 16 * KiB, 60);
    await wait(150);
    const fast = request(b, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, second);
    const [statusA, resB] = await Promise.all([slow, fast]);
    expect([statusA, resB.status]).toEqual([204, 204]);
    const id = b.split('/').pop()!;
    expect(await sha256Of(store.read((await store.get(id)) as ResumableUpload))).toBe(sha256(second));
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    await srv.close();
    dir.remove();
  }
});
