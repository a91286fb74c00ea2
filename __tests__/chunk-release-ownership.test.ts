/**
 * Chunk release (lib/core/chunk-release.ts) against whoever else may hold a resumable append's chunks (written
 * by a hostile review): an app's middleware that sniffed or peeked at the body, a store wrapper that tees the
 * stream or keeps what it saw. Each test tries to make a chunk someone else holds go empty, or a stored
 * upload differ from what was sent. (.ci/run runs this file on Node 20, 22 and 24.)
 */
import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import express from 'express';
import { resumable, resumableDiskStore, type ResumableStore, type UploadedFile } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, request, sha256Of, TUS } from './helpers/resumable';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** resumable() over a disk store in a new directory; `done`: the sha256 of each completed upload, read back. */
function diskUploads() {
  const dir = tempDir('spool-release-');
  const done: string[] = [];
  const middleware = resumable({
    store: resumableDiskStore({ directory: dir.path }),
    sweepInterval: 0,
    onComplete: async (file: UploadedFile) => void done.push(await sha256Of(file.stream())),
  });
  return { dir, done, middleware };
}

async function serveApp(app: express.Express) {
  const server: http.Server = await listen(app);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function upload(url: string, data: Buffer) {
  const created = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
  expect(created.status).toBe(201);
  const res = await request(url + created.headers.location!, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
  return res;
}

test("a middleware that keeps the first body chunk with req.once('data') (content sniffing) keeps its bytes", async () => {
  const { dir, done, middleware } = diskUploads();
  let first: Buffer | undefined;
  let firstCopy: Buffer | undefined;
  const app = express();
  app.use((req, _res, next) => {
    if (req.method === 'PATCH') {
      // Paused first, so that the body does not flow before the upload middleware reads it.
      req.pause();
      req.once('data', (chunk: Buffer) => {
        first = chunk; // kept, e.g. for a magic-bytes check in onComplete / a log line
        firstCopy = Buffer.from(chunk);
      });
    }
    next();
  });
  app.use('/files', middleware);
  const { url, server } = await serveApp(app);
  try {
    const data = randomBytes(4 * MiB + 3);
    const res = await upload(url, data);
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(data.length));
    expect(done).toEqual([sha(data)]);
    expect(firstCopy!.length).toBeGreaterThan(0);
    // The app's chunk must still hold what it got.
    expect(first!.length).toBe(firstCopy!.length);
    expect(first!.equals(firstCopy!)).toBe(true);
  } finally {
    await middleware.close();
    await close(server);
    dir.remove();
  }
});

test.each([4 * MiB + 3, 3000])('a middleware that peeks at the body (read + unshift) keeps the bytes it peeked at (%i bytes)', async (size) => {
  const { dir, done, middleware } = diskUploads();
  let magic: Buffer | undefined;
  let magicCopy: Buffer | undefined;
  const app = express();
  app.use((req, _res, next) => {
    if (req.method !== 'PATCH') return next();
    req.once('readable', () => {
      const head = req.read() as Buffer | null;
      if (head) {
        magic = head.subarray(0, 8); // a view of the first 8 bytes, kept for a type check later
        magicCopy = Buffer.from(magic);
        req.unshift(head);
      }
      next();
    });
  });
  app.use('/files', middleware);
  const { url, server } = await serveApp(app);
  try {
    const data = randomBytes(size);
    const res = await upload(url, data);
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(data.length));
    expect(done).toEqual([sha(data)]);
    expect(magicCopy!.length).toBe(8);
    expect(magic!.length).toBe(8);
    expect(magic!.equals(data.subarray(0, 8))).toBe(true);
  } finally {
    await middleware.close();
    await close(server);
    dir.remove();
  }
});

