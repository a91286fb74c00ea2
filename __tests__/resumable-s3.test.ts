import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import express from 'express';
import { MemoryBudget, resumable, s3ResumableStore, type Resumable, type ResumableOptions, type ResumableS3Options } from '../lib/index';
import { close } from './helpers/app';
import { patternChunks, patternSha256 } from './helpers/multipart';
import { OCTETS, request, sha256Of, TUS, tusUpload, type Completed } from './helpers/resumable';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
/**
 * A byte stream of the pattern, generated as it is read. Not object mode (Readable.from's default for a
 * generator): tus-js-client's stream source then reads `chunkSize` bytes per request instead of one 64 KiB
 * object per request.
 */
const bytesOf = (source: { size: number; seed: number }) => Readable.from(patternChunks(source), { objectMode: false });
const retryForever = { retryDelays: [0, 10, 20, 50, 100, 200, 400], onShouldRetry: () => true };

let client: S3Client;
let bucket: string;
useTestBucket((c, b) => {
  client = c;
  bucket = b;
});

interface S3Server {
  url: string;
  endpoint: string;
  prefix: string;
  middleware: Resumable;
  completed: Completed[];
  /** Closes the server (every connection), then a new middleware and a new store over the same bucket + prefix. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

let serial = 0;

/** `resumable()` at /files on s3ResumableStore in a prefix of its own; completed uploads are read back. */
async function startS3(options: ResumableOptions = {}, store: Partial<ResumableS3Options> = {}): Promise<S3Server> {
  const prefix = `t${++serial}-${randomBytes(3).toString('hex')}/`;
  const completed: Completed[] = [];
  const build = async (port = 0) => {
    const middleware = resumable({
      store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB', ...store }),
      sweepInterval: 0,
      limits: { fileSize: '1GiB' },
      sha256: true, // every upload's whole-file digest is checked (the option's default is off)
      ...options,
      onComplete: async (file) => {
        completed.push({ file, sha256: file.sha256, size: file.size, readBack: await sha256Of(file.stream()) });
      },
    });
    const app = express();
    app.use('/files', middleware);
    const server = await new Promise<http.Server>((done) => {
      const s = app.listen(port, '127.0.0.1', () => done(s));
    });
    return { middleware, server };
  };
  let current = await build();
  const port = (current.server.address() as AddressInfo).port;
  const srv: S3Server = {
    url: `http://127.0.0.1:${port}`,
    endpoint: `http://127.0.0.1:${port}/files`,
    prefix,
    middleware: current.middleware,
    completed,
    async restart() {
      current.middleware.close();
      await close(current.server);
      // A process that stops lets its last appends record what they stored (or dies before they can: the
      // state then has less). Without this pause the old middleware in this process would still be writing
      // the state the new one reads, as two processes on one upload would — which the store does not support.
      await new Promise((r) => setTimeout(r, 1500));
      current = await build(port);
      srv.middleware = current.middleware;
    },
    async close() {
      current.middleware.close();
      await close(current.server);
    },
  };
  return srv;
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let ContinuationToken: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken }));
    keys.push(...(page.Contents ?? []).map((o) => o.Key!.slice(prefix.length)));
    ContinuationToken = page.NextContinuationToken;
  } while (ContinuationToken);
  return keys.sort();
}

/** Keys with state numbers and tail names folded: `<id>.state.0000000003` → `<id>.state`, `<id>.tail.<hex>` → `<id>.tail`; unique, sorted. */
function shapes(keys: string[]): string[] {
  return [...new Set(keys.map((key) => key.replace(/\.state\.\d{10}$/, '.state').replace(/\.tail\.[0-9a-f]+$/, '.tail')))].sort();
}

/** A completed upload's keys: the object and exactly one state. */
function expectCompletedKeys(keys: string[], id: string): void {
  expect(keys).toHaveLength(2);
  expect(shapes(keys)).toEqual([id, `${id}.state`]);
}

async function openUploads(prefix: string): Promise<string[]> {
  return (await listOpenMultipartUploads(client, bucket)).map((u) => u.Key!).filter((key) => key.startsWith(prefix));
}

