import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Collected, Reservations } from './collect-chunks';

/** A `collect()` in progress: chunks go straight from the source into `chunks`. */
interface Collector {
  readonly lease: Reservations;
  readonly maxBytes: number;
  readonly chunks: Buffer[];
  size: number;
  readonly resolve: (collected: Collected) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The stream an engine reads: the parser's file stream, counted (and hashed, when asked) on the way
 * through. A plain Readable fed by hand (not a Transform) keeps one cheap hop per chunk; backpressure is
 * passed to the parser by pausing its file stream when we are full.
 *
 * It is also the one channel of cancellation: when the request fails, the core destroys the tap with the
 * error, so an engine that only reads its stream stops without knowing about any signal.
 *
 * The digest is updated chunk by chunk on the event loop: no copies, no thread hops, and the cost is the
 * digest's own (measured in bench/).
 */
export class FileTap extends Readable {
  readonly #source: Readable;
  #bytes = 0;
  readonly #hash: Hash | undefined;
  #digest: string | undefined;
  #sourceEnded = false;
  #collector: Collector | undefined;
  /** Every byte went to a collector: the tap is done without ever having been read. */
  #collected = false;

  constructor(source: Readable, hash: boolean) {
    super({ highWaterMark: 64 * 1024 });
    this.#source = source;
    if (hash) this.#hash = createHash('sha256');
    source.on('data', this.#onData).on('end', this.#onEnd).on('error', this.#onError);
  }

  /** Bytes that went through so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex sha256 of all the bytes; undefined when hashing is off or before the source has ended. */
  get sha256(): string | undefined {
    return this.#digest;
  }

  /** Whether every byte was consumed, by a reader or by `collect()`. */
  get consumed(): boolean {
    return this.#collected || this.readableEnded;
  }

  /** The digest as a promise (the engine contract's `sha256()`). */
  digest(): Promise<string | undefined> {
    return Promise.resolve(this.#digest);
  }

  /** Whether `collect()` may take over: nothing has read or buffered any of the tap yet. */
  get collectable(): boolean {
    return (
      this.#collector === undefined &&
      !this.#sourceEnded &&
      !this.destroyed &&
      this.readableFlowing === null &&
      this.readableLength === 0 &&
      this.listenerCount('data') === 0 &&
      this.listenerCount('readable') === 0
    );
  }

  /**
   * `collectChunks()` for the tap itself (the memory and spool engines' path): the source's chunks go
   * straight into the list, without the Readable hop and its end/close events. Same contract: stops
   * before passing `maxBytes` or the budget with the source paused (`putBack()` then hands the tap on),
   * and a destroyed tap (the request failed) rejects and releases what was reserved.
   */
  collect(lease: Reservations, maxBytes: number): Promise<Collected> {
    return new Promise((resolve, reject) => {
      this.#collector = { lease, maxBytes, chunks: [], size: 0, resolve, reject };
    });
  }

  override _read(): void {
    this.#source.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#detach();
    // Let the parser go on past this part: the request is failing, or the engine gave up on it.
    this.#source.resume();
    const collector = this.#collector;
    if (collector) {
      this.#collector = undefined;
      collector.lease.release(collector.size);
      collector.reject(err ?? new Error('Premature close'));
    }
    callback(err);
  }

  #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    this.#hash?.update(chunk);
    const collector = this.#collector;
    if (collector === undefined) {
      if (!this.push(chunk)) this.#source.pause();
    } else if (collector.size + chunk.length <= collector.maxBytes && collector.lease.tryReserve(chunk.length)) {
      collector.chunks.push(chunk);
      collector.size += chunk.length;
    } else {
      // Past the limit or the budget: stop, and leave the rest to whoever reads the tap next.
      this.#source.pause();
      this.#collector = undefined;
      collector.resolve({ chunks: collector.chunks, size: collector.size, overflow: chunk });
    }
  };

  #onEnd = (): void => {
    // No detach: an ended source sends nothing more, and removing three listeners per file is not free.
    this.#sourceEnded = true;
    if (this.#hash) this.#digest = this.#hash.digest('hex');
    const collector = this.#collector;
    if (collector === undefined) return void this.push(null);
    this.#collector = undefined;
    this.#collected = true;
    collector.resolve({ chunks: collector.chunks, size: collector.size });
  };

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}
