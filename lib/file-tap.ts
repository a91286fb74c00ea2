import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';

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

  constructor(source: Readable, hash: boolean) {
    super({ highWaterMark: 64 * 1024 });
    this.#source = source;
    if (hash) this.#hash = createHash('sha256');
    source.on('data', this.#onData).once('end', this.#onEnd).once('error', this.#onError);
  }

  /** Bytes that went through so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex sha256 of all the bytes; undefined when hashing is off or before the source has ended. */
  get sha256(): string | undefined {
    return this.#digest;
  }

  /** The digest as a promise (the engine contract's `sha256()`). */
  digest(): Promise<string | undefined> {
    return Promise.resolve(this.#digest);
  }

  override _read(): void {
    this.#source.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#detach();
    // Let the parser go on past this part: the request is failing, or the engine gave up on it.
    this.#source.resume();
    callback(err);
  }

  #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    this.#hash?.update(chunk);
    if (!this.push(chunk)) this.#source.pause();
  };

  #onEnd = (): void => {
    this.#detach();
    if (this.#hash) this.#digest = this.#hash.digest('hex');
    this.push(null);
  };

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}
