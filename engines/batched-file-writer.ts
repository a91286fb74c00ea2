import type { FileHandle } from 'node:fs/promises';
import { bufferPool, type BufferPool } from '../lib/core/buffer-pool';
import type { ChunkSink } from '../lib/core/chunk-sink';
import { writeAll } from './write-all';

export interface BatchedFileWriterOptions {
  /** Where the first byte goes (`pwritev`); by default the file's own position, advanced by each write. */
  readonly position?: number;
  /** Told how many bytes this writer has written, after each batch's write returns. */
  readonly written?: (bytes: number) => void;
  /**
   * Write what the filling batch holds as soon as no write is in flight, instead of once it is full:
   * batches then grow (up to `batchBytes`) only while the disk is busy, like fs.WriteStream's. Under many
   * concurrent files this spent less kernel time per GB than full, aligned batches (bench/README.md,
   * "Session 11: when batches go out").
   */
  readonly eager?: boolean;
}
/** An `end()` waiting for the last writes and the close. */
type Ending = { resolve: () => void; reject: (err: Error) => void };

/**
 * A sink into an open file that hands the kernel batches of chunks (one `writev` per batch, at most
 * `batchBytes`) instead of one write per incoming chunk: full batches by default, or in `eager` mode
 * whatever arrived while the last write was in flight. Parser chunks are 16–64 KiB, and a write per chunk
 * costs a thread-pool round trip (futex and epoll wake-ups, a callback) larger than the copy into the page
 * cache itself: batching is where a disk upload's CPU per GB goes down (bench/README.md, "Profile"). It is a ChunkSink,
 * not a Writable: the core's tap calls `write()` from the parser's events, with no stream hop between.
 *
 * Chunks are copied into two buffers of `batchBytes` that the writer owns for the file's whole life (one
 * filling while the other is written), and released at once. Holding the socket's chunks by reference
 * until their batch is written instead keeps megabytes of freshly read buffers alive across young GCs
 * (1 MiB per file), and V8 counts those against its old-generation limit: with 16 large uploads that made
 * full GCs every few dozen ms more likely (measured: bench/README.md, "Large uploads and V8's
 * old-generation limit"). The copy is a memcpy per chunk, and tiny chunks cannot inflate what a batch holds.
 * The two buffers come from a process-wide pool and go back to it once the file is closed: allocated per
 * file, they would die in V8's old generation after every upload (see BufferPool).
 *
 * `end()` resolves once every byte is written and the file closed; `abort()` closes it too, never under
 * a write in flight.
 */
export class BatchedFileWriter implements ChunkSink {
  /** A chunk `write()` returned true for is copied into the batches (or dropped once stopped): see ChunkSink. */
  readonly copies = true;
  readonly #handle: FileHandle;
  readonly #batchBytes: number;
  readonly #pool: BufferPool;
  /**
   * The batch being filled (taken from the pool on first use) and the other one, once its write has
   * returned: with no write in flight these two are all the buffers the writer holds.
   */
  #filling: Buffer | undefined;
  #spare: Buffer | undefined;
  #fillingBytes = 0;
  #writing = false;
  /** What goes on once the write in flight returns: the rest of a chunk that found both batches full. */
  #waiting: (() => void) | undefined;
  /** Aborted or failed: chunks are dropped, and the file is closed once no write is in flight. */
  #stopped = false;
  #closing: Promise<void> | undefined;
  /** Set by abort while a write is in flight: the file is closed once that write returns, never under it. */
  #closeAfterWrite: (() => void) | undefined;
  #closedAfterWrite: Promise<void> | undefined;
  #onFailure: ((err: Error) => void) | undefined;
  #ending: Ending | undefined;
  #ended: Promise<void> | undefined;
  /** Where the next batch goes; null: at the file's own position. */
  #position: number | null;
  #bytesWritten = 0;
  readonly #onWritten: ((bytes: number) => void) | undefined;
  /** flush() came while a write was in flight: the filling batch goes out when that write returns. */
  #flushWanted = false;
  readonly #eager: boolean;

  constructor(handle: FileHandle, batchBytes: number, pool: BufferPool = bufferPool(batchBytes), options: BatchedFileWriterOptions = {}) {
    if (pool.size !== batchBytes) throw new RangeError(`The pool's buffers are ${pool.size} bytes, batches ${batchBytes}`);
    this.#handle = handle;
    this.#batchBytes = batchBytes;
    this.#pool = pool;
    this.#position = options.position ?? null;
    this.#onWritten = options.written;
    this.#eager = options.eager === true;
  }

  /** Bytes written to the file so far (whole batches whose write has returned). */
  get bytesWritten(): number {
    return this.#bytesWritten;
  }

  write(chunk: Buffer, drained: () => void): boolean {
    return this.#stopped || this.#copy(chunk, 0, drained);
  }

