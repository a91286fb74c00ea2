/** How many bytes may wait for reuse (all of the process's pools together), and how long after a take. */
const MAX_IDLE_BYTES = 16 * 1024 * 1024;
const IDLE_MS = 10_000;

/**
 * Buffers of one size, reused by writers that copy into buffers of their own (the resumable disk store's batches,
 * the S3 engine's and the resumable S3 store's parts).
 *
 * Why: such a buffer lives as long as its upload (or part), so V8 promotes it to the old generation, and once
 * dead there its bytes count against V8's old-generation limit until the next full GC. Sixteen large uploads
 * then leave 16 MiB of dead buffers per burst, enough to start back-to-back full GCs on an app's heap
 * (bench/README.md, "Large uploads and V8's old-generation limit"), and many uploads to S3 leave dead 8 MiB
 * parts that push peak RSS up. Reused, a burst of uploads allocates nothing new after the first.
 *
 * Bounded: the pool allocates only when no buffer waits, so it never holds more than its users held at once.
 * Of the waiting ones it keeps as many as its running users may hold at once (`enter()`), and beyond that at
 * most 16 MiB in all of the process's pools together (the same bytes would otherwise be garbage waiting for a
 * full GC); a pool lets all its waiting buffers go (those kept for running users too) after 10 s without a take.
 * Only the user that took a buffer gives it back, once, when nothing (no write or request in flight) reads
 * it any more. A buffer never taken from this pool is ignored, and so is one given back again while it
 * waits; one given back again after another user took it cannot be told apart (a lease per take would):
 * callers give back exactly once.
 */
export class BufferPool {
  readonly size: number;
  /** Idle bytes, shared by the pools that share a cap. */
  readonly #account: IdleAccount;
  readonly #idleMs: number;
  #idle: Buffer[] = [];
  /** Idle buffers counted on the shared account: those past what the running users may keep. */
  #counted = 0;
  /** Buffers the running users may hold at once (the sum of their `enter()`). */
  #kept = 0;
  /** Buffers taken and not given back yet (a second give of one must not hand it out twice). */
  readonly #out = new WeakSet<Buffer>();
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
    const buffer = this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.size);
    this.#out.add(buffer);
    this.#count();
    return buffer;
  }

  /** Returns a buffer from `take()` that nothing reads any more. */
  give(buffer: Buffer): void {
    if (!this.#out.delete(buffer)) return;
    this.#idle.push(buffer);
    this.#count();
    if (this.#idle.length > 0) this.#timer ??= setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
  }

  /**
   * A user starts that may hold up to `keep` of this pool's buffers at once (an upload sending parts): while
   * it runs, that many waiting buffers are kept for it beyond the shared cap. The returned function ends it
   * (idempotent); the buffers kept for it then count on the shared cap again, or go.
   */
  enter(keep: number): () => void {
    this.#kept += keep;
    this.#count();
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#kept -= keep;
      this.#count();
    };
  }

  /** Counts the idle buffers past what the running users may keep on the shared cap; drops those it has no room for. */
  #count(): void {
    const over = Math.max(0, this.#idle.length - this.#kept);
    if (over <= this.#counted) {
      this.#account.bytes -= (this.#counted - over) * this.size;
      this.#counted = over;
      return;
    }
    const room = Math.max(0, Math.floor((this.#account.max - this.#account.bytes) / this.size));
    const added = Math.min(over - this.#counted, room);
    this.#account.bytes += added * this.size;
    this.#counted += added;
    if (over > this.#counted) this.#idle.length = this.#kept + this.#counted;
  }

  #checkIdle(): void {
    this.#timer = undefined;
    if (this.#takenSinceCheck) {
      this.#takenSinceCheck = false;
      if (this.#idle.length > 0) this.#timer = setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
      return;
    }
    this.#account.bytes -= this.#counted * this.size;
    this.#counted = 0;
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
