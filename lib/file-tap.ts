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
  #offThread: OffThreadHash | Hash | undefined;
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
    if (this.#offThread instanceof OffThreadHash && this.#digest === undefined) this.#offThread.cancel();
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
    if (this.#offThread && !(this.#offThread instanceof OffThreadHash)) {
      this.#offThread.update(chunk);
      return;
    }
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#offThread === undefined && this.#heldBytes > INLINE_UP_TO) this.#offThread = startOffThread(this.#onHashDrain);
    if (this.#offThread && this.#heldBytes >= BATCH) this.#flush();
  }

  #onHashDrain = (): void => {
    this.#hashFull = false;
    // Always resume: a _read() that arrived while the hash was full pushed nothing, and Readable will not
    // ask again until we push. If our own buffer is full, the next push pauses the source again.
    this.#source.resume();
  };

  /** Hands the held chunks to the background hash (or, if it could not start, the inline one). */
  #flush(): void {
    const hash = this.#offThread;
    if (hash instanceof OffThreadHash) this.#hashFull = !hash.update(Buffer.concat(this.#held, this.#heldBytes));
    else if (hash) for (const chunk of this.#held) hash.update(chunk);
    this.#held = [];
    this.#heldBytes = 0;
  }

  #onEnd = (): void => {
    this.#detach();
    if (this.#hashing) this.#digest = this.#finishHash();
    this.push(null);
  };

  #finishHash(): Promise<string | undefined> {
    this.#offThread ??= createHash('sha256');
    this.#flush();
    const hash = this.#offThread;
    return hash instanceof OffThreadHash ? hash.end() : Promise.resolve(hash.digest('hex'));
  }

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}

/** The background hash, or an inline one where worker threads are unavailable. */
function startOffThread(onDrain: () => void): OffThreadHash | Hash {
  try {
    return new OffThreadHash(onDrain);
  } catch {
    return createHash('sha256');
  }
}