  /**
   * Writes what the filling batch holds now instead of once it is full (a client that pauses, a progress
   * point the caller wants on disk); after the write in flight if there is one.
   */
  flush(): void {
    if (this.#stopped || this.#fillingBytes === 0) return;
    if (this.#writing) this.#flushWanted = true;
    else this.#writeBatch();
  }

  failed(fail: (err: Error) => void): void {
    this.#onFailure = fail;
  }

  end(): Promise<void> {
    return (this.#ended ??= new Promise((resolve, reject) => {
      if (this.#stopped) return reject(new Error('The writer was stopped before its end'));
      this.#ending = { resolve, reject };
      // A stream may end while the rest of its last chunk waits for room: that goes first.
      if (!this.#writing) this.#finish();
    }));
  }

  /** With no write in flight: the last batch goes out, then the file is closed. */
  #finish(): void {
    if (this.#fillingBytes > 0) return this.#writeBatch(); // its callback comes back here
    const ending = this.#ending as Ending;
    this.#ending = undefined;
    this.#close().then(ending.resolve, ending.reject);
  }

  abort(): Promise<void> {
    this.#stop();
    // An end() still waiting for its last writes will not get them.
    const ending = this.#ending;
    this.#ending = undefined;
    ending?.reject(new Error('The writer was aborted before its end'));
    // A writev in flight still uses the descriptor: closing now would let the kernel hand its number to the
    // next file opened, and the rest of a short write would land there.
    if (this.#writing) return (this.#closedAfterWrite ??= new Promise((resolve) => (this.#closeAfterWrite = resolve)));
    return this.#close().catch(() => undefined);
  }

  #stop(): void {
    this.#stopped = true;
    this.#fillingBytes = 0;
    this.#waiting = undefined;
  }

  /** Closes the file (once); the batches go back to the pool, since no write can use them any more. */
  #close(): Promise<void> {
    if (this.#closing) return this.#closing;
    if (this.#filling) this.#pool.give(this.#filling);
    if (this.#spare) this.#pool.give(this.#spare);
    this.#filling = this.#spare = undefined;
    return (this.#closing = this.#handle.close());
  }

  /**
   * Copies `chunk` from `from` on into the batches; a full batch goes out as soon as no write is in
   * flight. False when both batches are full: the rest is copied (and `drained` called) once the write
   * in flight returns.
   */
  #copy(chunk: Buffer, from: number, drained: () => void): boolean {
    while (from < chunk.length) {
      if (this.#fillingBytes === this.#batchBytes) {
        if (this.#writing) {
          this.#waiting = () => {
            if (this.#copy(chunk, from, drained)) drained();
          };
          return false;
        }
        this.#writeBatch();
      }
      this.#filling ??= this.#pool.take();
      const copied = chunk.copy(this.#filling, this.#fillingBytes, from);
      this.#fillingBytes += copied;
      from += copied;
    }
    if (!this.#writing && this.#batchReady()) this.#writeBatch();
    return true;
  }

  /** Whether the filling batch goes out once no write is in flight: full, flushed, or anything in eager mode. */
  #batchReady(): boolean {
    return this.#fillingBytes === this.#batchBytes || (this.#fillingBytes > 0 && (this.#eager || this.#flushWanted));
  }

  #writeBatch(): void {
    const batch = this.#filling as Buffer;
    const length = this.#fillingBytes;
    this.#filling = this.#spare;
    this.#spare = undefined;
    this.#fillingBytes = 0;
    this.#writing = true;
    this.#flushWanted = false;
    const position = this.#position;
    if (position !== null) this.#position = position + length;
    writeAll(this.#handle.fd, [batch.subarray(0, length)], position, () => this.#stopped, (err) => {
      this.#writing = false;
      this.#spare = batch;
      const close = this.#closeAfterWrite;
      this.#closeAfterWrite = undefined;
      if (close) return void this.#close().then(close, close);
      if (this.#stopped) return;
      if (err) return this.#fail(err);
      this.#bytesWritten += length;
      this.#onWritten?.(this.#bytesWritten);
      if (this.#stopped) return; // (the callback may stop the writer)
      const waiting = this.#waiting;
      this.#waiting = undefined;
      waiting?.(); // the rest of a chunk that found both batches full (it may start the next write)
      if (this.#writing) return;
      if (this.#ending) this.#finish();
      // The other batch filled up while this one was written (or a flush waited, or eager): keep the disk busy.
      else if (this.#batchReady()) this.#writeBatch();
    });
  }

  #fail(err: Error): void {
    this.#stop();
    const ending = this.#ending;
    this.#ending = undefined;
    void this.#close().then(
      () => ending?.reject(err),
      () => ending?.reject(err),
    );
    if (!ending) this.#onFailure?.(err);
  }
}
