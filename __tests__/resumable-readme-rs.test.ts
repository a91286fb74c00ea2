/**
 * README claims of `resumable()` that had no test of their own: a completing request cut off (tus, plain
 * upload), onComplete's rejection, X-HTTP-Method-Override, the tus checksum algorithms sha512 and md5,
 * admissionTimeout, the error answers' content types, IETF 415 and 410, the `protocols` option, what
 * sweep() counts, and the defaults (24 h expiry, appendSize = fileSize, interimProgress). Real servers, a
 * real disk store, raw HTTP; bytes checked by sha256.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { MemoryBudget, redisLocker, resumable, resumableDiskStore, SpoolError, type ResumableStore, type UploadChanges } from '../lib/index';
import { close, eventually, listen, tempDir } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const b64 = (alg: string, data: Buffer | string) => createHash(alg).update(data).digest('base64');
const V8 = { 'Upload-Draft-Interop-Version': '8' } as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const idOf = (url: string) => url.split('/').pop()!;

async function createTus(srv: { endpoint: string; url: string }, length: number, headers: Record<string, string> = {}): Promise<string> {
  const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': length, ...headers });
  expect(res.status).toBe(201);
  return srv.url + res.headers.location!;
}

/** Writes a whole PATCH (head and body) on a raw socket and destroys the socket without reading any answer. */
async function patchAndHangUp(url: string, offset: number, data: Buffer, waitBeforeCut: () => Promise<void> = async () => undefined): Promise<void> {
  const { port, pathname } = new URL(url);
  const socket = net.connect(Number(port), '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const head =
    `PATCH ${pathname} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n` +
    `Upload-Offset: ${offset}\r\nContent-Length: ${data.length}\r\n\r\n`;
  await new Promise<void>((resolve) => socket.write(Buffer.concat([Buffer.from(head), data]), () => resolve()));
  await waitBeforeCut();
  socket.destroy();
}

/** `inner`, with `update` replaced (the rest bound to the store). */
function withUpdate(inner: ResumableStore, update: (id: string, changes: UploadChanges) => Promise<unknown>): ResumableStore {
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'update') return update;
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

describe('tus: a plain upload whose completing request is cut off', () => {
  let srv: ResumableServer | undefined;
  afterEach(async () => {
    await srv?.close();
    srv = undefined;
  });

  test('cut while onComplete runs (all bytes in): onComplete runs exactly once, HEAD shows it complete, the bytes are intact', async () => {
    let entered!: () => void;
    const inOnComplete = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const calls: string[] = [];
    srv = await startResumable({
      onComplete: async (file) => {
        calls.push(file.sha256!);
        entered();
        await gate;
      },
    });
    const data = randomBytes(300 * KiB + 7);
    const url = await createTus(srv, data.length);
    await patchAndHangUp(url, 0, data, () => inOnComplete);
    // The HEAD waits for the request still completing it, then answers from what it recorded.
    const heading = request(url, 'HEAD', TUS);
    await sleep(100);
    release();
    const head = await heading;
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe(String(data.length));
    expect(head.headers['upload-length']).toBe(String(data.length));
    expect(head.headers['upload-expires']).toBeUndefined(); // completed uploads never expire
    expect((await request(url, 'HEAD', TUS)).status).toBe(200);
    expect(calls).toEqual([sha(data)]);
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha(data)]);
    // Complete: no more bytes go in.
    const more = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': data.length }, Buffer.from('x'));
    expect(more.status).toBe(400);
  });

  test('the socket destroyed once the server has every byte (no answer read), several uploads: each is complete at its next HEAD, onComplete exactly once per upload', async () => {
    const calls = new Map<string, number>();
    srv = await startResumable({
      onComplete: async (file) => {
        const id = file.path!.split('/').pop()!;
        calls.set(id, (calls.get(id) ?? 0) + 1);
        await sleep(20);
      },
    });
    const uploads: { url: string; data: Buffer }[] = [];
    for (let i = 0; i < 6; i++) {
      const data = randomBytes(64 * KiB * (i + 1) + i);
      const url = await createTus(srv, data.length);
      // Cut once the server has every byte (a HEAD sent while it still reads the body would end that request).
      const path = join(srv.dir.path, idOf(url));
      await patchAndHangUp(url, 0, data, () => eventually(() => expect(existsSync(path) && statSync(path).size).toBe(data.length), 10_000));
      uploads.push({ url, data });
    }
    for (const { url, data } of uploads) {
      const head = await request(url, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset']]).toEqual([200, String(data.length)]);
    }
    expect([...calls.keys()].sort()).toEqual(uploads.map((u) => idOf(u.url)).sort());
    expect([...calls.values()]).toEqual(uploads.map(() => 1));
    expect(srv.completed.map((c) => c.readBack).sort()).toEqual(uploads.map((u) => sha(u.data)).sort());
  });

  test('every byte recorded but the completion itself not (a crash between): the next HEAD completes it, onComplete once, byte-exact', async () => {
    const dir = tempDir('spool-rs-head-completes-');
    const inner = resumableDiskStore({ directory: dir.path });
    let failNextCompletion = true;
    const store = withUpdate(inner, async (id, changes) => {
      if (changes.complete && failNextCompletion) {
        failNextCompletion = false;
        throw new Error('the process died before recording the completion');
      }
      return inner.update(id, changes);
    });
    const calls: number[] = [];
    srv = await startResumable({ store, onComplete: (file) => void calls.push(file.size) }, dir);
    const data = randomBytes(200 * KiB + 3);
    const url = await createTus(srv, data.length);
    const patch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(patch.status).toBe(500);
    expect(calls).toEqual([]);
    // Stored, not completed: a HEAD completes it.
    const head = await request(url, 'HEAD', TUS);
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe(String(data.length));
    expect(calls).toEqual([data.length]);
    expect(srv.completed.map((c) => [c.sha256, c.readBack])).toEqual([[sha(data), sha(data)]]);
    expect((await request(url, 'HEAD', TUS)).status).toBe(200);
    expect(calls).toEqual([data.length]); // once
    const more = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': data.length }, Buffer.from('x'));
    expect(more.status).toBe(400);
    expect(more.body).toMatch(/complete/i);
  });
});

