/**
 * Review of 02dd3af (storeTimeout): checks that pass on it. Time the real disk store spends waiting for a
 * slow client never counts, whatever the shape of the pauses (tiny pieces, a creation with a body, IETF
 * progress points that pause the stream, a checksummed append); and a store stuck after a checksum mismatch
 * failed the body (the store's turn: to finish) is still ended by storeTimeout — the `fail()` reset of the
 * tap's clocks, which no test of the commit exercises.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { resumable, resumableDiskStore, type Resumable, type ResumableOptions, type ResumableStore } from '../lib/index';
import { eventually, tempDir } from './helpers/app';
import { createTusUpload, OCTETS, request, serveAtFiles, slowDiskStore, TUS, withAppend } from './helpers/resumable';

const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const V8 = { 'Upload-Draft-Interop-Version': '8' };

async function serve(options: ResumableOptions): Promise<{ url: string; middleware: Resumable; shas: string[]; close(): Promise<void> }> {
  const shas: string[] = [];
  const middleware = resumable({ sweepInterval: 0, sha256: true, onComplete: (file) => void shas.push(file.sha256!), ...options });
  return { middleware, shas, ...(await serveAtFiles(middleware)) };
}

/** Sends `pieces` of a body with `pause` ms between them; resolves with the final status and the 1xx seen. */
function paced(url: string, method: string, headers: Record<string, string | number>, pieces: Buffer[], pause: number): Promise<{ status: number; interims: number; body: string }> {
  return new Promise((resolve, reject) => {
    let interims = 0;
    const total = pieces.reduce((n, p) => n + p.length, 0);
    const req = http.request(url, { method, headers: { ...headers, 'Content-Length': total } });
    req.on('information', () => interims++);
    req.on('error', reject);
    req.on('response', (r) => {
      let body = '';
      r.on('data', (c) => (body += c));
      r.on('end', () => resolve({ status: r.statusCode!, interims, body }));
    });
    void (async () => {
      for (let i = 0; i < pieces.length; i++) {
        if (i > 0) await wait(pause);
        if (i === pieces.length - 1) req.end(pieces[i]);
        else req.write(pieces[i]);
      }
    })();
  });
}

function cut(data: Buffer, sizes: number[]): Buffer[] {
  const out: Buffer[] = [];
  let o = 0;
  for (const s of sizes) {
    out.push(data.subarray(o, o + s));
    o += s;
  }
  out.push(data.subarray(o));
  return out;
}

const STORE = { storeTimeout: 200, idleTimeout: 10_000 };

test('tus PATCH: 1 B, 10 B, 20 KiB, 100 KiB, rest, with 450 ms pauses (each > storeTimeout): 204, sha256 right', async () => {
  const dir = tempDir('spool-review23-');
  const srv = await serve({ store: resumableDiskStore({ directory: dir.path }), ...STORE });
  try {
    const data = randomBytes(300 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const res = await paced(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, cut(data, [1, 10, 20 * KiB, 100 * KiB]), 450);
    expect(res.status).toBe(204);
    expect(srv.shas).toEqual([sha256(data)]);
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('tus creation with upload (POST with a body), paced: 201, bytes stored', async () => {
  const dir = tempDir('spool-review23-');
  const srv = await serve({ store: resumableDiskStore({ directory: dir.path }), ...STORE });
  try {
    const data = randomBytes(200 * KiB);
    const res = await paced(`${srv.url}/files`, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': data.length }, cut(data, [5, 64 * KiB]), 450);
    expect(res.status).toBe(201);
    expect(srv.shas).toEqual([sha256(data)]);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('IETF append with progress 104s at every byte (the store pauses the body for each progress point), paced: completes', async () => {
  const dir = tempDir('spool-review23-');
  const srv = await serve({ store: resumableDiskStore({ directory: dir.path }), ...STORE, interimProgress: { bytes: 1, interval: 0 } });
  try {
    const data = randomBytes(300 * KiB);
    const created = await request(`${srv.url}/files`, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': String(data.length) });
    const url = srv.url + created.headers.location!;
    const res = await paced(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '0', 'Content-Type': 'application/partial-upload' }, cut(data, [1, 33 * KiB, 100 * KiB]), 450);
    expect(res.status).toBe(204);
    expect(res.interims).toBeGreaterThan(1);
    expect(srv.shas).toEqual([sha256(data)]);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('tus checksummed (atomic) append, paced: 204', async () => {
  const dir = tempDir('spool-review23-');
  const srv = await serve({ store: resumableDiskStore({ directory: dir.path }), ...STORE });
  try {
    const data = randomBytes(150 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const checksum = `sha1 ${createHash('sha1').update(data).digest('base64')}`;
    const res = await paced(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': checksum }, cut(data, [7, 50 * KiB]), 450);
    expect(res.status).toBe(204);
    expect(srv.shas).toEqual([sha256(data)]);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('a store stuck (deaf to its signal) after a checksum mismatch failed the body: the waiting client is answered within storeTimeout + settleTimeout, the upload locked until the store settles', async () => {
  const dir = tempDir('spool-review23-');
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const store = withAppend(resumableDiskStore({ directory: dir.path }), async (append, ...args) => {
    const offset = await append(...args);
    await held;
    return offset;
  });
  const srv = await serve({ store, storeTimeout: 300, settleTimeout: 300, lockTimeout: 300, idleTimeout: 10_000 });
  try {
    const data = randomBytes(64 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const started = Date.now();
    // Chunked, the terminating chunk 300 ms after the bytes: the store is waiting for the client (its clock
    // stopped) when the body ends with the mismatch — the store's turn from then on.
    const sent = new Promise<{ status: number }>((resolve, reject) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': `sha1 ${createHash('sha1').update('not it').digest('base64')}` } });
      req.on('error', reject);
      req.on('response', (r) => (r.resume(), resolve({ status: r.statusCode! })));
      req.write(data);
      setTimeout(() => req.end(), 300);
    });
    let timer: NodeJS.Timeout | undefined;
    const res = await Promise.race([sent, new Promise<{ status: number }>((r) => (timer = setTimeout(() => r({ status: -1 }), 8000)))]);
    clearTimeout(timer);
    expect(res.status).not.toBe(-1); // answered, not held for ever
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await request(upload, 'HEAD', TUS)).status).toBe(423);
    release();
    await eventually(async () => {
      const head = await request(upload, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    }, 5000);
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});

test('a chunked body whose end comes 400 ms after its last bytes (the store waiting meanwhile), then a store that takes 100 ms to finish: 204 — its clock starts when it is handed the end', async () => {
  const dir = tempDir('spool-review23-');
  const { store, idle } = slowDiskStore(dir.path, 100);
  const srv = await serve({ store, storeTimeout: 200, idleTimeout: 10_000 });
  try {
    const data = randomBytes(64 * KiB);
    // Not the last append (tus would complete an upload at its length even after a stall).
    const upload = await createTusUpload(srv.url, 2 * data.length);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0 } });
      req.on('error', reject);
      req.on('response', (r) => (r.resume(), resolve(r.statusCode!)));
      req.write(data);
      setTimeout(() => req.end(), 400);
    });
    expect(status).toBe(204);
    await idle();
    expect((await request(upload, 'HEAD', TUS)).headers['upload-offset']).toBe(String(data.length));
  } finally {
    await srv.close();
    dir.remove();
  }
});
