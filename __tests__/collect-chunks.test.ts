import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { ChunkList, collectChunks, putBack } from '../lib/core/collect-chunks';
import { MemoryBudget } from '../lib/core/memory-budget';
import { tempDir } from './helpers/app';
import { sha256 } from './helpers/multipart';

const KiB = 1024;
const dir = tempDir('collect-chunks-');
afterAll(() => dir.remove());

/** A real file of random bytes, read back in `highWaterMark`-sized chunks. */
function fileSource(size: number, highWaterMark = 16 * KiB): { data: Buffer; open: () => Readable } {
  const data = randomBytes(size);
  const path = join(dir.path, `source-${size}-${highWaterMark}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(path, data);
  return { data, open: () => createReadStream(path, { highWaterMark }) };
}

async function streamSha256(stream: Readable): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** Rejects if `promise` has not settled within `ms` (a hang fails the test instead of timing it out). */
function within<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

describe('collectChunks', () => {
  test('collects a whole stream until it ends: same bytes, size reserved on the lease, no overflow', async () => {
    const source = fileSource(200 * KiB);
    const budget = new MemoryBudget('1MiB');
    const lease = budget.lease();
    const collected = await collectChunks(source.open(), lease, Infinity);
    expect(collected.overflow).toBeUndefined();
    expect(collected.size).toBe(source.data.length);
    expect(collected.chunks.length).toBeGreaterThan(1); // kept as they came, not joined
    expect(sha256(Buffer.concat(collected.chunks))).toBe(sha256(source.data));
    expect(lease.held).toBe(source.data.length);
    expect(budget.used).toBe(source.data.length);
  });

  test('an empty stream collects nothing and reserves nothing', async () => {
    const budget = new MemoryBudget(100);
    const collected = await within(collectChunks(Readable.from([]), budget.lease(), Infinity));
    expect(collected).toEqual({ chunks: [], size: 0 });
    expect(budget.used).toBe(0);
  });

  test('stops before passing maxBytes; putBack restores the exact byte order (sha256 of the re-read stream)', async () => {
    const source = fileSource(300 * KiB, 16 * KiB);
    const budget = new MemoryBudget('1MiB');
    const lease = budget.lease();
    const maxBytes = 100 * KiB; // not a multiple of the chunk size: the 7th chunk overflows
    const stream = source.open();
    const collected = await collectChunks(stream, lease, maxBytes);

    expect(collected.overflow).toBeInstanceOf(Buffer);
    expect(collected.size).toBe(6 * 16 * KiB);
    expect(collected.size + collected.overflow!.length).toBeGreaterThan(maxBytes);
    // Only the kept chunks are reserved, not the overflow.
    expect(lease.held).toBe(collected.size);
    // Collection let go of the stream, paused, for someone else to take over.
    expect(stream.isPaused()).toBe(true);
    expect(stream.listenerCount('data')).toBe(0);
    expect(stream.listenerCount('end')).toBe(0);
    expect(stream.listenerCount('close')).toBe(0);

    lease.release(collected.size);
    putBack(stream, collected);
    const reread = await streamSha256(stream);
    expect(reread.size).toBe(source.data.length);
    expect(reread.sha256).toBe(sha256(source.data));
    expect(budget.used).toBe(0);
  });

  test('putBack works when the very first chunk overflows (nothing kept)', async () => {
    const source = fileSource(64 * KiB, 16 * KiB);
    const stream = source.open();
    const lease = new MemoryBudget('1MiB').lease();
    const collected = await collectChunks(stream, lease, 10);
    expect(collected.chunks).toEqual([]);
    expect(collected.size).toBe(0);
    expect(collected.overflow?.length).toBe(16 * KiB);
    putBack(stream, collected);
    expect((await streamSha256(stream)).sha256).toBe(sha256(source.data));
  });

  test('a lease that refuses stops collection early; what was kept fits the budget and putBack restores the stream', async () => {
    const source = fileSource(256 * KiB, 16 * KiB);
    const budget = new MemoryBudget(40 * KiB); // room for two 16 KiB chunks, not three
    const lease = budget.lease();
    const stream = source.open();
    const collected = await collectChunks(stream, lease, Infinity);
    expect(collected.overflow?.length).toBe(16 * KiB);
    expect(collected.size).toBe(32 * KiB);
    expect(lease.held).toBe(32 * KiB);
    expect(budget.used).toBeLessThanOrEqual(budget.limit);

    lease.close();
    expect(budget.used).toBe(0);
    putBack(stream, collected);
    expect((await streamSha256(stream)).sha256).toBe(sha256(source.data));
  });

  test('a stream destroyed with an error rejects with that error and releases what was reserved', async () => {
    const budget = new MemoryBudget('1MiB');
    const lease = budget.lease();
    const stream = new PassThrough();
    const result = collectChunks(stream, lease, Infinity);
    stream.write(Buffer.alloc(1000, 1));
    stream.write(Buffer.alloc(500, 2));
    await new Promise((r) => setImmediate(r));
    expect(lease.held).toBe(1500); // reserved while collecting
    const boom = new Error('socket reset');
    stream.destroy(boom);
    await expect(within(result)).rejects.toBe(boom);
    expect(lease.held).toBe(0);
    expect(budget.used).toBe(0);
  });

  test('a stream destroyed without an error (premature close) rejects instead of hanging, and releases', async () => {
    const budget = new MemoryBudget('1MiB');
    const lease = budget.lease();
    const stream = new PassThrough();
    const result = collectChunks(stream, lease, Infinity);
    stream.write(Buffer.alloc(2000, 1));
    await new Promise((r) => setImmediate(r));
    expect(lease.held).toBe(2000);
    stream.destroy();
    await expect(within(result)).rejects.toThrow(/premature close/i);
    expect(budget.used).toBe(0);
  });

  // The core destroys a file stream when the request fails; an engine that awaits something of its own
  // (a quota check, a directory) before delegating to the memory or spool engine gets it already destroyed.
  test('a stream destroyed before collection starts rejects instead of hanging', async () => {
    const budget = new MemoryBudget('1MiB');
    const stream = new PassThrough();
    stream.on('error', () => undefined);
    stream.destroy(new Error('request failed'));
    await new Promise((r) => setImmediate(r)); // 'error' and 'close' have been emitted
    const outcome = await within(collectChunks(stream, budget.lease(), Infinity)).then(
      () => 'resolved',
      (err: Error) => err.message,
    );
    expect(outcome).not.toMatch(/still pending|resolved/);
    expect(budget.used).toBe(0);
  });

  test('an aborted signal rejects with its reason and releases what was reserved', async () => {
    const budget = new MemoryBudget('1MiB');
    const lease = budget.lease();
    const stream = new PassThrough();
    const controller = new AbortController();
    const result = collectChunks(stream, lease, Infinity, controller.signal);
    stream.write(Buffer.alloc(700));
    await new Promise((r) => setImmediate(r));
    const reason = new Error('request failed');
    controller.abort(reason);
    await expect(within(result)).rejects.toBe(reason);
    expect(budget.used).toBe(0);
    expect(stream.listenerCount('data')).toBe(0);
  });
});

describe('ChunkList', () => {
  test('small files are joined at once into an exact-size copy that does not pin the source buffer', () => {
    const socketBuffer = randomBytes(1024 * KiB);
    const slice = socketBuffer.subarray(1000, 1000 + 100 * KiB);
    const list = new ChunkList([slice], slice.length);
    const joined = list.chunks();
    expect(joined).toHaveLength(1);
    expect(joined[0].equals(slice)).toBe(true);
    expect(joined[0].buffer).not.toBe(socketBuffer.buffer);
    expect(joined[0].buffer.byteLength).toBeLessThan(socketBuffer.length);
  });

  test('large files are joined lazily: chunks stay as received until .buffer is read, then one buffer', () => {
    const chunks = Array.from({ length: 5 }, () => randomBytes(100 * KiB));
    const size = 500 * KiB;
    const list = new ChunkList(chunks, size);
    expect(list.size).toBe(size);
    const before = list.chunks();
    expect(before).toHaveLength(5);
    before.forEach((chunk, i) => expect(chunk).toBe(chunks[i])); // the very same buffers, no copy yet

    const buffer = list.buffer;
    expect(buffer.length).toBe(size);
    expect(sha256(buffer)).toBe(sha256(Buffer.concat(chunks)));
    expect(list.buffer).toBe(buffer); // joined once
    expect(list.chunks()).toEqual([buffer]);
  });

  test('clear() empties the list', () => {
    for (const list of [new ChunkList([Buffer.from('abc')], 3), new ChunkList([randomBytes(300 * KiB), randomBytes(300 * KiB)], 600 * KiB)]) {
      list.clear();
      expect(list.buffer.length).toBe(0);
      expect(Buffer.concat(list.chunks()).length).toBe(0);
    }
  });
});
