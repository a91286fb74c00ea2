import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import Module from 'node:module';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import express, { type ErrorRequestHandler } from 'express';
import { diskEngine, memoryEngine, s3Engine, spool, type Spool, type StorageEngine, type StoredFile } from '../lib';
import { close, eventually, jsonErrors, listen, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody } from './helpers/multipart';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';

// ≥ 200 client disconnects at random byte offsets per engine configuration.
const ABORTS = Number(process.env.ABORT_RUNS ?? 200);
const MiB = 1024 * 1024;

/** A tiny seeded PRNG, so a failing offset can be replayed. */
function prng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
}

function abortAt(server: Server, body: Buffer, offset: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1', () => {
      const head = `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\n\r\n`;
      socket.write(head);
      socket.write(body.subarray(0, offset), () => {
        // Give the server a moment to start on what it got, then vanish.
        setTimeout(() => socket.destroy(), 2);
      });
    });
    socket.on('error', () => undefined).on('close', () => resolve());
  });
}

/**
 * Node reports a listener leak (more than 10 listeners for one event on one EventEmitter or AbortSignal) as
 * a 'warning' on the real process. Jest gives each test file its own copy of `process` with its own
 * listeners, so `process.on('warning')` here would never hear it; the module loader hands out the real one.
 */
const realProcess = (Module as unknown as { _load(request: string): NodeJS.Process })._load('process');
const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);
beforeAll(() => realProcess.on('warning', onWarning));
afterAll(() => realProcess.off('warning', onWarning));
const leakWarnings = (since: number) => warnings.slice(since).filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message);

/** Listener counts per event: a per-request listener left behind on a long-lived emitter shows up here. */
function listenerCounts(emitter: EventEmitter): Record<string, number> {
  return Object.fromEntries(emitter.eventNames().map((name) => [String(name), emitter.listenerCount(name)]));
}

test('the leak check hears a leak: 11 listeners on one EventEmitter or one AbortSignal', async () => {
  const since = warnings.length;
  const emitter = new EventEmitter();
  const controller = new AbortController();
  for (let i = 0; i < 11; i++) {
    emitter.on('close', () => undefined);
    controller.signal.addEventListener('abort', () => undefined);
  }
  await eventually(() => expect(leakWarnings(since)).toHaveLength(2));
  warnings.length = since; // deliberate: not a leak of the storms below
});

/** Writes the stream to a new file, chunk by chunk; removes it and rethrows when the stream fails. */
async function writeChunks(stream: Readable, directory: string, perChunk?: () => Promise<unknown>): Promise<StoredFile> {
  const path = join(directory, randomUUID());
  const handle = await open(path, 'wx');
  try {
    for await (const chunk of stream) {
      await perChunk?.();
      await handle.write(chunk as Buffer);
    }
  } catch (err) {
    await handle.close();
    await rm(path, { force: true });
    throw err;
  }
  await handle.close();
  return { storage: 'custom', details: { path }, stream: () => createReadStream(path), remove: () => rm(path, { force: true }) };
}

/** Reads its stream to the end and never looks at the AbortSignal: only the stream can stop it. */
const signalBlindEngine = (directory: string): StorageEngine => ({
  name: 'signal-blind',
  store: (stream) => writeChunks(stream, directory),
});

/** Waits a timer per chunk, so aborts land while it is behind the parser. */
const slowEngine = (directory: string): StorageEngine => ({
  name: 'slow',
  store: (stream) => writeChunks(stream, directory, () => sleep(1)),
});

const connections = (server: Server) =>
  new Promise<number>((resolve, reject) => server.getConnections((err, count) => (err ? reject(err) : resolve(count))));

/**
 * Aborts ABORTS requests at random offsets, then checks that every one of them reached the middleware and
 * settled (got to the route or the error handler), the server holds no connection, the budget is back to 0,
 * `check` (what is left in storage) passes, and no listener was left behind on the process or the server.
 */
