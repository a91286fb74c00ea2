import { getEventListeners } from 'node:events';
import { SpoolError } from '../lib/core/errors';
import { MemoryBudget } from '../lib/core/memory-budget';
import { spool } from '../lib';

/** Resolves after pending promise callbacks have run (a grant is delivered through a promise). */
const flush = () => new Promise((resolve) => setImmediate(resolve));

/** Records the order in which reservations settle, and how. */
function track(promise: Promise<void>, name: string, log: string[]): Promise<void> {
  return promise.then(
    () => void log.push(`${name}:granted`),
    (err: unknown) => void log.push(`${name}:${err instanceof SpoolError ? err.code : (err as Error).message}`),
  );
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

describe('MemoryBudget', () => {
  test('tryReserve takes bytes up to the limit exactly, refuses past it and takes nothing', () => {
    const budget = new MemoryBudget(100);
    expect(budget.tryReserve(60)).toBe(true);
    expect(budget.tryReserve(40)).toBe(true); // exactly at the limit
    expect(budget.used).toBe(100);
    expect(budget.tryReserve(1)).toBe(false);
    expect(budget.used).toBe(100); // the refusal took nothing
    budget.release(100);
    expect(budget.used).toBe(0);
    expect(budget.tryReserve(101)).toBe(false);
    expect(budget.used).toBe(0);
  });

  test('accepts sizes as strings', () => {
    expect(new MemoryBudget('2KiB').limit).toBe(2048);
  });

  test('reserve() resolves at once when the bytes fit', async () => {
    const budget = new MemoryBudget(100);
    await budget.reserve(100);
    expect(budget.used).toBe(100);
    expect(budget.waiting).toBe(0);
  });

  test('reserve() of more than the limit rejects MEMORY_BUDGET_EXCEEDED at once, without queueing', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(100); // full: a waiter would be queued if the size were not checked first
    const err = await rejection(budget.reserve(101));
    expect(err).toBeInstanceOf(SpoolError);
    expect((err as SpoolError).code).toBe('MEMORY_BUDGET_EXCEEDED');
    expect(budget.waiting).toBe(0);
    expect(budget.used).toBe(100);
  });

  test('waiting reservations are granted on release, in arrival order', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(100);
    const log: string[] = [];
    const all = Promise.all([
      track(budget.reserve(30), 'a', log),
      track(budget.reserve(30), 'b', log),
      track(budget.reserve(30), 'c', log),
    ]);
    await flush();
    expect(log).toEqual([]);
    expect(budget.waiting).toBe(3);

    budget.release(30); // room for exactly one
    await flush();
    expect(log).toEqual(['a:granted']);
    expect(budget.waiting).toBe(2);
    expect(budget.used).toBe(100);

    budget.release(60); // room for both that are left
    await all;
    expect(log).toEqual(['a:granted', 'b:granted', 'c:granted']);
    expect(budget.waiting).toBe(0);
    expect(budget.used).toBe(100); // 40 left after the release, +60 granted
  });

  test('a large waiter at the head blocks later small ones (no starvation); they follow it once it is granted', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(80);
    const log: string[] = [];
    const big = track(budget.reserve(90), 'big', log);
    const small = track(budget.reserve(10), 'small', log);
    await flush();
    // 10 bytes would fit (80 + 10 <= 100), but the big one arrived first.
    expect(log).toEqual([]);
    expect(budget.waiting).toBe(2);
    expect(budget.used).toBe(80);

    budget.release(80);
    await Promise.all([big, small]);
    expect(log).toEqual(['big:granted', 'small:granted']);
    expect(budget.used).toBe(100);
  });

  test('when the large waiter at the head aborts, the small ones behind it are granted', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(80);
    const log: string[] = [];
    const controller = new AbortController();
    const big = track(budget.reserve(90, controller.signal), 'big', log);
    const small1 = track(budget.reserve(10), 'small1', log);
    const small2 = track(budget.reserve(20), 'small2', log); // does not fit after small1 (90 + 20 > 100): stays
    await flush();
    expect(log).toEqual([]);

    controller.abort(new Error('gave up'));
    await Promise.all([big, small1]);
    expect([...log].sort()).toEqual(['big:gave up', 'small1:granted']); // settle order between the two is not a promise
    expect(budget.used).toBe(90);
    expect(budget.waiting).toBe(1);

    budget.release(10);
    await small2;
    expect(log.slice(2)).toEqual(['small2:granted']);
    expect(budget.waiting).toBe(0);
  });

  test("aborting a waiting reserve() rejects with the signal's reason and removes the waiter", async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(100);
    const controller = new AbortController();
    const reason = new Error('the request went away');
    const pending = budget.reserve(50, controller.signal);
    await flush();
    expect(budget.waiting).toBe(1);
    controller.abort(reason);
    expect(await rejection(pending)).toBe(reason);
    expect(budget.waiting).toBe(0);
    // The aborted waiter is not granted later: releasing everything leaves nothing held.
    budget.release(100);
    await flush();
    expect(budget.used).toBe(0);
  });

  test('a signal that has already aborted rejects with its reason without queueing', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(100);
    const reason = new Error('too late');
    expect(await rejection(budget.reserve(10, AbortSignal.abort(reason)))).toBe(reason);
    expect(budget.waiting).toBe(0);
  });

  test('a granted waiter removes its abort listener (aborting later changes nothing)', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(100);
    const controller = new AbortController();
    const pending = budget.reserve(40, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);
    budget.release(40);
    await pending;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    controller.abort(new Error('after the grant'));
    await flush();
    expect(budget.used).toBe(100);
    expect(budget.waiting).toBe(0);
  });

  test('tryReserve returns false while others wait, even for bytes that would fit', async () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(50);
    const controller = new AbortController();
    const waiting = budget.reserve(60, controller.signal).catch(() => undefined);
    await flush();
    expect(budget.waiting).toBe(1);
    expect(budget.tryReserve(10)).toBe(false);
    expect(budget.used).toBe(50);
    controller.abort(new Error('stop'));
    await waiting;
    expect(budget.waiting).toBe(0);
    expect(budget.tryReserve(10)).toBe(true);
    expect(budget.used).toBe(60);
  });

  test('release below zero throws and leaves the count as it was (the limit still holds)', () => {
    const budget = new MemoryBudget(100);
    budget.tryReserve(10);
    expect(() => budget.release(11)).toThrow(/released more than it reserved/);
    expect(budget.used).toBe(10);
    // A count driven below zero would let reservations past the limit.
    expect(budget.tryReserve(91)).toBe(false);
  });
});