/** After completion: the object and its state, nothing else (no tail), no open multipart upload; after remove: nothing. */
async function expectCompletedThenRemoved(srv: S3Server, done: Completed, size: number): Promise<void> {
  const id = (done.file as unknown as { key: string }).key.slice(srv.prefix.length);
  expectCompletedKeys(await keysUnder(srv.prefix), id);
  expect(await openUploads(srv.prefix)).toEqual([]);
  const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: srv.prefix + id }));
  expect(head.ContentLength).toBe(size);
  await done.file.remove();
  expect(await keysUnder(srv.prefix)).toEqual([]);
  expect(await openUploads(srv.prefix)).toEqual([]);
}

describe('s3ResumableStore: tus-js-client round trips', () => {
  let srv: S3Server;
  beforeEach(async () => {
    srv = await startS3();
  });
  afterEach(() => srv.close());

  test.each([0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1])('%i bytes (1 MiB requests) arrive byte-exact as one object; no tail or open upload left', async (size) => {
    const data = randomBytes(size);
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: MiB, metadata: { filename: 'a.bin' } });
    expect(srv.completed).toHaveLength(1);
    const [done] = srv.completed;
    expect(done.file.storage).toBe('s3');
    expect(done.size).toBe(size);
    expect(done.sha256).toBe(sha(data));
    expect(done.readBack).toBe(sha(data));
    await expectCompletedThenRemoved(srv, done, size);
  });

  test('odd-sized appends (1 MiB + 7): the tail carries over many requests, parts stay >= 5 MiB', async () => {
    const data = randomBytes(23 * MiB + 123);
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: MiB + 7 });
    const [done] = srv.completed;
    expect(done.readBack).toBe(sha(data));
    expect(done.sha256).toBe(sha(data));
    await expectCompletedThenRemoved(srv, done, data.length);
  });

  test('creation-with-upload, deferred length and concatenation (partials below one part)', async () => {
    const data = randomBytes(7 * MiB + 5);
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: 3 * MiB, uploadDataDuringCreation: true });
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: 3 * MiB, uploadLengthDeferred: true });
    await tusUpload(data, { endpoint: srv.endpoint, parallelUploads: 3 });
    expect(srv.completed.map((c) => c.readBack)).toEqual([sha(data), sha(data), sha(data)]);
    expect(srv.completed.map((c) => c.sha256)).toEqual([sha(data), sha(data), sha(data)]);
    expect(await openUploads(srv.prefix)).toEqual([]);
    expect((await keysUnder(srv.prefix)).filter((key) => key.includes('.tail.'))).toEqual([]);
  });

  test('concatenation of partials above one part (UploadPartCopy)', async () => {
    const data = randomBytes(19 * MiB + 3);
    await tusUpload(data, { endpoint: srv.endpoint, parallelUploads: 2 });
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(await openUploads(srv.prefix)).toEqual([]);
  });

  test('DELETE of an unfinished upload removes its multipart upload, tail and state', async () => {
    const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 20 * MiB });
    const url = srv.url + created.headers.location!;
    const patch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, randomBytes(7 * MiB));
    expect(patch.headers['upload-offset']).toBe(String(7 * MiB));
    const id = created.headers.location!.split('/').pop()!;
    expect(shapes(await keysUnder(srv.prefix))).toEqual([`${id}.state`, `${id}.tail`]);
    expect(await openUploads(srv.prefix)).toHaveLength(1);
    expect((await request(url, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(srv.prefix)).toEqual([]);
    expect(await openUploads(srv.prefix)).toEqual([]);
    expect((await request(url, 'HEAD', TUS)).status).toBe(404);
  });
});