test('a mirroring store (tee of the append stream into two disk stores) stores byte-exact copies in both', async () => {
  const a = tempDir('spool-release-a-');
  const b = tempDir('spool-release-b-');
  const primary = resumableDiskStore({ directory: a.path });
  const mirror = resumableDiskStore({ directory: b.path });
  const mirrorIds = new Map<string, string>();
  // A decorator store: everything goes to `primary`, and the bytes are mirrored to a second store.
  const store: ResumableStore = Object.assign(Object.create(primary) as ResumableStore, {
    name: 'mirrored',
    async create(upload: Parameters<ResumableStore['create']>[0], context: Parameters<ResumableStore['create']>[1]) {
      const made = await primary.create(upload, context);
      const m = await mirror.create(upload, context);
      mirrorIds.set(made.id, m.id);
      return made;
    },
    async append(upload: Parameters<ResumableStore['append']>[0], stream: Readable, context: Parameters<ResumableStore['append']>[2]) {
      const one = new PassThrough();
      const two = new PassThrough();
      stream.pipe(one);
      stream.pipe(two);
      const m = await mirror.get(mirrorIds.get(upload.id)!);
      const [offset] = await Promise.all([primary.append(upload, one, context), mirror.append(m!, two, { ...context, progress: undefined })]);
      return offset;
    },
    get: primary.get.bind(primary),
    update: primary.update.bind(primary),
    read: primary.read.bind(primary),
    file: primary.file.bind(primary),
    remove: primary.remove.bind(primary),
    list: primary.list.bind(primary),
    concatenate: primary.concatenate.bind(primary),
  });
  const done: { id: string; sha: string }[] = [];
  const middleware = resumable({
    store,
    sweepInterval: 0,
    onComplete: async (file: UploadedFile) => void done.push({ id: (file as unknown as { id: string }).id, sha: await sha256Of(file.stream()) }),
  });
  const app = express();
  app.use('/files', middleware);
  const { url, server } = await serveApp(app);
  try {
    const data = randomBytes(4 * MiB + 3);
    const created = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
    const id = created.headers.location!.split('/').pop()!;
    const res = await Promise.race([
      request(url + created.headers.location!, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data),
      new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000).unref()),
    ]);
    expect(res === 'hung' ? 'hung' : res.status).toBe(204);
    const p = await primary.get(id);
    const m = await mirror.get(mirrorIds.get(id)!);
    expect(p!.offset).toBe(data.length);
    const primarySha = await sha256Of(primary.read(p!));
    const mirrorSha = await sha256Of(mirror.read(m!));
    expect(primarySha).toBe(sha(data));
    expect(m!.offset).toBe(data.length);
    expect(mirrorSha).toBe(sha(data));
  } finally {
    await middleware.close();
    await close(server);
    a.remove();
    b.remove();
  }
}, 30_000);

test('a store wrapper that keeps the chunks it saw (for a later audit) finds them intact', async () => {
  const dir = tempDir('spool-release-');
  const inner = resumableDiskStore({ directory: dir.path });
  const seen: Buffer[] = [];
  const store: ResumableStore = Object.assign(Object.create(inner) as ResumableStore, {
    name: 'audited',
    create: inner.create.bind(inner),
    get: inner.get.bind(inner),
    update: inner.update.bind(inner),
    read: inner.read.bind(inner),
    file: inner.file.bind(inner),
    remove: inner.remove.bind(inner),
    list: inner.list.bind(inner),
    concatenate: inner.concatenate.bind(inner),
    append(upload: Parameters<ResumableStore['append']>[0], stream: Readable, context: Parameters<ResumableStore['append']>[2]) {
      // A tee: the store reads one branch, the other keeps the chunks (an audit log, a later virus scan).
      const one = new PassThrough();
      const two = new PassThrough();
      stream.pipe(one);
      stream.pipe(two);
      two.on('data', (chunk: Buffer) => void seen.push(chunk));
      return inner.append(upload, one, context);
    },
  });
  const middleware = resumable({ store, sweepInterval: 0 });
  const app = express();
  app.use('/files', middleware);
  const { url, server } = await serveApp(app);
  try {
    const data = randomBytes(4 * MiB + 3);
    const res = await upload(url, data);
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(data.length));
    expect(Buffer.concat(seen).length).toBe(data.length);
    expect(sha(Buffer.concat(seen))).toBe(sha(data));
  } finally {
    await middleware.close();
    await close(server);
    dir.remove();
  }
});