describe('onComplete rejecting (plain upload)', () => {
  let srv: ResumableServer;
  afterEach(() => srv.close());

  test('tus: the completing request is answered with the error (status and message); the upload stays complete', async () => {
    srv = await startResumable({ onComplete: () => Promise.reject(new SpoolError('FILE_REJECTED', 'no videos of cats')) });
    const data = randomBytes(5000);
    const url = await createTus(srv, data.length);
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toBe('no videos of cats');
    const head = await request(url, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(data.length)]);
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha(data)]);
  });

  test('IETF: the completing request is answered with the error as problem+json carrying its code', async () => {
    srv = await startResumable({ onComplete: () => Promise.reject(new SpoolError('FILE_REJECTED', 'no videos of cats')) });
    const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1' }, Buffer.from('hello'));
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ code: 'FILE_REJECTED', title: 'no videos of cats', status: 400 });
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha('hello')]);
  });

  test('an error that is not a SpoolError: 500, its message not exposed', async () => {
    srv = await startResumable({ onComplete: async () => { throw new Error('database password wrong'); } });
    const url = await createTus(srv, 3);
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
    expect(res.status).toBe(500);
    expect(res.body).not.toContain('password');
  });
});

describe('tus raw HTTP: method override, checksums, content types', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ limits: { fileSize: 1000 } });
  });
  afterEach(() => srv.close());

  test('X-HTTP-Method-Override: a POST carrying PATCH appends, HEAD reports, DELETE terminates', async () => {
    const url = await createTus(srv, 6);
    const patched = await request(url, 'POST', { ...TUS, ...OCTETS, 'X-HTTP-Method-Override': 'PATCH', 'Upload-Offset': 0 }, Buffer.from('abc'));
    expect(patched.status).toBe(204);
    expect(patched.headers['upload-offset']).toBe('3');
    const head = await request(url, 'POST', { ...TUS, 'X-HTTP-Method-Override': 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe('3');
    expect(head.headers['upload-length']).toBe('6');
    // Lower case is honoured as well.
    const done = await request(url, 'POST', { ...TUS, ...OCTETS, 'X-HTTP-Method-Override': 'patch', 'Upload-Offset': 3 }, Buffer.from('def'));
    expect(done.status).toBe(204);
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcdef')]);
    const other = await createTus(srv, 4);
    expect(srv.dir.files()).toContain(`${idOf(other)}.json`);
    const deleted = await request(other, 'POST', { ...TUS, 'X-HTTP-Method-Override': 'DELETE' });
    expect(deleted.status).toBe(204);
    expect(srv.dir.files().filter((f) => f.startsWith(idOf(other)))).toEqual([]);
    expect((await request(other, 'HEAD', TUS)).status).toBe(404);
  });

  test.each(['sha512', 'md5'])('Upload-Checksum %s: a match is stored; a mismatch is 460, its bytes discarded, offset unchanged', async (alg) => {
    const options = await request(srv.endpoint, 'OPTIONS', {});
    expect(String(options.headers['tus-checksum-algorithm']).split(',')).toContain(alg);
    const url = await createTus(srv, 6);
    const ok = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': `${alg} ${b64(alg, 'abc')}` }, Buffer.from('abc'));
    expect(ok.status).toBe(204);
    expect(ok.headers['upload-offset']).toBe('3');
    const bad = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `${alg} ${b64(alg, 'dex')}` }, Buffer.from('def'));
    expect(bad.status).toBe(460);
    expect(bad.headers['upload-offset']).toBe('3');
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe('3');
    // A digest of another algorithm's length does not pass either.
    const wrongAlg = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `${alg} ${b64(alg === 'md5' ? 'sha1' : 'sha256', 'def')}` }, Buffer.from('def'));
    expect(wrongAlg.status).toBe(460);
    const good = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `${alg} ${b64(alg, 'def')}` }, Buffer.from('def'));
    expect(good.status).toBe(204);
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcdef')]);
  });

  test('tus errors are answered text/plain', async () => {
    const url = await createTus(srv, 10);
    const answers = [
      await request(srv.endpoint, 'POST', { 'Tus-Resumable': '0.2.2', 'Upload-Length': 5 }), // 412
      await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 7 }, Buffer.from('x')), // 409
      await request(url, 'PATCH', { ...TUS, 'Content-Type': 'text/plain', 'Upload-Offset': 0 }, Buffer.from('x')), // 415
      await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': `sha1 ${b64('sha1', 'y')}` }, Buffer.from('x')), // 460
      await request(`${srv.endpoint}/nope`, 'HEAD', TUS), // 404 (no body for a HEAD)
      await request(`${srv.endpoint}/nope`, 'DELETE', TUS), // 404
      await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 5000 }), // 413
      await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 5, 'Upload-Metadata': 'filename !!!' }), // 400
    ];
    expect(answers.map((a) => a.status)).toEqual([412, 409, 415, 460, 404, 404, 413, 400]);
    for (const answer of answers) {
      expect(answer.headers['content-type']).toBe('text/plain; charset=utf-8');
      expect(answer.headers['tus-resumable']).toBe('1.0.0');
    }
    expect(answers[5].body).toMatch(/upload/i);
  });
});