describe('s3ResumableStore: expiry', () => {
  test('sweep() removes expired unfinished uploads (multipart upload, tail, state) and keeps completed ones', async () => {
    const srv = await startS3({ expiration: 4000 }); // long enough that a loaded machine creates them in time
    try {
      const make = async (length: number, body: Buffer) => {
        const res = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': length }, body);
        expect(res.status).toBe(201);
        return srv.url + res.headers.location!;
      };
      const unfinished = await make(20 * MiB, randomBytes(6 * MiB)); // a part and a tail
      const small = await make(10, Buffer.from('abc')); // a tail only
      const finished = await make(3, Buffer.from('xyz'));
      expect(await openUploads(srv.prefix)).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 4100));
      expect((await request(unfinished, 'HEAD', TUS)).status).toBe(410);
      expect(await srv.middleware.sweep()).toBe(2);
      expect((await request(unfinished, 'HEAD', TUS)).status).toBe(404);
      expect((await request(small, 'HEAD', TUS)).status).toBe(404);
      expect((await request(finished, 'HEAD', TUS)).status).toBe(200);
      const id = finished.split('/').pop()!;
      expectCompletedKeys(await keysUnder(srv.prefix), id);
      expect(await openUploads(srv.prefix)).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});

describe('s3ResumableStore: large, restarted, cut', () => {
  test('256 MiB streamed from a generator (16 MiB requests): byte-exact, one object', async () => {
    const srv = await startS3();
    try {
      const source = { size: 256 * MiB, seed: 3 };
      const t0 = process.hrtime.bigint();
      await tusUpload(bytesOf(source), { endpoint: srv.endpoint, uploadSize: source.size, chunkSize: 16 * MiB });
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      process.stderr.write(`[resumable-s3] 256 MiB in ${seconds.toFixed(1)} s: ${(256 / seconds).toFixed(0)} MiB/s\n`);
      const [done] = srv.completed;
      expect(done.sha256).toBe(patternSha256(source));
      expect(done.readBack).toBe(patternSha256(source));
      await expectCompletedThenRemoved(srv, done, source.size);
      expect(srv.middleware.memoryBudget.used).toBe(0);
    } finally {
      await srv.close();
    }
  }, 300_000);

  test('server restarted mid-upload (new middleware, new store, same bucket + prefix): resumes, byte-exact', async () => {
    const srv = await startS3();
    try {
      const source = { size: 48 * MiB + 11, seed: 9 };
      let restarted = false;
      const { errors } = await tusUpload(bytesOf(source), {
        endpoint: srv.endpoint,
        uploadSize: source.size,
        chunkSize: 8 * MiB,
        ...retryForever,
        retryDelays: [0, 100, 200, 400, 800, 1000, 1000, 1000, 2000, 2000], // the server is away for 1.5 s
        onProgress: (sent) => {
          if (!restarted && sent > 20 * MiB) {
            restarted = true;
            void srv.restart();
          }
        },
      });
      expect(restarted).toBe(true);
      expect(errors).toBeGreaterThanOrEqual(1);
      const [done] = srv.completed;
      // The running hash died with the first middleware: the digest was read back from S3.
      expect(done.sha256).toBe(patternSha256(source));
      expect(done.readBack).toBe(patternSha256(source));
      await expectCompletedThenRemoved(srv, done, source.size);
    } finally {
      await srv.close();
    }
  }, 120_000);

  test('a proxy cutting the connection at random offsets >= 50 times: byte-exact, nothing left over', async () => {
    const srv = await startS3();
    const source = { size: 96 * MiB + 5, seed: 14 };
    const proxy = await startCuttingProxy(srv.url, { minBytes: 64 * 1024, maxBytes: 4 * MiB, maxCuts: 55 });
    try {
      const { errors } = await tusUpload(bytesOf(source), {
        endpoint: `${proxy.url}/files`,
        uploadSize: source.size,
        chunkSize: 8 * MiB,
        ...retryForever,
      });
      expect(proxy.cuts).toBeGreaterThanOrEqual(50);
      expect(errors).toBeGreaterThanOrEqual(50);
      const [done] = srv.completed;
      expect(done.sha256).toBe(patternSha256(source));
      expect(done.readBack).toBe(patternSha256(source));
      await expectCompletedThenRemoved(srv, done, source.size);
    } finally {
      await proxy.close();
      await srv.close();
    }
  }, 300_000);
});

describe('s3ResumableStore: atomic appends', () => {
  const b64 = (data: Buffer) => createHash('sha1').update(data).digest('base64');

  test('a checksum mismatch leaves the offset (parts and tail) unchanged, also past a part boundary', async () => {
    const srv = await startS3();
    try {
      const data = randomBytes(17 * MiB + 9);
      const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': data.length });
      const url = srv.url + created.headers.location!;
      const patch = (offset: number, body: Buffer, checksum = b64(body)) =>
        request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset, 'Upload-Checksum': `sha1 ${checksum}` }, body);
      const offsetNow = async () => Number((await request(url, 'HEAD', TUS)).headers['upload-offset']);
      const wrong = b64(Buffer.from('not these bytes'));
      expect((await patch(0, data.subarray(0, 2 * MiB))).status).toBe(204); // a tail
      expect((await patch(2 * MiB, data.subarray(2 * MiB, 3 * MiB), wrong)).status).toBe(460); // tail only
      expect(await offsetNow()).toBe(2 * MiB);
      expect((await patch(2 * MiB, data.subarray(2 * MiB, 14 * MiB), wrong)).status).toBe(460); // tail + two parts sent
      expect(await offsetNow()).toBe(2 * MiB);
      expect((await patch(2 * MiB, data.subarray(2 * MiB, 8 * MiB))).status).toBe(204); // a part
      expect(await offsetNow()).toBe(8 * MiB);
      expect((await patch(8 * MiB, data.subarray(8 * MiB, 15 * MiB), wrong)).status).toBe(460);
      expect(await offsetNow()).toBe(8 * MiB);
      // A new store (restart) sees the same: nothing of the refused appends was committed.
      await srv.restart();
      expect(await offsetNow()).toBe(8 * MiB);
      expect((await patch(8 * MiB, data.subarray(8 * MiB))).status).toBe(204);
      const [done] = srv.completed;
      expect(done.readBack).toBe(sha(data));
      await expectCompletedThenRemoved(srv, done, data.length);
    } finally {
      await srv.close();
    }
  }, 60_000);
});

