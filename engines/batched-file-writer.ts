import { writev } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { bufferPool, type BufferPool } from '../lib/core/buffer-pool';

type Callback = (error?: Error | null) => void;

/**
 * A write stream into an open file that hands the kernel batches of `batchBytes` (one `writev` per batch)
 * instead of one write per incoming chunk. Parser chunks are 16–64 KiB, and a write per chunk costs a
 * thread-pool round trip (futex and epoll wake-ups, a callback) larger than the copy into the page cache
 * itself: batching is where a disk upload's CPU per GB goes down (bench/README.md, "Profile").
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
 * `finish` means every byte was written and the handle closed; destroy closes the handle too.
 */
export class BatchedFileWriter extends Writable {
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
  /** What goes on once the write in flight returns: the rest of a chunk that found both batches full, or the end. */
  #waiting: (() => void) | undefined;
  /** Set by destroy while a write is in flight: the file is closed once that write returns, never under it. */
  #closeAfterWrite: (() => void) | undefined;

  constructor(handle: FileHandle, batchBytes: number, pool: BufferPool = bufferPool(batchBytes)) {
    super({ highWaterMark: 64 * 1024 });
    if (pool.size !== batchBytes) throw new RangeError(`The pool's buffers are ${pool.size} bytes, batches ${batchBytes}`);
    this.#handle = handle;
    this.#batchBytes = batchBytes;
    this.#pool = pool;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.#copy(chunk, 0, callback);
  }

  override _final(callback: Callback): void {
    const finish = () => {
      if (this.#fillingBytes === 0) return void this.#close().then(() => callback(), callback);
      this.#writeBatch();
      this.#waiting = finish;
    };
    if (this.#writing) this.#waiting = finish;
    else finish();
  }

  override _destroy(err: Error | null, callback: Callback): void {
    this.#fillingBytes = 0;
    this.#waiting = undefined;
    // After _final the handle is closed already; closing again is harmless, and `err` is what counts.
    const close = () => void this.#close().then(() => callback(err), () => callback(err));
    // A writev in flight still uses the descriptor: closing now would let the kernel hand its number to the
    // next file opened, and the rest of a short write would land there.
    if (this.#writing) this.#closeAfterWrite = close;
    else close();
  }

  /** Closes the file; the batches go back to the pool, since no write can use them any more. */
  #close(): Promise<void> {
    if (this.#filling) this.#pool.give(this.#filling);
    if (this.#spare) this.#pool.give(this.#spare);
    this.#filling = this.#spare = undefined;
    return this.#handle.close();
  }

  /** Copies `chunk` from `from` on into the batches; a full batch goes out as soon as no write is in flight. */
  #copy(chunk: Buffer, from: number, callback: Callback): void {
    while (from < chunk.length) {
      if (this.#fillingBytes === this.#batchBytes) {
        if (this.#writing) {
          // Both batches full: backpressure until the write in flight returns.
          this.#waiting = () => this.#copy(chunk, from, callback);
          return;
        }
        this.#writeBatch();
      }
      this.#filling ??= this.#pool.take();
      const copied = chunk.copy(this.#filling, this.#fillingBytes, from);
      this.#fillingBytes += copied;
      from += copied;
    }
    if (this.#fillingBytes === this.#batchBytes && !this.#writing) this.#writeBatch();
    callback();
  }

  #writeBatch(): void {
    const batch = this.#filling as Buffer;
    const length = this.#fillingBytes;
    this.#filling = this.#spare;
    this.#spare = undefined;
    this.#fillingBytes = 0;
    this.#writing = true;
    writeAll(this.#handle.fd, [batch.subarray(0, length)], () => this.destroyed, (err) => {
      this.#writing = false;
      this.#spare = batch;
      const close = this.#closeAfterWrite;
      this.#closeAfterWrite = undefined;
      if (close) return close();
      if (err) return void this.destroy(err);
      if (this.destroyed) return;
      const waiting = this.#waiting;
      this.#waiting = undefined;
      if (waiting) return waiting();
      // The other batch filled up while this one was written: keep the disk busy.
      if (this.#fillingBytes === this.#batchBytes) this.#writeBatch();
    });
  }
}

/** `writev` until every byte is written (a regular file rarely writes short, but it may), or `stopped()`. */
function writeAll(fd: number, buffers: Buffer[], stopped: () => boolean, callback: Callback): void {
  writev(fd, buffers, (err, written) => {
    if (err || stopped()) return callback(err);
    let rest = written;
    let i = 0;
    while (i < buffers.length && rest >= buffers[i].length) rest -= buffers[i++].length;
    if (i === buffers.length) return callback();
    const remaining = buffers.slice(i);
    remaining[0] = remaining[0].subarray(rest);
    writeAll(fd, remaining, stopped, callback);
  });
}