describe('IETF draft: 415 and 410', () => {
  let srv: ResumableServer;
  afterEach(() => srv.close());

  test('415 problem+json on a PATCH that is not application/partial-upload (interop ≥ 6); nothing of it is stored', async () => {
    srv = await startResumable();
    const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' }, Buffer.from('abc'));
    const url = srv.url + res.headers.location!;
    for (const version of ['6', '7', '8']) {
      const bad = await request(url, 'PATCH', { 'Upload-Draft-Interop-Version': version, 'Upload-Complete': '?0', 'Upload-Offset': '3', 'Content-Type': 'application/octet-stream' }, Buffer.from('def'));
      expect(bad.status).toBe(415);
      expect(bad.headers['content-type']).toBe('application/problem+json');
      expect(JSON.parse(bad.body).code).toBe('UNSUPPORTED_CONTENT_TYPE');
    }
    expect((await request(url, 'HEAD', V8)).headers['upload-offset']).toBe('3');
    const good = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3', 'Content-Type': 'application/partial-upload' }, Buffer.from('def'));
    expect(good.status).toBe(204);
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcdef')]);
  });

  test('an expired upload not yet swept: 410 UPLOAD_EXPIRED (IETF problem+json, tus text/plain) to HEAD and PATCH, its bytes untouched until swept', async () => {
    srv = await startResumable({ expiration: 2000 });
    const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' }, Buffer.from('abc'));
    expect(res.status).toBe(201);
    const url = srv.url + res.headers.location!;
    expect((await request(url, 'HEAD', V8)).status).toBe(204);
    await sleep(2500);
    const head = await request(url, 'HEAD', V8);
    expect(head.status).toBe(410);
    const patch = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3', 'Content-Type': 'application/partial-upload' }, Buffer.from('def'));
    expect(patch.status).toBe(410);
    expect(patch.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(patch.body).code).toBe('UPLOAD_EXPIRED');
    const tusPatch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3 }, Buffer.from('d'));
    expect(tusPatch.status).toBe(410);
    expect(tusPatch.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(srv.completed).toEqual([]);
    expect(readFileSync(join(srv.dir.path, idOf(url)), 'utf8')).toBe('abc'); // untouched until swept
    expect(await srv.middleware.sweep()).toBe(1);
    expect(srv.dir.files()).toEqual([]);
    expect((await request(url, 'HEAD', V8)).status).toBe(404);
  });
});