describe('s3ResumableStore: memory', () => {
  test('8 concurrent uploads share a budget of ~2 parts: never above the limit, 0 after', async () => {
    const partSize = 5 * MiB;
    const budget = new MemoryBudget(2 * partSize + 8 * 64 * 1024);
    const srv = await startS3({ memoryBudget: budget, admissionTimeout: 120_000 });
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, budget.used)), 2);
    try {
      const sources = Array.from({ length: 8 }, (_, i) => ({ size: 16 * MiB + i * 333, seed: 20 + i }));
      const t0 = Date.now();
      await Promise.all(
        sources.map((source) =>
          tusUpload(bytesOf(source), { endpoint: srv.endpoint, uploadSize: source.size, chunkSize: 8 * MiB, ...retryForever }),
        ),
      );
      const seconds = (Date.now() - t0) / 1000;
      process.stderr.write(
        `[resumable-s3] 8 × 16 MiB concurrently in ${seconds.toFixed(1)} s (${((8 * 16) / seconds).toFixed(0)} MiB/s), ` +
          `peak budget use ${(peak / MiB).toFixed(2)} of ${(budget.limit / MiB).toFixed(2)} MiB\n`,
      );
      expect(peak).toBeLessThanOrEqual(budget.limit);
      expect(peak).toBeGreaterThanOrEqual(partSize); // parts really were held on the budget
      expect(budget.used).toBe(0);
      expect(srv.completed.map((c) => c.readBack).sort()).toEqual(sources.map(patternSha256).sort());
      expect(await openUploads(srv.prefix)).toEqual([]);
      expect((await keysUnder(srv.prefix)).filter((key) => key.includes('.tail.'))).toEqual([]);
    } finally {
      clearInterval(sampler);
      await srv.close();
    }
  }, 180_000);
});

