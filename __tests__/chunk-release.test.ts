/**
 * A resumable append gives each request chunk's memory back as soon as the store has copied it
 * (lib/core/chunk-release.ts: ArrayBuffer.prototype.transfer on Node 21+, a transfer to a closed
 * MessagePort on Node 20; .ci/run runs this file on Node 20, 22 and 24). What is checked: the chunks the
 * append read are emptied — on a fast disk, on a slow one (the writer holds a chunk until a batch is free),
 * on S3 — while the stored bytes stay byte-exact, and a chunk some other listener of the request also got
 * is never touched.
 */
import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, resumableDiskStore, s3ResumableStore, type Resumable, type UploadedFile } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, request, sha256Of, TUS } from './helpers/resumable';
import { s3TestClient, storedSha256, useTestBucket } from './setup/s3-env';
// The module object itself, so that its `writev` can be slowed down (as resumable-disk-batching does).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let bucket: string;
useTestBucket((_client, b) => {
  bucket = b;
});

interface Read {
  readonly chunk: Buffer;
  /** The chunk was the whole of its ArrayBuffer when read: the only kind that can be given back. */
  readonly whole: boolean;
}

/** An app whose middleware records every chunk the request handed to `read()`, then the upload middleware. */
async function serve(middleware: Resumable, options: { alsoListen?: Buffer[] } = {}) {
  const reads: Read[] = [];
  const app = express();
  app.use((req, _res, next) => {
    if (req.method !== 'PATCH') return next();
    // Another reader of the same body (a raw-body hash, a logger): its chunks must stay as they came. It
    // listens from the first read on (one listening before would take the body in flowing mode).
    const seen = options.alsoListen;
    const read = req.read.bind(req);
    req.read = (n?: number) => {
      if (seen && req.listenerCount('data') === 0) req.on('data', (chunk: Buffer) => void seen.push(chunk));
      const chunk = read(n) as Buffer | null;
      if (chunk) reads.push({ chunk, whole: chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length });
      return chunk;
    };
    next();
  });
  app.use('/files', middleware);
  const server: http.Server = await listen(app);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    reads,
    async upload(data: Buffer): Promise<void> {
      const created = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
      expect(created.status).toBe(201);
      const res = await request(url + created.headers.location!, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
      expect(res.status).toBe(204);
      expect(res.headers['upload-offset']).toBe(String(data.length));
    },
    async close() {
      middleware.close();
      await close(server);
    },
  };
}

/** Completed uploads, each read back through the store. */
function completions() {
  const done: { file: UploadedFile; readBack: string }[] = [];
  const onComplete = async (file: UploadedFile) => void done.push({ file, readBack: await sha256Of(file.stream()) });
  return { done, onComplete };
}

function expectReleased(reads: readonly Read[]): void {
  const whole = reads.filter((r) => r.whole);
  // The request's socket reads of a large body are whole buffers of their own.
  expect(whole.length).toBeGreaterThan(reads.length / 2);
  // All but the first read: what the request held before the append's stream came is not its alone (an
  // app may have peeked at it), so that one is left to the GC.
  expect(whole.filter((r) => r !== reads[0]).every((r) => r.chunk.length === 0)).toBe(true);
  // and never a chunk that shares its memory with something else
  expect(reads.filter((r) => r.chunk.length === 0).every((r) => r.whole)).toBe(true);
}

afterEach(() => jest.restoreAllMocks());

test('disk store: every chunk of an 8 MiB append is given back once copied, and the file is byte-exact', async () => {
  const dir = tempDir('spool-release-');
  const { done, onComplete } = completions();
  const srv = await serve(resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0, onComplete }));
  try {
    const data = randomBytes(8 * MiB + 5);
    await srv.upload(data);
    expect(done).toHaveLength(1);
    expect(done[0].file.size).toBe(data.length);
    expect(done[0].readBack).toBe(sha(data));
    expectReleased(srv.reads);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('disk store on a slow disk: a chunk waiting for a free batch is given back once the rest is copied, byte-exact', async () => {
  const dir = tempDir('spool-release-');
  const { done, onComplete } = completions();
  const srv = await serve(resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0, onComplete }));
  // 10 ms per write: both batches fill while one is out, and chunks wait for the writer.
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  let waited = 0;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (...a: unknown[]) => void) => {
    waited++;
    setTimeout(() => real(fd, buffers, position, cb), 10);
  }) as never);
  try {
    const data = randomBytes(4 * MiB + 7);
    await srv.upload(data);
    expect(waited).toBeGreaterThan(0);
    expect(done).toHaveLength(1);
    expect(done[0].readBack).toBe(sha(data));
    expectReleased(srv.reads);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test("a chunk another 'data' listener of the request also got is left as it came (it and the file byte-exact)", async () => {
  const dir = tempDir('spool-release-');
  const { done, onComplete } = completions();
  const seen: Buffer[] = [];
  const srv = await serve(resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0, onComplete }), { alsoListen: seen });
  try {
    const data = randomBytes(8 * MiB + 5);
    await srv.upload(data);
    expect(done[0].readBack).toBe(sha(data));
    expect(sha(Buffer.concat(seen))).toBe(sha(data));
    expect(srv.reads.filter((r) => r.chunk.length === 0)).toHaveLength(0);
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('S3 store: the chunks of a 12 MiB append are given back once copied into the part buffers, and the object is byte-exact', async () => {
  const client = s3TestClient();
  const { done, onComplete } = completions();
  const srv = await serve(resumable({ store: s3ResumableStore({ client, bucket, prefix: 'release/' }), sweepInterval: 0, onComplete }));
  try {
    const data = randomBytes(12 * MiB + 3);
    await srv.upload(data);
    expect(done).toHaveLength(1);
    expect(done[0].readBack).toBe(sha(data));
    expect(await storedSha256(client, bucket, (done[0].file as unknown as { key: string }).key)).toBe(sha(data));
    // A chunk split across two part buffers keeps its second half for the next part: it is left to the GC.
    const whole = srv.reads.filter((r) => r.whole);
    const emptied = srv.reads.filter((r) => r.chunk.length === 0).length;
    expect(emptied).toBeGreaterThanOrEqual(whole.length - 2);
    expect(whole.length).toBeGreaterThan(srv.reads.length / 2);
  } finally {
    await srv.close();
    client.destroy();
  }
}, 60_000);