describe('admissionTimeout', () => {
  test('an append that cannot get its memory share waits admissionTimeout, then 503 + Retry-After; nothing of it is stored; admitted once memory is back', async () => {
    const budget = new MemoryBudget('1MiB');
    const srv = await startResumable({ memoryBudget: budget, admissionTimeout: 300 });
    try {
      const url = await createTus(srv, 6);
      expect(budget.tryReserve(MiB)).toBe(true); // every byte of the budget held elsewhere
      const started = Date.now();
      const refused = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
      const waited = Date.now() - started;
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('5');
      expect(waited).toBeGreaterThanOrEqual(280);
      expect(waited).toBeLessThan(5000);
      expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe('0');
      budget.release(MiB);
      const admitted = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abcdef'));
      expect(admitted.status).toBe(204);
      expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcdef')]);
      await eventually(() => expect(budget.used).toBe(0));
    } finally {
      await srv.close();
    }
  });

  test('IETF: the same 503 with Retry-After, as problem+json MEMORY_BUDGET_EXCEEDED', async () => {
    const budget = new MemoryBudget('1MiB');
    const srv = await startResumable({ memoryBudget: budget, admissionTimeout: 200 });
    try {
      const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' });
      const url = srv.url + res.headers.location!;
      expect(budget.tryReserve(MiB)).toBe(true);
      const refused = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '0', 'Content-Type': 'application/partial-upload' }, Buffer.from('abc'));
      expect(refused.status).toBe(503);
      expect(refused.headers['retry-after']).toBe('5');
      expect(JSON.parse(refused.body).code).toBe('MEMORY_BUDGET_EXCEEDED');
      expect(srv.completed).toEqual([]);
      budget.release(MiB);
    } finally {
      await srv.close();
    }
  });
});