async function storm(upload: Spool, body: Buffer, seed: number, check: () => Promise<void>): Promise<void> {
  let started = 0;
  let settled = 0;
  const app = express();
  app.post(
    '/upload',
    (_req, _res, next) => {
      started++;
      next();
    },
    upload.any(),
    (_req, res) => {
      settled++;
      res.json({});
    },
  );
  app.use(((err, req, res, next) => {
    settled++;
    jsonErrors(err, req, res, next);
  }) as ErrorRequestHandler);
  const server = await listen(app);
  let accepted = 0;
  server.on('connection', () => accepted++);
  const since = warnings.length;
  const processBefore = listenerCounts(process);
  const realProcessBefore = listenerCounts(realProcess);
  const serverBefore = listenerCounts(server);
  const random = prng(seed);
  try {
    for (let i = 0; i < ABORTS; i += 8) {
      const batch = Array.from({ length: Math.min(8, ABORTS - i) }, () => abortAt(server, body, Math.floor(random() * body.length)));
      await Promise.all(batch);
    }
    // The clients are gone long before the server has accepted them all (they wait in the listen backlog
    // while it works): wait for every request to arrive and settle, not just the ones seen so far.
    await eventually(async () => {
      expect({ accepted, started, settled }).toEqual({ accepted: ABORTS, started: ABORTS, settled: ABORTS });
      expect(await connections(server)).toBe(0);
    }, 30_000);
    await eventually(check, 20_000);
    await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    expect(upload.memoryBudget.waiting).toBe(0);
    expect(listenerCounts(server)).toEqual(serverBefore);
    expect(listenerCounts(process)).toEqual(processBefore);
    expect(listenerCounts(realProcess)).toEqual(realProcessBefore);
    expect(leakWarnings(since)).toEqual([]);
  } finally {
    await close(server);
  }
}

const localConfigs: [string, (dir: string) => StorageEngine | { threshold: number; rollover: StorageEngine }][] = [
  ['memory', () => memoryEngine()],
  ['disk', (dir) => diskEngine({ directory: dir })],
  ['spool → disk', (dir) => ({ threshold: 64 * 1024, rollover: diskEngine({ directory: dir }) })],
  ['an engine that ignores the AbortSignal', (dir) => signalBlindEngine(dir)],
  ['a slow engine (a timer per chunk)', (dir) => slowEngine(dir)],
];

describe.each(localConfigs)(`%s: ${ABORTS} aborts at random offsets`, (_label, make) => {
  test('every request settles: 0 open connections, 0 files left, budget 0, no listener left behind', async () => {
    const dir = tempDir();
    try {
      const engine = make(dir.path);
      const upload = spool({ ...('store' in engine ? { storage: engine } : engine), memoryBudget: '256MiB' });
      const body = multipartBody([
        { name: 'a', value: 'x'.repeat(100) },
        { name: 'f1', filename: 'a', data: Buffer.alloc(200 * 1024, 1) },
        { name: 'f2', filename: 'b', data: Buffer.alloc(30 * 1024, 2) },
        { name: 'f3', filename: 'c', data: Buffer.alloc(3 * 1024 * 1024, 3) },
      ]);
      await storm(upload, body, 42, async () => expect(dir.files()).toEqual([]));
    } finally {
      dir.remove();
    }
  }, 120_000);
});

describe(`spool → S3: ${ABORTS} aborts at random offsets`, () => {
  let client: S3Client;
  let bucket: string;
  useTestBucket((c, b) => ((client = c), (bucket = b)));

  test('every request settles: 0 objects, 0 open multipart uploads, budget 0, no listener left behind', async () => {
    const upload = spool({ threshold: MiB, rollover: s3Engine({ client, bucket, prefix: 'storm/', partSize: 5 * MiB, queueSize: 2 }) });
    const body = multipartBody([
      { name: 'small', filename: 's', data: Buffer.alloc(100 * 1024, 1) },
      { name: 'big', filename: 'b', data: Buffer.alloc(12 * MiB, 2) },
    ]);
    await storm(upload, body, 7, async () => {
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'storm/' }));
      expect(listed.KeyCount ?? 0).toBe(0);
    });
  }, 300_000);
});