describe('s3ResumableStore: local disk', () => {
  /**
   * The server runs in a child process whose TMPDIR and cwd are empty directories of their own. The
   * kernel's per-process I/O accounting (/proc/<pid>/io write_bytes: bytes this process caused to be
   * written to storage, counted when pages are dirtied, so without waiting for writeback) must not move
   * during the upload, and both directories must stay empty. The meter is then shown to work: the child
   * writes 1 MiB, and write_bytes rises by at least that.
   */
  test('an upload through s3ResumableStore writes zero bytes to local disk', async () => {
    const sandbox = mkdtempSync(join(tmpdir(), 'spool-s3-nodisk-'));
    const childTmp = join(sandbox, 'tmp');
    const childCwd = join(sandbox, 'cwd');
    for (const dir of [childTmp, childCwd]) require('node:fs').mkdirSync(dir);
    const prefix = `nodisk-${randomBytes(3).toString('hex')}/`;
    const hook = `
      const ts = require(${JSON.stringify(require.resolve('typescript'))});
      require.extensions['.ts'] = (module, filename) => {
        const source = require('node:fs').readFileSync(filename, 'utf8');
        const { outputText } = ts.transpileModule(source, { fileName: filename, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
        module._compile(outputText, filename);
      };
      require(${JSON.stringify(resolve(__dirname, 'helpers/resumable-s3-child.ts'))});`;
    const child = spawn(process.execPath, ['-e', hook, bucket, prefix], {
      cwd: childCwd,
      env: { ...process.env, TMPDIR: childTmp, NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const port = await new Promise<number>((ready, fail) => {
        let out = '';
        child.stdout!.on('data', (chunk: Buffer) => {
          out += chunk;
          const match = /ready (\d+)/.exec(out);
          if (match) ready(Number(match[1]));
        });
        child.once('exit', (code) => fail(new Error(`child exited with ${code}`)));
      });
      const writeBytes = () => Number(/write_bytes: (\d+)/.exec(readFileSync(`/proc/${child.pid}/io`, 'utf8'))![1]);
      const source = { size: 40 * MiB + 3, seed: 31 };
      const before = writeBytes();
      await tusUpload(bytesOf(source), { endpoint: `http://127.0.0.1:${port}/files`, uploadSize: source.size, chunkSize: 3 * MiB });
      const after = writeBytes();
      process.stderr.write(`[resumable-s3] local disk write_bytes during a 40 MiB upload: ${after - before}\n`);
      expect(after - before).toBe(0);
      expect(readdirSync(childTmp)).toEqual([]);
      expect(readdirSync(childCwd)).toEqual([]);
      const keys = await keysUnder(prefix);
      expect(keys).toHaveLength(2);
      const id = keys.find((key) => !key.includes('.state.'))!;
      const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: prefix + id }));
      expect(await sha256Of(object.Body as Readable)).toBe(patternSha256(source));
      // The meter works: a 1 MiB write (fsynced) by the same process shows.
      await request(`http://127.0.0.1:${port}/calibrate`, 'GET', {});
      expect(writeBytes() - after).toBeGreaterThanOrEqual(MiB);
    } finally {
      child.kill();
      rmSync(sandbox, { recursive: true, force: true });
    }
  }, 120_000);
});

interface CuttingProxy {
  url: string;
  readonly cuts: number;
  close(): Promise<void>;
}

/** A loopback TCP proxy that cuts each connection after a random number of client → server bytes, `maxCuts` times. */
async function startCuttingProxy(target: string, options: { minBytes: number; maxBytes: number; maxCuts: number }): Promise<CuttingProxy> {
  const net = await import('node:net');
  const { hostname, port } = new URL(target);
  const sockets = new Set<import('node:net').Socket>();
  let cuts = 0;
  const server = net.createServer((socket) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(socket).add(upstream);
    const allowance = options.minBytes + Math.floor(Math.random() * (options.maxBytes - options.minBytes));
    let forwarded = 0;
    const drop = () => {
      socket.destroy();
      upstream.destroy();
      sockets.delete(socket);
      sockets.delete(upstream);
    };
    socket.on('data', (chunk: Buffer) => {
      if (cuts < options.maxCuts && forwarded + chunk.length > allowance) {
        cuts++;
        socket.pause();
        upstream.write(chunk.subarray(0, Math.max(0, allowance - forwarded)), drop);
        return;
      }
      forwarded += chunk.length;
      if (!upstream.write(chunk)) socket.pause();
    });
    upstream.on('drain', () => socket.resume());
    upstream.pipe(socket);
    socket.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get cuts() {
      return cuts;
    },
    close: () =>
      new Promise((done) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => done());
      }),
  };
}
