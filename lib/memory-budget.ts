import { sizeOption, type Size } from './sizes';

/**
 * Bytes of upload data held in memory by every request that shares this budget.
 * One instance per `spool()` by default; pass the same instance to several `spool()` calls
 * to make them share one process-wide budget.
 */
export class MemoryBudget {
  readonly limit: number;
  #used = 0;

  constructor(limit: Size) {
    this.limit = sizeOption('memoryBudget', limit, 0);
  }

  /** Bytes currently held by in-flight requests. */
  get used(): number {
    return this.#used;
  }

  /** Takes `bytes` from the budget if they fit; returns false (and takes nothing) otherwise. */
  tryReserve(bytes: number): boolean {
    if (this.#used + bytes > this.limit) return false;
    this.#used += bytes;
    return true;
  }

  /** Takes `bytes` even past the limit: memory already committed elsewhere (e.g. an S3 upload's part buffers). */
  hold(bytes: number): void {
    this.#used += bytes;
  }

  release(bytes: number): void {
    this.#used -= bytes;
    if (this.#used < 0) throw new Error(`MemoryBudget released more than it reserved (${this.#used})`);
  }

  /** A per-request view of the budget that can give everything back at once. */
  lease(): MemoryLease {
    return new MemoryLease(this);
  }
}

/** What one request holds of a {@link MemoryBudget}; the core releases it when the response ends. */
export class MemoryLease {
  readonly #budget: MemoryBudget;
  #held = 0;
  #closed = false;

  constructor(budget: MemoryBudget) {
    this.#budget = budget;
  }

  get held(): number {
    return this.#held;
  }

  tryReserve(bytes: number): boolean {
    if (this.#closed || !this.#budget.tryReserve(bytes)) return false;
    this.#held += bytes;
    return true;
  }

  /** Counts bytes that are held whatever the limit, so that spooled files roll over early meanwhile. */
  hold(bytes: number): void {
    if (this.#closed) return;
    this.#budget.hold(bytes);
    this.#held += bytes;
  }

  /** Gives back bytes the caller no longer holds (e.g. a spooled file that rolled over to disk). */
  release(bytes: number): void {
    const amount = Math.min(bytes, this.#held);
    this.#held -= amount;
    this.#budget.release(amount);
  }

  /** Gives back everything and refuses further reservations. Safe to call twice. */
  close(): void {
    this.release(this.#held);
    this.#closed = true;
  }
}
