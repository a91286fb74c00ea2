import { writev } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';

type Callback = (error?: Error | null) => void;

/**
 * A batch is also full at this many chunks: a client sending tiny chunks (1-byte HTTP chunks each become
 * a Buffer of ~200 bytes of memory) must not make a batch of `batchBytes` hold a hundred times that.
 */
const MAX_CHUNKS = 128;

/**
 * A write stream into an open file that hands the kernel batches of `batchBytes` (one `writev` per batch)
 * instead of one write per incoming chunk. Parser chunks are 16–64 KiB, and a write per chunk costs a
 * thread-pool round trip (futex and epoll wake-ups, a callback) larger than the copy into the page cache
 * itself: batching is where a disk upload's CPU per GB goes down (bench/README.md, "Profile").
 *
 * Double-buffered: while one batch is being written the next one fills, so the socket keeps being read;
 * the writer holds at most `2 × batchBytes` (+ the stream's own 64 KiB buffer) by reference, never copied.
 * `finish` means every byte was written and the handle closed; destroy closes the handle too.
 */
export class BatchedFileWriter extends Writable {
  readonly #handle: FileHandle;
  readonly #batchBytes: number;
  #filling: Buffer[] = [];
  #fillingBytes = 0;
  #writing = false;
  /** The callback of a chunk that filled the next batch while the previous one was still being written. */
  #waiting: Callback | undefined;
  /** Set by destroy while a write is in flight: the file is closed once that write returns, never under it. */
  #closeAfterWrite: (() => void) | undefined;

  constructor(handle: FileHandle, batchBytes: number) {
    super({ highWaterMark: 64 * 1024 });
    this.#handle = handle;
    this.#batchBytes = batchBytes;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.#filling.push(chunk);
    this.#fillingBytes += chunk.length;
    if (!this.#full()) return callback();
    if (this.#writing) {
      this.#waiting = callback; // both buffers full: backpressure until the write in flight is done
      return;
    }
    this.#writeBatch();
    callback();
  }

  override _final(callback: Callback): void {
    const finish = () => {
      if (this.#fillingBytes === 0) return void this.#handle.close().then(() => callback(), callback);
      this.#writeBatch();
      this.#waiting = finish;
    };
    if (this.#writing) this.#waiting = finish;
    else finish();
  }

  override _destroy(err: Error | null, callback: Callback): void {
    this.#filling = [];
    this.#fillingBytes = 0;
    this.#waiting = undefined;
    // After _final the handle is closed already; closing again is harmless, and `err` is what counts.
    const close = () => void this.#handle.close().then(() => callback(err), () => callback(err));
    // A writev in flight still uses the descriptor: closing now would let the kernel hand its number to the
    // next file opened, and the rest of a short write would land there.
    if (this.#writing) this.#closeAfterWrite = close;
    else close();
  }

  #full(): boolean {
    return this.#fillingBytes >= this.#batchBytes || this.#filling.length >= MAX_CHUNKS;
  }

  #writeBatch(): void {
    const buffers = this.#filling;
    this.#filling = [];
    this.#fillingBytes = 0;
    this.#writing = true;
    writeAll(this.#handle.fd, buffers, () => this.destroyed, (err) => {
      this.#writing = false;
      const close = this.#closeAfterWrite;
      this.#closeAfterWrite = undefined;
      if (close) return close();
      if (err) return void this.destroy(err);
      if (this.destroyed) return;
      const waiting = this.#waiting;
      this.#waiting = undefined;
      if (waiting === undefined) return;
      if (this.#full()) this.#writeBatch();
      waiting();
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
