import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import request from 'supertest';
import { fromMulterStorage, spool } from '../lib';
import { BatchedFileWriter } from '../engines/batched-file-writer';
import { PartReader } from '../engines/s3-parts';
import { streamInto } from '../lib/core/chunk-sink';
import { collectChunks, putBack } from '../lib/core/collect-chunks';
import { FileTap } from '../lib/core/file-tap';
import { MemoryBudget } from '../lib/core/memory-budget';
import { echoApp, tempDir } from './helpers/app';
import { sha256 } from './helpers/multipart';
/* eslint-disable-next-line @typescript-eslint/no-require-imports */
const multer = require('multer');

// Review of 7e6992c (ChunkSink / FileTap.forward / unread). Each test fails on that commit.
const KiB = 1024;
const tick = () => new Promise((r) => setImmediate(r));

const dir = tempDir('review-chunk-sink-');
afterAll(() => dir.remove());

function within<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

/**
 * A parser stream whose last chunk and end were both buffered before the tap read it (what busboy's file
 * stream holds while an async fileFilter runs): reading the last chunk queues its 'end' on the next tick,
 * even though the collect pauses it right there.
 */
function bufferedSource(chunks: Buffer[]): Readable {
  const source = new Readable({ read() {} });
  for (const chunk of chunks) source.push(chunk);
  source.push(null);
  return source;
}

/** The spool's rollover step: collect up to `threshold`, overflow on the LAST chunk, put back. */
async function rolledOver(chunks: Buffer[], threshold: number): Promise<FileTap> {
  const tap = new FileTap(bufferedSource(chunks), false);
  tap.on('error', () => undefined);
  const lease = new MemoryBudget('16MiB').lease();
  const collected = await collectChunks(tap, lease, threshold);
  expect(collected.overflow).toBe(chunks[chunks.length - 1]);
  lease.release(collected.size);
  putBack(tap, collected);
  return tap;
}

describe('unread() after the source has already ended: the tap has pushed EOF, the pending chunks never come out', () => {
  test('read as a Readable (`for await`) after putBack: every byte', async () => {
    const chunks = [randomBytes(10 * KiB), randomBytes(10 * KiB)];
    const tap = await rolledOver(chunks, 10 * KiB);
    const read: Buffer[] = [];
    for await (const chunk of tap) read.push(chunk as Buffer);
    expect(tap.bytes).toBe(20 * KiB);
    expect(Buffer.concat(read).length).toBe(20 * KiB); // got 0
  });

  test("the S3 engine's PartReader after putBack: one last part with every byte", async () => {
    const chunks = [randomBytes(10 * KiB), randomBytes(10 * KiB)];
    const tap = await rolledOver(chunks, 10 * KiB);
    const reader = new PartReader(tap, { partSize: 5 * 1024 * KiB, memory: new MemoryBudget('16MiB').lease(), signal: new AbortController().signal });
    const part = await within(reader.next());
    expect(part.last).toBe(true);
    expect(sha256(part.body)).toBe(sha256(Buffer.concat(chunks))); // an empty part: S3 would store 0 bytes
  });

  test('over HTTP: default threshold, async fileFilter, a budget that refuses the first chunk, multer diskStorage rollover', async () => {
    const data = randomBytes(20 * KiB);
    const upload = spool({
      memoryBudget: '200KiB', // the request's share fits; the file's chunk does not: it rolls over at once
      fileFilter: (_req, _file, cb) => void setImmediate(() => cb(null, true)),
      rollover: fromMulterStorage(multer.diskStorage({ destination: dir.path })),
    });
    const res = await request(echoApp(upload.single('f'))).post('/upload').attach('f', data, 'a.bin');
    expect(res.status).toBe(200);
    expect(readFileSync(res.body.file.path).length).toBe(data.length); // 200 OK with an empty file
    expect(sha256(readFileSync(res.body.file.path))).toBe(sha256(data));
  });
});

test('forward() on a tap whose source has ended, with a chunk larger than two batches: the whole file', async () => {
  // Found in review: forward() used to read() what the tap had buffered, and emptying an ended Readable
  // made Node emit 'end' and autoDestroy the tap while the writer still held the rest of the chunk. The tap
  // now holds nothing until a consumer comes.
  const data = randomBytes(300 * KiB);
  const tap = new FileTap(bufferedSource([data]), false);
  tap.on('error', () => undefined);
  await tick();
  await tick();
  expect(tap.readableLength).toBe(0);
  expect(tap.forwardable).toBe(true);
  const path = join(dir.path, 'ended-before-forward');
  const handle = await open(path, 'wx');
  await within(streamInto(tap, new BatchedFileWriter(handle, 64 * KiB))); // rejects: Premature close
  expect(sha256(readFileSync(path))).toBe(sha256(data));
});

test('BatchedFileWriter: abort() while end() waits for its last write settles end() too', async () => {
  const handle = await open(join(dir.path, 'abort-after-end'), 'wx');
  const writer = new BatchedFileWriter(handle, 64 * KiB);
  expect(writer.write(randomBytes(10 * KiB), () => undefined)).toBe(true);
  const ended = writer.end().then(
    () => 'resolved',
    () => 'rejected',
  );
  await within(writer.abort());
  await expect(within(ended)).resolves.toMatch(/resolved|rejected/); // end() never settles
});

test('streamInto() on a stream that has already ended (autoDestroy off) settles, as pipeline() does', async () => {
  const source = new Readable({ read() {}, autoDestroy: false });
  source.push(null);
  source.resume();
  await new Promise((r) => source.once('end', r));
  let ended = false;
  const sink = { write: () => true, end: async () => void (ended = true), abort: async () => undefined, failed: () => undefined };
  await within(streamInto(source, sink), 500); // waits for an 'end' that was emitted already
  expect(ended).toBe(true);
});
