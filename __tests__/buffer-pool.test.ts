import { BufferPool, bufferPool } from '../lib/core/buffer-pool';

const KiB = 1024;

test('a buffer given back is the one the next take returns; a new one is allocated only when none waits', () => {
  const pool = new BufferPool(64 * KiB);
  const a = pool.take();
  const b = pool.take();
  expect(a.length).toBe(64 * KiB);
  expect(a.buffer).not.toBe(b.buffer);
  pool.give(a);
  expect(pool.idle).toBe(1);
  expect(pool.take()).toBe(a);
  expect(pool.idle).toBe(0);
});

test('at most maxIdleBytes wait for reuse; buffers of another size are not kept', () => {
  const pool = new BufferPool(64 * KiB, { maxIdleBytes: 3 * 64 * KiB });
  const taken = Array.from({ length: 5 }, () => pool.take());
  for (const b of taken) pool.give(b);
  expect(pool.idle).toBe(3);
  pool.give(Buffer.alloc(32 * KiB));
  pool.give(Buffer.alloc(64 * KiB)); // the right size, but not the pool's
  expect(pool.idle).toBe(3);
});

test('a buffer given back twice is kept once, so no two takes ever share it', () => {
  const pool = new BufferPool(64 * KiB);
  const a = pool.take();
  pool.give(a);
  pool.give(a);
  expect(pool.idle).toBe(1);
  const first = pool.take();
  const second = pool.take();
  expect(first).toBe(a);
  expect(second).not.toBe(a);
  expect(second.buffer).not.toBe(a.buffer);
});

test('while users run, the pool keeps what they may hold at once beyond the shared cap; once they leave, the cap applies again', () => {
  const account = { bytes: 0, max: 2 * 64 * KiB };
  const pool = new BufferPool(64 * KiB, { account });
  const leaveA = pool.enter(3);
  const leaveB = pool.enter(2);
  const taken = Array.from({ length: 8 }, () => pool.take());
  for (const b of taken) pool.give(b);
  // 5 kept for the running users, 2 more on the shared cap, the 8th let go.
  expect(pool.idle).toBe(7);
  expect(account.bytes).toBe(2 * 64 * KiB);
  // Taking draws on the idle ones; the shared cap is counted only past what the users keep.
  const again = [pool.take(), pool.take(), pool.take()];
  expect(account.bytes).toBe(0);
  for (const b of again) expect(taken).toContain(b);
  for (const b of again) pool.give(b);
  expect(pool.idle).toBe(7);
  leaveA();
  leaveA(); // idempotent
  expect(pool.idle).toBe(4); // 2 kept for B, 2 on the cap
  expect(account.bytes).toBe(2 * 64 * KiB);
  leaveB();
  expect(pool.idle).toBe(2);
  expect(account.bytes).toBe(2 * 64 * KiB);
  // Nothing is allocated while one waits: a new user gets the idle ones first.
  const leaveC = pool.enter(1);
  expect(taken).toContain(pool.take());
  expect(account.bytes).toBe(0); // one idle, kept for C
  leaveC();
  expect(account.bytes).toBe(64 * KiB);
});

test('idle buffers kept for running users go too once an idle period passed without a take', async () => {
  const pool = new BufferPool(64 * KiB, { idleMs: 30, maxIdleBytes: 0 });
  const leave = pool.enter(2);
  const a = pool.take();
  const b = pool.take();
  pool.give(a);
  pool.give(b);
  expect(pool.idle).toBe(2);
  await new Promise((r) => setTimeout(r, 80));
  expect(pool.idle).toBe(0);
  leave();
  expect(pool.idle).toBe(0);
});

test('idle buffers are let go once a whole idle period passed without a take', async () => {
  const pool = new BufferPool(64 * KiB, { idleMs: 40 });
  const a = pool.take();
  pool.give(a);
  // Taken and given back within the first period: kept through the next check.
  pool.give(pool.take());
  await new Promise((r) => setTimeout(r, 60));
  expect(pool.idle).toBe(1);
  await new Promise((r) => setTimeout(r, 60));
  expect(pool.idle).toBe(0);
  expect(pool.take()).not.toBe(a);
});

test('one process-wide pool per size', () => {
  expect(bufferPool(128 * KiB)).toBe(bufferPool(128 * KiB));
  expect(bufferPool(128 * KiB)).not.toBe(bufferPool(256 * KiB));
  expect(bufferPool(128 * KiB).size).toBe(128 * KiB);
});

test('pools sharing an account share its cap on idle bytes', () => {
  const account = { bytes: 0, max: 256 * KiB };
  const big = new BufferPool(128 * KiB, { account });
  const small = new BufferPool(64 * KiB, { account });
  const b = [big.take(), big.take()];
  const s = [small.take(), small.take()];
  for (const x of b) big.give(x);
  for (const x of s) small.give(x);
  expect(big.idle).toBe(2);
  expect(small.idle).toBe(0);
  expect(account.bytes).toBe(256 * KiB);
  big.take();
  const again = small.take(); // (s[0] was let go when the cap was full)
  small.give(again);
  expect(small.idle).toBe(1);
  expect(account.bytes).toBe(192 * KiB);
});

test("the process's pools: at most 16 MiB idle across all sizes, let go once 10 s passed without a take", () => {
  jest.useFakeTimers();
  try {
    let fresh!: typeof import('../lib/core/buffer-pool');
    jest.isolateModules(() => {
      fresh = require('../lib/core/buffer-pool');
    });
    const large = fresh.bufferPool(512 * KiB);
    const small = fresh.bufferPool(64 * KiB);
    const taken = Array.from({ length: 40 }, () => large.take());
    const smallOne = small.take();
    for (const b of taken) large.give(b);
    small.give(smallOne);
    expect(large.idle).toBe(32); // 32 × 512 KiB = 16 MiB
    expect(small.idle).toBe(0); // the shared cap is full
    large.give(large.take()); // a take within the first 10 s keeps them through the next check
    jest.advanceTimersByTime(10_000);
    expect(large.idle).toBe(32);
    jest.advanceTimersByTime(10_000);
    expect(large.idle).toBe(0);
    const again = small.take(); // the cap counts what is idle now
    small.give(again);
    expect(small.idle).toBe(1);
  } finally {
    jest.useRealTimers();
  }
});

test('enter() recounts at once: idle buffers past the shared cap become the running user\'s, freeing the cap for other pools', () => {
  const account = { bytes: 0, max: 2 * 64 * KiB };
  const pool = new BufferPool(64 * KiB, { account });
  const taken = [pool.take(), pool.take()];
  for (const b of taken) pool.give(b);
  expect(account.bytes).toBe(2 * 64 * KiB);
  const leave = pool.enter(2);
  expect(account.bytes).toBe(0);
  leave();
  expect(account.bytes).toBe(2 * 64 * KiB);
});
