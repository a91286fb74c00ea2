/** How many bytes of one size may wait for reuse, and how long after the last take they are kept. */
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
 * Bounded: at most 16 MiB per size wait for reuse, and all of them are let go after 10 s without a take.
 * Only the writer that took a buffer gives it back, once nothing (no write in flight) uses it any more.
 */
export class BufferPool {
  readonly size: number;
  readonly #maxIdle: number;
  readonly #idleMs: number;
  #idle: Buffer[] = [];
  #takenSinceCheck = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(size: number, { maxIdleBytes = MAX_IDLE_BYTES, idleMs = IDLE_MS } = {}) {
    this.size = size;
    this.#maxIdle = Math.floor(maxIdleBytes / size);
    this.#idleMs = idleMs;
  }

  /** Buffers waiting for reuse. */
  get idle(): number {
    return this.#idle.length;
  }

  /** A buffer of `size` bytes with arbitrary content (like `Buffer.allocUnsafeSlow`). */
  take(): Buffer {
    this.#takenSinceCheck = true;
    return this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Returns a buffer from `take()` that nothing references any more. */
  give(buffer: Buffer): void {
    if (buffer.length !== this.size || this.#idle.length >= this.#maxIdle) return;
    this.#idle.push(buffer);
    this.#timer ??= setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
  }

  #checkIdle(): void {
    this.#timer = undefined;
    if (this.#takenSinceCheck) {
      this.#takenSinceCheck = false;
      if (this.#idle.length > 0) this.#timer = setTimeout(() => this.#checkIdle(), this.#idleMs).unref();
      return;
    }
    this.#idle = [];
  }
}

const pools = new Map<number, BufferPool>();

/** The process's pool of buffers of `size` bytes. */
export function bufferPool(size: number): BufferPool {
  let pool = pools.get(size);
  if (pool === undefined) pools.set(size, (pool = new BufferPool(size)));
  return pool;
}
