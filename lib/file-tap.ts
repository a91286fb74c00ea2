import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';

/**
 * The stream an engine reads: the parser's file stream, counted and hashed on the way through.
 * A plain Readable fed by hand (not a Transform) keeps one cheap hop per chunk; backpressure is passed
 * to the parser by pausing its file stream when we are full.
 */
export class FileTap extends Readable {
  #source: Readable;
  #hash: Hash | undefined;
  #bytes = 0;
  #ended = false;
  #digest: string | undefined;

  constructor(source: Readable, hash: boolean) {
    super({ highWaterMark: 64 * 1024 });
    this.#source = source;
    this.#hash = hash ? createHash('sha256') : undefined;
    source.on('data', this.#onData).once('end', this.#onEnd).once('error', this.#onError);
  }

  /** Bytes that went through so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex sha256 of all the bytes, once the source has ended; undefined before that or when hashing is off. */
  digest(): string | undefined {
    if (this.#ended && this.#hash && this.#digest === undefined) this.#digest = this.#hash.digest('hex');
    return this.#digest;
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
    this.#ended = true;
    this.#detach();
    this.push(null);
  };

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}
