import { SpoolError } from './errors';
import { sizeOption, type Size } from './sizes';

interface Waiter {
  readonly bytes: number;
  readonly grant: () => void;
}

/**
 * Bytes of upload data held in memory by every request that shares this budget: file chunks kept in
 * memory, text field values, S3 part buffers, and a fixed share per admitted request.
 * One instance per `spool()` by default; pass the same instance to several `spool()` calls (and to
 * `resumable()`) to make them share one process-wide budget.
 *
 * Reservations either succeed at once (`tryReserve`), wait for memory to be released (`reserve`, first
 * come first served, ended by an AbortSignal), or are refused. Nothing ever takes memory past `limit`.
 */
export class MemoryBudget {
  readonly limit: number;
  #used = 0;
  readonly #waiters: Waiter[] = [];

  constructor(limit: Size) {
    this.limit = sizeOption('memoryBudget', limit, 0);
  }

  /** Bytes currently held by in-flight requests. */
  get used(): number {
    return this.#used;
  }

  /** Reservations currently waiting for memory. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Takes `bytes` if they fit and nobody is waiting before us; returns false (and takes nothing) otherwise. */
  tryReserve(bytes: number): boolean {
    if (this.#used + bytes > this.limit || (this.#waiters.length > 0 && bytes > 0)) return false;
    this.#used += bytes;
    return true;
  }

  /**
   * Takes `bytes` for something optional (a speed-up, never a necessity) only while the budget stays at
   * most half used, so it never crowds out the reservations requests need.
   */
  tryReserveSpare(bytes: number): boolean {
    return this.#used + bytes <= this.limit / 2 && this.tryReserve(bytes);
  }

  /**
   * Takes `bytes`, waiting (in arrival order) until they fit. Rejects with MEMORY_BUDGET_EXCEEDED when
   * `bytes` can never fit, or with the signal's reason when `signal` aborts first. Callers bound the wait
   * with a signal (the request's, which its deadline always ends, or `AbortSignal.timeout()`).
   */
  reserve(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.tryReserve(bytes)) return Promise.resolve();
    if (bytes > this.limit) {
      return Promise.reject(new SpoolError('MEMORY_BUDGET_EXCEEDED', `${bytes} bytes can never fit a memory budget of ${this.limit}`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index !== -1) this.#waiters.splice(index, 1);
        this.#grantWaiters(); // a large waiter leaving may let smaller ones behind it through
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        bytes,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.#waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  release(bytes: number): void {
    if (bytes <= 0) return;
    if (bytes > this.#used) throw new Error(`MemoryBudget released more than it reserved (${bytes} of ${this.#used})`);
    this.#used -= bytes;
    this.#grantWaiters();
  }

  /** A per-request view of the budget that can give everything back at once. */
  lease(): MemoryLease {
    return new MemoryLease(this);
  }

  #grantWaiters(): void {
    while (this.#waiters.length > 0 && this.#used + this.#waiters[0].bytes <= this.limit) {
      const waiter = this.#waiters.shift()!;
      this.#used += waiter.bytes;
      waiter.grant();
    }
  }
}

/** What one request holds of a {@link MemoryBudget}; the core releases it when the response ends. */
export class MemoryLease {
  readonly #budget: MemoryBudget;
  #held = 0;
  /** Of `#held`, what stays held until the lease closes (the request's fixed share): see `keep`. */
  #kept = 0;
  #closed = false;
  /** Reservations of this lease waiting for room. */
  #waiting = 0;

  constructor(budget: MemoryBudget) {
    this.#budget = budget;
  }

  /** Bytes this request holds. */
  get held(): number {
    return this.#held;
  }

  /** Whether a reservation of this lease is waiting for room (its holder waits on others, not stuck). */
  get waiting(): boolean {
    return this.#waiting > 0;
  }

  /** Takes `bytes` if they fit now; false (nothing taken) otherwise or once the lease is closed. */
  tryReserve(bytes: number): boolean {
    if (this.#closed || !this.#budget.tryReserve(bytes)) return false;
    this.#held += bytes;
    return true;
  }

  /** {@link MemoryBudget.tryReserveSpare} for this request. */
  tryReserveSpare(bytes: number): boolean {
    if (this.#closed || !this.#budget.tryReserveSpare(bytes)) return false;
    this.#held += bytes;
    return true;
  }

  /**
   * Marks `bytes` of what this lease holds as held until it closes (the request's fixed share). A
   * reservation that cannot fit beside them is refused at once: no release by anyone could make room, and
   * waiting would hold up every reservation queued behind it.
   */
  keep(bytes: number): void {
    this.#kept = Math.min(this.#held, this.#kept + bytes);
  }

  /** Takes `bytes`, waiting for them (see {@link MemoryBudget.reserve}); rejects once the lease is closed. */
  async reserve(bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.#closed) throw new SpoolError('MEMORY_BUDGET_EXCEEDED', 'The request has already ended');
    if (this.#kept > 0 && this.#kept + bytes > this.#budget.limit) {
      throw new SpoolError('MEMORY_BUDGET_EXCEEDED', `${bytes} bytes can never fit a memory budget of ${this.#budget.limit} beside the request's share of ${this.#kept}`);
    }
    this.#waiting++;
    try {
      await this.#budget.reserve(bytes, signal);
    } finally {
      this.#waiting--;
    }
    if (this.#closed) {
      // Granted after the request ended: hand it straight back.
      this.#budget.release(bytes);
      throw new SpoolError('MEMORY_BUDGET_EXCEEDED', 'The request has already ended');
    }
    this.#held += bytes;
  }

  /** Gives back bytes the caller no longer holds (e.g. a spooled file that rolled over to disk). */
  release(bytes: number): void {
    const amount = Math.min(bytes, this.#held);
    if (amount <= 0) return;
    this.#held -= amount;
    this.#kept = Math.min(this.#kept, this.#held);
    this.#budget.release(amount);
  }

  /** Gives back the share kept until the lease closes (`keep`); what else it holds stays held. */
  releaseKept(): void {
    const kept = this.#kept;
    this.#kept = 0;
    this.release(kept);
  }

  /** Gives back everything and refuses further reservations. Safe to call twice. */
  close(): void {
    this.release(this.#held);
    this.#closed = true;
  }
}
