import { readFileSync, readdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BatchedFileWriter } from '../engines/batched-file-writer';
import { BufferPool } from '../lib/core/buffer-pool';
import { streamInto } from '../lib/core/chunk-sink';
import { eventually, tempDir } from './helpers/app';
import { chunked, writevSizes } from './helpers/data-writes';
import { randomData, sha256 } from './helpers/multipart';

// The module object itself (not an ES namespace) so that its `writev` can be spied on.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');

const dir = tempDir('spool-batched-');
afterAll(() => dir.remove());
afterEach(() => jest.restoreAllMocks());

const KiB = 1024;


const openFds = () => readdirSync('/proc/self/fd').length;

test('writes byte-exact in batches of at least batchBytes (the last one may be shorter)', async () => {
  const data = randomData(5 * 1024 * KiB + 12_345);
  const path = join(dir.path, 'exact');
  const sizes = await writevSizes(async () => {
    const handle = await open(path, 'wx');
    await streamInto(chunked(data, 100 * KiB), new BatchedFileWriter(handle, 512 * KiB));
  });
  expect(sha256(readFileSync(path))).toBe(sha256(data));
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
  for (const size of sizes.slice(0, -1)) expect(size).toBeGreaterThanOrEqual(512 * KiB);
  expect(sizes.length).toBeLessThanOrEqual(Math.ceil(data.length / (512 * KiB)));
});

test('eager: the first chunk goes out at once, the chunks that came while it was written go out together (at most batchBytes each), byte-exact', async () => {
  const path = join(dir.path, 'eager');
  const handle = await open(path, 'wx');
  const writer = new BatchedFileWriter(handle, 256 * KiB, undefined, { eager: true });
  // The first writev is held until released: a busy disk.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const sizes: number[] = [];
  const real = fs.writev;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: never) => {
    sizes.push(buffers.reduce((n, b) => n + b.length, 0));
    const go = () => (real as (...a: unknown[]) => void)(fd, buffers, position, cb);
    if (sizes.length === 1) void held.then(go);
    else go();
  }) as never);
  const [a, b, c, d] = [40, 100, 100, 100].map((k) => randomData(k * KiB));
  expect(writer.write(a, () => {})).toBe(true);
  expect(sizes).toEqual([40 * KiB]); // not waiting for a full batch
  expect(writer.write(b, () => {})).toBe(true);
  expect(writer.write(c, () => {})).toBe(true);
  let drained = false;
  // 56 KiB of d fill the batch; the rest waits for the write in flight: the caller is told to pause.
  expect(writer.write(d, () => (drained = true))).toBe(false);
  expect(sizes).toEqual([40 * KiB]);
  release();
  await eventually(() => expect(drained).toBe(true));
  await writer.end();
  expect(sizes).toEqual([40 * KiB, 256 * KiB, 44 * KiB]);
  expect(sha256(readFileSync(path))).toBe(sha256(Buffer.concat([a, b, c, d])));
});

test('a chunk is copied before write() returns true: the caller may reuse it at once, the file keeps what was written', async () => {
  const data = randomData(1536 * KiB + 777);
  const path = join(dir.path, 'reused');
  const handle = await open(path, 'wx');
  const writer = new BatchedFileWriter(handle, 512 * KiB);
  const scratch = Buffer.alloc(48 * KiB);
  for (let at = 0; at < data.length; at += scratch.length) {
    const piece = data.subarray(at, at + scratch.length);
    piece.copy(scratch);
    const chunk = scratch.subarray(0, piece.length);
    await new Promise<void>((resolve) => {
      if (writer.write(chunk, resolve)) resolve();
    });
    scratch.fill(0); // a reference held past the write would now write zeros
  }
  await writer.end();
  expect(sha256(readFileSync(path))).toBe(sha256(data));
});

test('empty and one-byte files', async () => {
  for (const data of [Buffer.alloc(0), Buffer.from('x')]) {
    const path = join(dir.path, `small-${data.length}`);
    const handle = await open(path, 'wx');
    await streamInto(Readable.from([data]), new BatchedFileWriter(handle, 512 * KiB));
    expect(readFileSync(path)).toEqual(data);
  }
});

test('short writes are continued where they stopped', async () => {
  const data = randomData(3 * 1024 * KiB);
  const path = join(dir.path, 'short');
  const real = fs.writev;
  // The kernel may write less than asked: hand it at most 100,000 bytes per call.
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (e: Error | null, n: number) => void) => {
    const limited: Buffer[] = [];
    let room = 100_000;
    for (const b of buffers) {
      if (room === 0) break;
      limited.push(b.subarray(0, room));
      room -= Math.min(room, b.length);
    }
    return (real as (...a: unknown[]) => void)(fd, limited, position, cb);
  }) as never);
  const handle = await open(path, 'wx');
  await streamInto(chunked(data, 64 * KiB), new BatchedFileWriter(handle, 512 * KiB));
  expect(sha256(readFileSync(path))).toBe(sha256(data));
});

test('a failing write rejects with its error, destroys the source and closes the file', async () => {
  const fds = openFds();
  jest.spyOn(fs, 'writev').mockImplementation(((_fd: number, _b: Buffer[], _position: number | null, cb: (e: Error) => void) => {
    setImmediate(() => cb(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })));
  }) as never);
  const handle = await open(join(dir.path, 'enospc'), 'wx');
  const source = chunked(randomData(2 * 1024 * KiB), 64 * KiB);
  await expect(streamInto(source, new BatchedFileWriter(handle, 512 * KiB))).rejects.toMatchObject({ code: 'ENOSPC' });
  expect(source.destroyed).toBe(true);
  await eventually(() => expect(openFds()).toBeLessThanOrEqual(fds));
});

