import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { OffThreadHash } from './hash-worker';

/** Files that end within this many bytes are hashed on the event loop, in one go at their end. */
const INLINE_UP_TO = 1024 * 1024;
/** Larger files are hashed in the background thread, in batches of this size (one copy, one message). */
const BATCH = 256 * 1024;

/**
 * The stream an engine reads: the parser's file stream, counted and hashed on the way through.
 * A plain Readable fed by hand (not a Transform) keeps one cheap hop per chunk; backpressure is passed
 * to the parser by pausing its file stream when we are full.
 *
 * Hashing: chunks are only referenced until the file passes 1 MiB. A file that ends before is hashed
 * at its end on the event loop (cheap, no thread hop); a larger one moves to the sha256 worker, so
 * hashing big uploads overlaps with parsing and writing on the other core.
 */
export class FileTap extends Readable {
  #source: Readable;
  #hashing: boolean;
  #bytes = 0;
  #held: Buffer[] = [];
  #heldBytes = 0;
  /** Hashing on the event loop: small files at their end, or everything if no worker could start. */
  #inline: Hash | undefined;
  #background: OffThreadHash | undefined;
  #digest: Promise<string | undefined> | undefined;
  /** The hash worker has a full queue for this file: the source stays paused until it drains. */
  #hashFull = false;

  constructor(source: Readable, hash: boolean) {
    super({ highWaterMark: 64 * 1024 });
    this.#source = source;
    this.#hashing = hash;
    source.on('data', this.#onData).once('end', this.#onEnd).once('error', this.#onError);
  }

  /** Bytes that went through so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex sha256 of all the bytes; undefined when hashing is off or before the source has ended. */
  digest(): Promise<string | undefined> {
    return this.#digest ?? Promise.resolve(undefined);
  }

  override _read(): void {
    if (!this.#hashFull) this.#source.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#detach();
    // Auto-destroy follows a normal end too: only a hash that will never be finished is cancelled.
    if (this.#digest === undefined) this.#background?.cancel();
    this.#held = [];
    // Let the parser go on past this part: the request is failing, or the engine gave up on it.
    this.#source.resume();
    callback(err);
  }

  #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    if (this.#hashing) this.#hash(chunk);
    if (!this.push(chunk) || this.#hashFull) this.#source.pause();
  };

  #hash(chunk: Buffer): void {
    if (this.#inline) return void this.#inline.update(chunk);
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (!this.#background && this.#heldBytes > INLINE_UP_TO) this.#startBackground();
    if (this.#background && this.#heldBytes >= BATCH) this.#flush();
  }

  #startBackground(): void {
    try {
      this.#background = new OffThreadHash(this.#onHashDrain);
    } catch {
      // No worker threads here: hash on the event loop from now on.
      this.#inline = createHash('sha256');
      for (const held of this.#held) this.#inline.update(held);
      this.#held = [];
      this.#heldBytes = 0;
    }
  }

  #onHashDrain = (): void => {
    this.#hashFull = false;
    // Always resume: a _read() that arrived while the hash was full pushed nothing, and Readable will not
    // ask again until we push. If our own buffer is full, the next push pauses the source again.
    this.#source.resume();
  };

  /** Hands the held chunks to the background hash as one batch (one copy, one message). */
  #flush(): void {
    if (this.#heldBytes > 0) this.#hashFull = !this.#background!.update(Buffer.concat(this.#held, this.#heldBytes));
    this.#held = [];
    this.#heldBytes = 0;
  }

  #onEnd = (): void => {
    this.#detach();
    if (this.#hashing) this.#digest = this.#finishHash();
    this.push(null);
  };

  #finishHash(): Promise<string | undefined> {
    if (this.#background) {
      this.#flush();
      return this.#background.end();
    }
    const hash = this.#inline ?? createHash('sha256');
    for (const held of this.#held) hash.update(held);
    this.#held = [];
    return Promise.resolve(hash.digest('hex'));
  }

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}