describe('MemoryLease', () => {
  test('counts what it holds on the budget and release() gives part of it back', () => {
    const budget = new MemoryBudget(100);
    const lease = budget.lease();
    expect(lease.tryReserve(30)).toBe(true);
    expect(lease.tryReserve(80)).toBe(false);
    expect(lease.held).toBe(30);
    expect(budget.used).toBe(30);
    lease.release(10);
    expect(lease.held).toBe(20);
    expect(budget.used).toBe(20);
  });

  test('release of more than it holds is clamped to what it holds (other leases keep theirs)', () => {
    const budget = new MemoryBudget(100);
    const lease = budget.lease();
    const other = budget.lease();
    lease.tryReserve(30);
    other.tryReserve(40);
    lease.release(1000);
    expect(lease.held).toBe(0);
    expect(other.held).toBe(40);
    expect(budget.used).toBe(40);
    lease.release(5); // holds nothing: no-op, no throw
    expect(budget.used).toBe(40);
  });

  test('close() gives everything back, and later reserve/tryReserve are refused', async () => {
    const budget = new MemoryBudget(100);
    const lease = budget.lease();
    lease.tryReserve(20);
    await lease.reserve(30);
    expect(budget.used).toBe(50);
    lease.close();
    expect(lease.held).toBe(0);
    expect(budget.used).toBe(0);

    expect(lease.tryReserve(1)).toBe(false);
    const err = await rejection(lease.reserve(1));
    expect((err as SpoolError).code).toBe('MEMORY_BUDGET_EXCEEDED');
    expect(budget.used).toBe(0);
    expect(budget.waiting).toBe(0);
    lease.close(); // safe twice
    expect(budget.used).toBe(0);
  });

  test('close() lets a waiter on another lease through', async () => {
    const budget = new MemoryBudget(100);
    const first = budget.lease();
    const second = budget.lease();
    first.tryReserve(100);
    const pending = second.reserve(60);
    await flush();
    expect(budget.waiting).toBe(1);
    first.close();
    await pending;
    expect(second.held).toBe(60);
    expect(budget.used).toBe(60);
  });

  test('a reservation granted after the lease closed is handed straight back; the next waiter gets it', async () => {
    const budget = new MemoryBudget(100);
    const holder = budget.lease();
    holder.tryReserve(100);
    const lease = budget.lease();
    const late = lease.reserve(70);
    const log: string[] = [];
    const next = track(budget.reserve(70), 'next', log);
    await flush();
    expect(budget.waiting).toBe(2);

    lease.close(); // the request ends while its reservation waits
    holder.close(); // the grant arrives after that
    const err = await rejection(late);
    expect((err as SpoolError).code).toBe('MEMORY_BUDGET_EXCEEDED');
    expect(lease.held).toBe(0);
    await next;
    // Only the other waiter's 70 are held: the closed lease's grant went back unused.
    expect(log).toEqual(['next:granted']);
    expect(budget.used).toBe(70);
    expect(budget.waiting).toBe(0);
  });
});

describe('reservations that can never fit beside what the request holds', () => {
  test('beside the share a request keeps: a lease refuses at once (MEMORY_BUDGET_EXCEEDED) instead of waiting, and nobody queues behind it', async () => {
    const budget = new MemoryBudget(1000);
    const lease = budget.lease();
    expect(lease.tryReserve(600)).toBe(true);
    lease.keep(600); // the request's share: held until it ends
    await expect(lease.reserve(500)).rejects.toMatchObject({ code: 'MEMORY_BUDGET_EXCEEDED' });
    expect(budget.waiting).toBe(0);
    const other = budget.lease();
    expect(other.tryReserve(300)).toBe(true); // not held up by a waiter that could never be served
    const waiting = lease.reserve(400); // 600 + 400 can fit: it waits for the other request's 300
    expect(budget.waiting).toBe(1);
    other.close();
    await expect(waiting).resolves.toBeUndefined();
    expect(lease.held).toBe(1000);
    lease.close();
    expect(budget.used).toBe(0);
  });

  test('spool() refuses a budget smaller than one request\'s share (192 KiB) when it is created', () => {
    expect(() => spool({ memoryBudget: '128KiB' })).toThrow(/Expected `memoryBudget` to be at least 196608 bytes/);
    expect(() => spool({ memoryBudget: new MemoryBudget('100KiB') })).toThrow(TypeError);
    expect(() => spool({ memoryBudget: '192KiB' })).not.toThrow();
  });
});
