/** How many bytes may wait for reuse (all of the process's pools together), and how long after a take. */
const MAX_IDLE_BYTES = 16 * 1024 * 1024;
const IDLE_MS = 10_000;

/**
 * Buffers of one size, reused by writers that copy into buffers of their own (the disk engine's batches).
 *
 * Why: such a buffer lives as long as its upload, so V8 promotes it to the old generation, and once dead
 * there its bytes count against V8's old-generation limit until the next full GC. Sixteen large uploads
 * then leave 16 MiB of dead buffers per burst, enough to start back-to-back full GCs on an app's heap
 * (bench/README.md, "Large uploads and V8's old-generation limit"). Reused, a burst of uploads allocates
 * nothing new after the first.
 *
 * Bounded: at most 16 MiB wait for reuse in all of the process's pools together (the same bytes would
 * otherwise be garbage waiting for a full GC), and a pool lets its idle buffers go after 10 s without a take.
 * Only the writer that took a buffer gives it back, once nothing (no write in flight) uses it any more.
 */
export class BufferPool {
  readonly size: number;
  /** Idle bytes, shared by the pools that share a cap. */
  readonly #account: IdleAccount;
  readonly #idleMs: number;
  #idle: Buffer[] = [];
  #takenSinceCheck = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(size: number, { maxIdleBytes = MAX_IDLE_BYTES, idleMs = IDLE_MS, account = { bytes: 0, max: maxIdleBytes } }: PoolOptions = {}) {
    this.size = size;
    this.#account = account;
    this.#idleMs = idleMs;
  }

  /** Buffers waiting for reuse. */
  get idle(): number {
    return this.#idle.length;
  }

  /** A buffer of `size` bytes with arbitrary content (like `Buffer.allocUnsafeSlow`). */
  take(): Buffer {
    this.#takenSinceCheck = true;
    const reused = this.#idle.pop();
    if (reused === undefined) return Buffer.allocUnsafeSlow(this.size);
    this.#account.bytes -= this.size;
    return reused;
  }

  /** Returns a buffer from `take()` that nothing references any more. */
  give(buffer: Buffer): void {
    if (buffer.length !== this.size || this.#account.bytes + this.size > this.#account.max) return;
    this.#idle.push(buffer);
    this.#account.bytes += this.size;
    this.#timer ??= setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
  }

  #checkIdle(): void {
    this.#timer = undefined;
    if (this.#takenSinceCheck) {
      this.#takenSinceCheck = false;
      if (this.#idle.length > 0) this.#timer = setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
      return;
    }
    this.#account.bytes -= this.#idle.length * this.size;
    this.#idle = [];
  }
}

/** Idle bytes of the pools that share one cap. */
export interface IdleAccount {
  bytes: number;
  readonly max: number;
}

export interface PoolOptions {
  /** Cap on idle bytes for a pool of its own (ignored with `account`). */
  maxIdleBytes?: number;
  idleMs?: number;
  /** Shares a cap with other pools. */
  account?: IdleAccount;
}

const pools = new Map<number, BufferPool>();
const processIdle: IdleAccount = { bytes: 0, max: MAX_IDLE_BYTES };

/** The process's pool of buffers of `size` bytes. */
export function bufferPool(size: number): BufferPool {
  let pool = pools.get(size);
  if (pool === undefined) pools.set(size, (pool = new BufferPool(size, { account: processIdle })));
  return pool;
}