test('a source destroyed mid-file rejects and closes the file', async () => {
  const fds = openFds();
  const handle = await open(join(dir.path, 'cut'), 'wx');
  const source = new Readable({ read() {} });
  const done = streamInto(source, new BatchedFileWriter(handle, 512 * KiB));
  source.push(randomData(700 * KiB));
  setImmediate(() => source.destroy(new Error('client went away')));
  await expect(done).rejects.toThrow('client went away');
  await eventually(() => expect(openFds()).toBeLessThanOrEqual(fds));
});

test('backpressure: at most two batches and the stream buffer are held', async () => {
  const handle = await open(join(dir.path, 'held'), 'wx');
  const writer = new BatchedFileWriter(handle, 256 * KiB);
  // Writes that never finish: the writer must stop accepting once both batches are full.
  const held: Array<(err: Error | null, written: number) => void> = [];
  jest.spyOn(fs, 'writev').mockImplementation(((_fd: number, _b: Buffer[], _position: number | null, cb: (err: Error | null, written: number) => void) => void held.push(cb)) as never);
  let accepted = 0;
  const chunk = Buffer.alloc(16 * KiB);
  let drained = false;
  while (writer.write(chunk, () => (drained = true))) accepted += chunk.length;
  await new Promise((r) => setImmediate(r));
  expect(accepted).toBeLessThanOrEqual(2 * 256 * KiB);
  expect(held.length).toBe(1);
  expect(drained).toBe(false);
  // Aborted with a write in flight: the file is closed only once that write has returned.
  const closeSpy = jest.spyOn(handle, 'close');
  let closed = false;
  const aborted = writer.abort().then(() => (closed = true));
  const again = writer.abort(); // twice is harmless, and settles too
  await new Promise((r) => setImmediate(r));
  expect(closed).toBe(false);
  expect(closeSpy).not.toHaveBeenCalled();
  for (const cb of held) cb(null, 0);
  await Promise.all([aborted, again]);
  expect(closeSpy).toHaveBeenCalledTimes(1);
  expect(drained).toBe(false); // an aborted writer takes nothing more
});

describe('batch buffers are reused from a pool, and given back only when no write uses them', () => {
  test('two files in a row: the second takes the first one\'s buffers; both byte-exact', async () => {
    const pool = new BufferPool(256 * KiB);
    const taken: Buffer[] = [];
    const take = pool.take.bind(pool);
    jest.spyOn(pool, 'take').mockImplementation(() => {
      const b = take();
      taken.push(b);
      return b;
    });
    const first = randomData(1500 * KiB);
    const second = randomData(1300 * KiB);
    const [p1, p2] = [join(dir.path, 'pool-1'), join(dir.path, 'pool-2')];
    await streamInto(chunked(first, 64 * KiB), new BatchedFileWriter(await open(p1, 'wx'), 256 * KiB, pool));
    expect(pool.idle).toBe(2);
    await streamInto(chunked(second, 64 * KiB), new BatchedFileWriter(await open(p2, 'wx'), 256 * KiB, pool));
    expect(pool.idle).toBe(2);
    expect(new Set(taken.map((b) => b.buffer)).size).toBe(2);
    expect(sha256(readFileSync(p1))).toBe(sha256(first));
    expect(sha256(readFileSync(p2))).toBe(sha256(second));
  });

  test('destroyed with a write in flight: its buffers go back only after that write returned, so another file never shares them', async () => {
    const pool = new BufferPool(256 * KiB);
    const held: Array<() => void> = [];
    const real = fs.writev;
    let holdWrites = true;
    jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: never) => {
      const go = () => (real as (...a: unknown[]) => void)(fd, buffers, position, cb);
      if (holdWrites) held.push(go);
      else go();
    }) as never);
    const writer = new BatchedFileWriter(await open(join(dir.path, 'pool-cut'), 'wx'), 256 * KiB, pool);
    writer.write(randomData(600 * KiB), () => undefined); // one batch in flight, the other filling
    await new Promise((r) => setImmediate(r));
    expect(held.length).toBe(1);
    const closed = writer.abort();
    await new Promise((r) => setImmediate(r));
    expect(pool.idle).toBe(0); // the write in flight still reads its batch

    // Another file written meanwhile gets buffers of its own, and stays byte-exact.
    holdWrites = false;
    const data = randomData(900 * KiB);
    const path = join(dir.path, 'pool-other');
    const other = streamInto(chunked(data, 64 * KiB), new BatchedFileWriter(await open(path, 'wx'), 256 * KiB, pool));
    for (const go of held) go();
    await Promise.all([closed, other]);
    expect(sha256(readFileSync(path))).toBe(sha256(data));
    expect(pool.idle).toBe(4);
  });

  test('a pool of another size is refused', async () => {
    const handle = await open(join(dir.path, 'pool-size'), 'wx');
    expect(() => new BatchedFileWriter(handle, 512 * KiB, new BufferPool(64 * KiB))).toThrow(RangeError);
    await handle.close();
  });
});
