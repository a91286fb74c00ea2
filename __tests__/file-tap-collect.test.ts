import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { collectChunks, putBack } from '../lib/core/collect-chunks';
import { FileTap } from '../lib/core/file-tap';
import { MemoryBudget } from '../lib/core/memory-budget';

// collectChunks() on a FileTap nobody has read yet takes chunks straight from the tap's source (the memory
// and spool engines' path). It must keep the generic path's contract: exact bytes, counted once, a clean
// hand-over past the threshold, and the tap as the channel of cancellation.
const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A parser-like source: chunks written on later ticks, so collection starts before any byte arrives. */
function feed(data: Buffer, chunk: number, { end = true } = {}): PassThrough {
  const source = new PassThrough();
  void (async () => {
    for (let i = 0; i < data.length; i += chunk) {
      await new Promise((r) => setImmediate(r));
      source.write(data.subarray(i, i + chunk));
    }
    if (end) source.end();
  })();
  return source;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of stream) out.push(c as Buffer);
  return Buffer.concat(out);
}

function within<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

test('a whole file: same bytes, counted and hashed, reserved on the lease; the tap counts as consumed', async () => {
  const data = randomBytes(100 * KiB + 7);
  const budget = new MemoryBudget('1MiB');
  const lease = budget.lease();
  const tap = new FileTap(feed(data, 16 * KiB), true);
  expect(tap.collectable).toBe(true);
  const collected = await within(collectChunks(tap, lease, Infinity));
  expect(collected.overflow).toBeUndefined();
  expect(Buffer.concat(collected.chunks).equals(data)).toBe(true);
  expect(collected.size).toBe(data.length);
  expect(lease.held).toBe(data.length);
  expect(tap.bytes).toBe(data.length);
  expect(tap.sha256).toBe(sha256(data));
  expect(tap.consumed).toBe(true);
  expect(tap.destroyed).toBe(false);
});

test('an empty file resolves with nothing', async () => {
  const tap = new FileTap(feed(Buffer.alloc(0), 1), false);
  const collected = await within(collectChunks(tap, new MemoryBudget('1MiB').lease(), Infinity));
  expect(collected).toEqual({ chunks: [], size: 0 });
  expect(tap.consumed).toBe(true);
});

test.each([
  ['past maxBytes', '1MiB', 40 * KiB],
  ['refused by the budget', '40KiB', Infinity],
])('%s: the source is paused, putBack hands the tap on whole, every byte counted once', async (_case, budgetSize, maxBytes) => {
  const data = randomBytes(300 * KiB + 3);
  const budget = new MemoryBudget(budgetSize);
  const lease = budget.lease();
  const source = feed(data, 16 * KiB);
  const tap = new FileTap(source, true);
  const collected = await within(collectChunks(tap, lease, maxBytes));
  expect(collected.overflow).toBeDefined();
  expect(collected.size).toBeLessThanOrEqual(40 * KiB);
  expect(source.isPaused()).toBe(true);
  expect(tap.consumed).toBe(false);
  lease.release(collected.size);
  putBack(tap, collected);
  const reread = await within(readAll(tap));
  expect(sha256(reread)).toBe(sha256(data));
  expect(tap.bytes).toBe(data.length);
  expect(tap.sha256).toBe(sha256(data));
  expect(budget.used).toBe(0);
});

test('the tap destroyed with an error mid-file (the request failed): rejects with it, releases, resumes the source', async () => {
  const budget = new MemoryBudget('1MiB');
  const lease = budget.lease();
  const source = feed(randomBytes(200 * KiB), 16 * KiB, { end: false });
  const tap = new FileTap(source, false);
  tap.on('error', () => undefined);
  const result = collectChunks(tap, lease, Infinity);
  while (lease.held < 32 * KiB) await new Promise((r) => setImmediate(r));
  const boom = new Error('client went away');
  tap.destroy(boom);
  await expect(within(result)).rejects.toBe(boom);
  expect(lease.held).toBe(0);
  expect(budget.used).toBe(0);
  expect(source.listenerCount('data')).toBe(0);
  expect(source.isPaused()).toBe(false); // the parser may go on past the part
});

test('the tap destroyed without an error: rejects (premature close) instead of hanging', async () => {
  const budget = new MemoryBudget('1MiB');
  const tap = new FileTap(feed(randomBytes(64 * KiB), 8 * KiB, { end: false }), false);
  const result = collectChunks(tap, budget.lease(), Infinity);
  await new Promise((r) => setImmediate(r));
  tap.destroy();
  await expect(within(result)).rejects.toThrow(/premature close/i);
  expect(budget.used).toBe(0);
});

test('a source error rejects with that error', async () => {
  const source = feed(randomBytes(64 * KiB), 8 * KiB, { end: false });
  const tap = new FileTap(source, false);
  tap.on('error', () => undefined);
  const result = collectChunks(tap, new MemoryBudget('1MiB').lease(), Infinity);
  await new Promise((r) => setImmediate(r));
  const boom = new Error('malformed part');
  source.destroy(boom);
  await expect(within(result)).rejects.toBe(boom);
});

test('a tap someone already reads from is collected the generic way, bytes intact', async () => {
  const data = randomBytes(50 * KiB);
  const tap = new FileTap(feed(data, 4 * KiB), false);
  const first = await new Promise<Buffer>((resolve) => tap.once('data', (c: Buffer) => (tap.pause(), resolve(c))));
  expect(tap.collectable).toBe(false);
  tap.unshift(first);
  const collected = await within(collectChunks(tap, new MemoryBudget('1MiB').lease(), Infinity));
  expect(Buffer.concat(collected.chunks).equals(data)).toBe(true);
  expect(tap.consumed).toBe(true);
});