describe('protocols', () => {
  /** The middleware at /files, then a handler that answers 299 to whatever it passed on. */
  async function serve(protocols: ('tus' | 'ietf')[]) {
    const dir = tempDir('spool-rs-protocols-');
    const middleware = resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0, protocols });
    const app = express();
    app.use('/files', middleware, (_req, res) => void res.status(299).end('passed on'));
    const server = await listen(app);
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`;
    return {
      url,
      dir,
      async close() {
        middleware.close();
        await close(server);
        dir.remove();
      },
    };
  }

  test("['tus']: tus is answered; an IETF creation creates nothing (answered as a tus request without Tus-Resumable: 412)", async () => {
    const s = await serve(['tus']);
    try {
      const ietf = await request(s.url, 'POST', { ...V8, 'Upload-Complete': '?1' }, Buffer.from('hello'));
      expect(ietf.status).toBe(412);
      expect(ietf.headers['tus-version']).toBe('1.0.0');
      expect(ietf.headers['upload-draft-interop-version']).toBeUndefined();
      expect(ietf.headers.location).toBeUndefined();
      expect(ietf.interim).toEqual([]); // no 104
      expect(s.dir.files()).toEqual([]);
      const options = await request(s.url, 'OPTIONS', V8);
      expect(options.status).toBe(299);
      const created = await request(s.url, 'POST', { ...TUS, 'Upload-Length': 3 });
      expect(created.status).toBe(201);
      expect(s.dir.files()).toEqual([`${idOf(created.headers.location!)}.json`]);
    } finally {
      await s.close();
    }
  });

  test("['ietf']: the IETF draft is answered; tus requests are passed on to the next handler, nothing created", async () => {
    const s = await serve(['ietf']);
    try {
      const tusPost = await request(s.url, 'POST', { ...TUS, 'Upload-Length': 3 });
      expect(tusPost.status).toBe(299);
      expect(tusPost.body).toBe('passed on');
      expect((await request(s.url, 'OPTIONS', TUS)).status).toBe(299);
      expect(s.dir.files()).toEqual([]);
      const created = await request(s.url, 'POST', { ...V8, 'Upload-Complete': '?1' }, Buffer.from('hello'));
      expect(created.status).toBe(201);
      expect(created.headers['upload-complete']).toBe('?1');
      const url = new URL(created.headers.location!, s.url).href;
      expect((await request(url, 'HEAD', TUS)).status).toBe(299); // a tus HEAD on it is not answered either
      expect((await request(url, 'HEAD', V8)).headers['upload-offset']).toBe('5');
    } finally {
      await s.close();
    }
  });
});

describe("sweep()'s count", () => {
  test('an expired upload a request is working on is skipped and not counted; the idle expired ones are', async () => {
    const srv = await startResumable({ expiration: 2000 });
    try {
      const [busy, idle1, idle2] = [await createTus(srv, 10), await createTus(srv, 10), await createTus(srv, 10)];
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      async function* body() {
        yield Buffer.from('abc');
        await held;
        yield Buffer.from('de');
      }
      const patching = request(busy, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 5 }, body());
      await eventually(() => expect(existsSync(join(srv.dir.path, idOf(busy)))).toBe(true));
      await sleep(2500); // all three past their expiry
      expect(await srv.middleware.sweep()).toBe(2);
      expect(srv.dir.files().sort()).toEqual([idOf(busy), `${idOf(busy)}.json`].sort());
      expect([idle1, idle2].map((u) => srv.dir.files().some((f) => f.startsWith(idOf(u))))).toEqual([false, false]);
      release();
      expect((await patching).status).toBe(204); // renewed by its append
      expect(await srv.middleware.sweep()).toBe(0);
      expect((await request(busy, 'HEAD', TUS)).headers['upload-offset']).toBe('5');
    } finally {
      await srv.close();
    }
  });

  test('redisLocker: an expired upload another instance is appending to is left alone and not counted', async () => {
    const prefix = `sweep-count-${randomBytes(3).toString('hex')}:`;
    const dir = tempDir('spool-rs-sweep-two-');
    const [lockA, lockB] = [redisLocker({ url: process.env.REDIS_URL, prefix }), redisLocker({ url: process.env.REDIS_URL, prefix })];
    const a = await startResumable({ expiration: 2000, locker: lockA }, dir);
    const b = await startResumable({ expiration: 2000, locker: lockB }, dir);
    try {
      const busy = await createTus(a, 10);
      const idle = await createTus(a, 10);
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      async function* body() {
        yield Buffer.from('abc');
        await held;
        yield Buffer.from('de');
      }
      const patching = request(busy, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 5 }, body());
      await eventually(() => expect(existsSync(join(dir.path, idOf(busy)))).toBe(true));
      await sleep(2500);
      expect(await b.middleware.sweep()).toBe(1);
      expect(dir.files().sort()).toEqual([idOf(busy), `${idOf(busy)}.json`].sort());
      expect(dir.files().some((f) => f.startsWith(idOf(idle)))).toBe(false);
      release();
      expect((await patching).status).toBe(204);
      expect((await request(busy.replace(a.url, b.url), 'HEAD', TUS)).headers['upload-offset']).toBe('5');
    } finally {
      a.middleware.close();
      b.middleware.close();
      await Promise.all([close(a.server), close(b.server)]);
      await Promise.all([lockA.close(), lockB.close()]);
      dir.remove();
    }
  });
});

describe('defaults', () => {
  async function serveDefaults(limits?: { fileSize: number }) {
    const dir = tempDir('spool-rs-defaults-');
    const middleware = resumable({ store: resumableDiskStore({ directory: dir.path }), ...(limits ? { limits } : {}) });
    const app = express();
    app.use('/files', middleware);
    const server = await listen(app);
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return {
      url: base,
      endpoint: `${base}/files`,
      async close() {
        middleware.close();
        await close(server);
        dir.remove();
      },
    };
  }

  test('expiration 24 h: Upload-Expires of a new tus upload, max-age of an IETF one; renewed by an append', async () => {
    const s = await serveDefaults();
    try {
      const before = Date.now();
      const res = await request(s.endpoint, 'POST', { ...TUS, 'Upload-Length': 10 });
      const expires = Date.parse(String(res.headers['upload-expires']));
      expect(Math.abs(expires - (before + 86_400_000))).toBeLessThan(5000);
      const ietf = await request(s.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' });
      const maxAge = Number(/max-age=(\d+)/.exec(String(ietf.headers['upload-limit']))![1]);
      expect(Math.abs(maxAge - 86_400)).toBeLessThanOrEqual(5);
      await sleep(1100);
      const url = s.url + res.headers.location!;
      const patched = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
      expect(Date.parse(String(patched.headers['upload-expires']))).toBeGreaterThan(expires);
    } finally {
      await s.close();
    }
  });

  test('limits: fileSize 1 GiB, appendSize = fileSize (also when only fileSize is given)', async () => {
    const plain = await serveDefaults();
    const small = await serveDefaults({ fileSize: 4000 });
    try {
      const limits = (await request(plain.endpoint, 'OPTIONS', V8)).headers['upload-limit'];
      expect(limits).toContain(`max-size=${1024 ** 3}`);
      expect(limits).toContain(`max-append-size=${1024 ** 3}`);
      expect((await request(plain.endpoint, 'OPTIONS', {})).headers['tus-max-size']).toBe(String(1024 ** 3));
      expect((await request(small.endpoint, 'OPTIONS', V8)).headers['upload-limit']).toContain('max-append-size=4000');
      // One request may append the whole file size, and not a byte more.
      const data = randomBytes(4000);
      const whole = await request(small.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1' }, data);
      expect(whole.status).toBe(201);
      const res = await request(small.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' });
      const url = small.url + res.headers.location!;
      const over = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '0', 'Content-Type': 'application/partial-upload' }, randomBytes(4001));
      expect(over.status).toBe(413);
    } finally {
      await Promise.all([plain.close(), small.close()]);
    }
  });

  test('interimProgress { bytes: 1 MiB, interval: 1000 }: progress 104s at least 1 MiB and 1 s apart, at most one per second of the request; none for a body under 1 MiB', async () => {
    const s = await serveDefaults();
    try {
      const data = randomBytes(3 * MiB);
      async function* paced(pieces: number, gap: number) {
        const size = data.length / pieces;
        for (let i = 0; i < pieces; i++) {
          if (i > 0) await sleep(gap);
          yield data.subarray(i * size, (i + 1) * size);
        }
      }
      // However slow the machine: at most one progress 104 per full second of the request, each 1 MiB and 1 s
      // after the one before.
      const progressOf = async (pieces: number, gap: number) => {
        const started = Date.now();
        const res = await request(s.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1', 'Content-Length': data.length }, paced(pieces, gap));
        expect(res.status).toBe(201);
        expect(res.interim[0].headers['upload-offset']).toBeUndefined(); // the creation's announcement first
        const progress = res.interim.filter((i) => i.headers['upload-offset'] !== undefined);
        expect(progress.length).toBeLessThanOrEqual(Math.floor((Date.now() - started) / 1000));
        for (let i = 1; i < progress.length; i++) {
          expect(Number(progress[i].headers['upload-offset']) - Number(progress[i - 1].headers['upload-offset'])).toBeGreaterThanOrEqual(MiB);
          expect(progress[i].at - progress[i - 1].at).toBeGreaterThanOrEqual(950);
        }
        return progress.map((i) => Number(i.headers['upload-offset']));
      };
      await progressOf(6, 60); // fast: usually none
      const slow = await progressOf(12, 220); // over ~2.5 s
      expect(slow.length).toBeGreaterThanOrEqual(1);
      expect(slow[0]).toBeGreaterThanOrEqual(MiB);

      // Slow but under 1 MiB in all: not one progress 104 (a byte threshold below 1 MiB would send some).
      const under = data.subarray(0, 768 * KiB);
      async function* trickle() {
        for (let i = 0; i < 12; i++) {
          if (i > 0) await sleep(220);
          yield under.subarray(i * 64 * KiB, (i + 1) * 64 * KiB);
        }
      }
      const small = await request(s.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1', 'Content-Length': under.length }, trickle());
      expect(small.status).toBe(201);
      expect(small.interim.filter((i) => i.headers['upload-offset'] !== undefined)).toEqual([]);
    } finally {
      await s.close();
    }
  });
});
