import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { BatchedFileWriter } from '../engines/batched-file-writer';
import { BufferPool } from '../lib/core/buffer-pool';
import { tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';

// Review of c6432ba (BatchedFileWriter `eager`). Randomised against a disk that is slow at random and
// writes short at random: bytes in order, one writev in flight at most, no batch over batchBytes, every
// drained/end/abort settles, the fd is closed and buffers go back to the pool only with no write in flight.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');
const KiB = 1024;
const dir = tempDir('review-eager-');
afterAll(() => dir.remove());
afterEach(() => jest.restoreAllMocks());

function within<T>(promise: Promise<T>, what: string, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

let seed = 1;
const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
const tick = () => new Promise<void>((r) => (rnd(3) === 0 ? setTimeout(r, rnd(2)) : setImmediate(r)));

/** A slow, sometimes short-writing disk; records sizes, concurrency and which buffers are being written. */
function disk() {
  const state = { inFlight: 0, maxInFlight: 0, sizes: [] as number[], busy: new Set<ArrayBuffer>() };
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (e: Error | null, n: number) => void) => {
    state.sizes.push(buffers.reduce((n, b) => n + b.length, 0));
    state.maxInFlight = Math.max(state.maxInFlight, ++state.inFlight);
    for (const b of buffers) state.busy.add(b.buffer as ArrayBuffer);
    let room = rnd(4) === 0 ? 1 + rnd(100_000) : Infinity;
    const limited = buffers.map((b) => {
      const piece = b.subarray(0, Math.min(room, b.length));
      room -= piece.length;
      return piece;
    }).filter((b) => b.length > 0);
    void tick().then(() =>
      real(fd, limited, position, (err: Error | null, n: number) => {
        state.inFlight--;
        state.busy.clear();
        cb(err, n);
      }),
    );
  }) as never);
  return state;
}

async function setUp(name: string, batch: number) {
  const state = disk();
  const pool = new BufferPool(batch);
  const give = pool.give.bind(pool);
  const badGives: string[] = [];
  jest.spyOn(pool, 'give').mockImplementation((b: Buffer) => {
    if (state.busy.has(b.buffer as ArrayBuffer)) badGives.push('a buffer went back to the pool under a writev');
    give(b);
  });
  const path = join(dir.path, name);
  const handle = await open(path, 'wx');
  const realClose = handle.close.bind(handle);
  const badCloses: string[] = [];
  jest.spyOn(handle, 'close').mockImplementation(() => {
    if (state.inFlight > 0) badCloses.push('the fd was closed under a writev');
    return realClose();
  });
  const writer = new BatchedFileWriter(handle, batch, pool, { eager: true });
  return { state, writer, path, badGives, badCloses };
}

async function idle(state: { inFlight: number }, writer: BatchedFileWriter, given: Buffer[]): Promise<void> {
  const total = given.reduce((n, b) => n + b.length, 0);
  while (state.inFlight > 0 || writer.bytesWritten < total) await new Promise((r) => setTimeout(r, 1));
}

function chunkSize(): number {
  const r = rnd(20);
  if (r === 0) return 0;
  if (r === 1) return 1536 * KiB; // larger than two batches
  if (r === 2) return 1;
  return 1 + rnd(100 * KiB);
}

describe.each([64 * KiB, 512 * KiB])('eager, %i-byte batches', (batch) => {
  test.each([1, 2, 3, 4, 5, 6, 7, 8])('random chunks, flushes and pauses (seed %i): byte-exact, one writev at a time, all settles', async (s) => {
    seed = s * 7919 + batch;
    const { state, writer, path, badGives, badCloses } = await setUp(`run-${batch}-${s}`, batch);
    const written: Buffer[] = [];
    const count = 20 + rnd(40);
    for (let i = 0; i < count; i++) {
      const chunk = randomData(chunkSize());
      written.push(chunk);
      if (rnd(5) === 0) writer.flush();
      let calls = 0;
      const drained = new Promise<void>((r) => (writer.write(chunk, () => (calls++, r())) ? r() : undefined));
      expect(calls).toBe(0);
      // The source may end while the rest of its last chunk waits for room (FileTap / feed do end() then).
      if (i === count - 1 && rnd(2) === 0) break;
      await within(drained, `drained of chunk ${i}`);
      if (rnd(3) === 0) await tick();
      // Eager: once the disk is idle, everything given so far is on it, with no further write()/flush().
      if (rnd(4) === 0) await within(idle(state, writer, written), `chunk ${i}'s bytes out once idle`);
    }
    await within(writer.end(), 'end()');
    expect(state.maxInFlight).toBe(1);
    expect(Math.max(...state.sizes)).toBeLessThanOrEqual(batch);
    expect(badGives).toEqual([]);
    expect(badCloses).toEqual([]);
    const data = Buffer.concat(written);
    expect(writer.bytesWritten).toBe(data.length);
    expect(sha256(readFileSync(path))).toBe(sha256(data));
  });

  test.each([1, 2, 3, 4, 5, 6])('abort at a random point (seed %i): settles, never closes the fd or frees a buffer under a writev', async (s) => {
    seed = s * 104729 + batch;
    const { state, writer, badGives, badCloses } = await setUp(`abort-${batch}-${s}`, batch);
    const stopAt = rnd(15);
    let ended: Promise<string> | undefined;
    for (let i = 0; i <= stopAt; i++) {
      const ok = writer.write(randomData(chunkSize()), () => undefined);
      if (i === stopAt && rnd(2) === 0) ended = writer.end().then(() => 'resolved', () => 'rejected');
      if (!ok) break;
      if (rnd(2) === 0) await tick();
    }
    await within(Promise.all([writer.abort(), writer.abort()]), 'abort()');
    if (ended) await expect(within(ended, 'end() after abort()')).resolves.toMatch(/resolved|rejected/);
    expect(state.inFlight).toBe(0);
    expect(state.maxInFlight).toBeLessThanOrEqual(1);
    expect(badGives).toEqual([]);
    expect(badCloses).toEqual([]);
    expect(writer.write(Buffer.from('late'), () => undefined)).toBe(true); // dropped, no throw
  });
});
