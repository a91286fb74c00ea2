import type { FileHandle } from 'node:fs/promises';
import { giveBack } from '../lib/core/chunk-release';
import type { ChunkSink } from '../lib/core/chunk-sink';
import { writeAll } from './write-all';

/** An `end()` waiting for the last writes and the close. */
type Ending = { resolve: () => void; reject: (err: Error) => void };

/**
 * Chunks queued at most (besides the bytes): a client sending tiny TCP segments must not make the writer hold
 * a JS object per byte. Past it the sender waits for the write in flight, as past `maxQueued` bytes.
 */
const MAX_QUEUED_CHUNKS = 64;

/**
 * A sink into an open file that writes the parser's chunks themselves, no copy: the first at once, then,
 * whenever a write returns, everything that came meanwhile in one `writev` (the way `fs.WriteStream` writes,
 * with none of its per-chunk stream machinery). The sender waits while `maxQueued` bytes (or 64 chunks) wait
 * behind the write in flight: the writer holds less than twice `maxQueued` plus two chunks.
 *
 * Once a write has returned, each of its chunks that the core's tap claimed for this writer (a file part that
 * is the whole of a body chunk only the parser read, see chunk-release.ts) is given back at once. Holding the
 * socket's chunks until their write returns would otherwise keep megabytes of them alive across young GCs,
 * which V8 counts against its old-generation limit: full GCs every few dozen ms with 16 large uploads (bench/
 * README.md, "Large uploads and V8's old-generation limit"). Copying them into write batches (the earlier
 * design, kept for resumable appends: BatchedFileWriter) avoided that at the cost of a memcpy per chunk;
 * given back, they cost neither (same file, "Session 22").
 *
 * `end()` resolves once every byte is written and the file closed; `abort()` closes it too, never under a
 * write in flight (the kernel may still be reading the chunks, and the descriptor's number must not be
 * reused under it).
 */
export class DirectFileWriter implements ChunkSink {
  readonly #handle: FileHandle;
  readonly #maxQueued: number;
  #queue: Buffer[] = [];
  #queuedBytes = 0;
  #writing = false;
  /** The sender's `drained`, held while the queue is full. */
  #drained: (() => void) | undefined;
  /** Aborted or failed: chunks are dropped, and the file is closed once no write is in flight. */
  #stopped = false;
  #ending: Ending | undefined;
  #ended: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  /** Set by abort while a write is in flight: the file is closed once that write returns. */
  #closeAfterWrite: (() => void) | undefined;
  #closedAfterWrite: Promise<void> | undefined;
  #onFailure: ((err: Error) => void) | undefined;

  constructor(handle: FileHandle, maxQueued: number) {
    this.#handle = handle;
    this.#maxQueued = maxQueued;
  }

  write(chunk: Buffer, drained: () => void): boolean {
    if (this.#stopped) return true;
    this.#queue.push(chunk);
    this.#queuedBytes += chunk.length;
    if (!this.#writing) this.#writeQueue();
    else if (this.#queuedBytes >= this.#maxQueued || this.#queue.length >= MAX_QUEUED_CHUNKS) {
      this.#drained = drained;
      return false;
    }
    return true;
  }

  failed(fail: (err: Error) => void): void {
    this.#onFailure = fail;
  }

  end(): Promise<void> {
    return (this.#ended ??= new Promise((resolve, reject) => {
      if (this.#stopped) return reject(new Error('The writer was stopped before its end'));
      this.#ending = { resolve, reject };
      if (!this.#writing) this.#finish();
    }));
  }

  abort(): Promise<void> {
    this.#stop();
    const ending = this.#ending;
    this.#ending = undefined;
    ending?.reject(new Error('The writer was aborted before its end'));
    if (this.#writing) return (this.#closedAfterWrite ??= new Promise((resolve) => (this.#closeAfterWrite = resolve)));
    return this.#close().catch(() => undefined);
  }

  /** With no write in flight: what is queued goes out, then the file is closed. */
  #finish(): void {
    if (this.#queue.length > 0) return this.#writeQueue(); // its callback comes back here
    const ending = this.#ending as Ending;
    this.#ending = undefined;
    this.#close().then(ending.resolve, ending.reject);
  }

  #writeQueue(): void {
    const chunks = this.#queue;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#writing = true;
    writeAll(this.#handle.fd, chunks, null, () => this.#stopped, (err) => {
      this.#writing = false;
      // No write reads these chunks any more (a failed or stopped one neither).
      for (const chunk of chunks) giveBack(chunk, this);
      const close = this.#closeAfterWrite;
      this.#closeAfterWrite = undefined;
      if (close) return void this.#close().then(close, close);
      if (this.#stopped) return;
      if (err) return this.#fail(err);
      if (this.#ending) return this.#finish();
      if (this.#queue.length > 0) this.#writeQueue();
      // The queue just went out: a sender that waited may go on.
      const drained = this.#drained;
      this.#drained = undefined;
      drained?.();
    });
  }

  #stop(): void {
    this.#stopped = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#drained = undefined;
  }

  #close(): Promise<void> {
    return (this.#closing ??= this.#handle.close());
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
