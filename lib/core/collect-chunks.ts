import type { Readable } from 'node:stream';
import { ByteList } from './byte-list';
import { FileTap } from './file-tap';

/** Where collected bytes are reserved: a request's MemoryLease, or anything shaped like it. */
export interface Reservations {
  tryReserve(bytes: number): boolean;
  release(bytes: number): void;
}

export interface Collected {
  readonly chunks: Buffer[];
  /** Bytes in `chunks`, all reserved on the lease. */
  readonly size: number;
  /**
   * Set when collection stopped early (past `maxBytes`, or the budget refused): the stream is paused and
   * `chunks` + `overflow` were consumed from it — `putBack` returns them.
   */
  readonly overflow?: Buffer;
}

/**
 * Reads `stream` into memory, reserving every chunk on `lease`, until it ends or would pass
 * `maxBytes` / the budget. Chunks are kept as they come (no concatenation while reading), small ones
 * copied together (ByteList).
 */
export function collectChunks(
  stream: Readable,
  lease: Reservations,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Collected> {
  // The core's own stream, not yet read: collect from its source directly (same contract, fewer hops).
  if (signal === undefined && stream instanceof FileTap && stream.collectable) return stream.collect(lease, maxBytes);
  return new Promise((resolve, reject) => {
    const bytes = new ByteList();

    const settle = (fn: () => void) => {
      stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    const onData = (chunk: Buffer) => {
      if (bytes.size + chunk.length <= maxBytes && lease.tryReserve(chunk.length)) {
        bytes.push(chunk);
        return;
      }
      stream.pause();
      settle(() => resolve({ size: bytes.size, chunks: bytes.take(), overflow: chunk }));
    };
    const onEnd = () => settle(() => resolve({ size: bytes.size, chunks: bytes.take() }));
    const fail = (err: unknown) => {
      lease.release(bytes.size);
      settle(() => reject(err));
    };
    const onError = (err: Error) => fail(err);
    // Destroyed without an error: it will never end.
    const onClose = () => fail(new Error('Premature close'));
    const onAbort = () => fail(signal!.reason);

    // The stream is the core's channel of cancellation (it is destroyed when the request fails);
    // a signal is only for callers that read a stream nobody else can destroy.
    if (signal?.aborted) return onAbort();
    // Destroyed before we got it (the request failed meanwhile): its events are already gone.
    if (stream.destroyed) return fail(stream.errored ?? new Error('Premature close'));
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
    // A 'data' listener does not restart a stream someone paused (e.g. the spool handing over a rollover).
    stream.resume();
  });
}

/**
 * Puts what `collectChunks` consumed back in front of the (paused) stream, in order, so the stream can be
 * handed on whole — no copy, no extra stream hop.
 */
export function putBack(stream: Readable, collected: Collected): void {
  if (stream instanceof FileTap && stream.unread(collected)) return;
  if (collected.overflow) stream.unshift(collected.overflow);
  for (let i = collected.chunks.length - 1; i >= 0; i--) stream.unshift(collected.chunks[i]);
}

/** Files up to this size are copied into one exact-size buffer, so they do not pin larger socket buffers. */
const COMPACT_BELOW = 256 * 1024;

/**
 * Turns collected chunks into a lazily joined buffer. Small files are joined at once (cheap, and frees the
 * socket buffers they were sliced from); large ones are joined only when `buffer` is first read, so a
 * file is never held twice while other uploads wait.
 */
export class ChunkList {
  #chunks: Buffer[] | undefined;
  #joined: Buffer | undefined;
  readonly size: number;

  constructor(chunks: Buffer[], size: number) {
    this.size = size;
    if (size <= COMPACT_BELOW || chunks.length === 1) this.#joined = join(chunks, size);
    else this.#chunks = chunks;
  }

  get buffer(): Buffer {
    if (this.#joined === undefined) {
      this.#joined = join(this.#chunks ?? [], this.size);
      this.#chunks = undefined;
    }
    return this.#joined;
  }

  /** The stored bytes as chunks, without joining them. */
  chunks(): Buffer[] {
    return this.#joined !== undefined ? [this.#joined] : (this.#chunks ?? []);
  }

  clear(): void {
    this.#chunks = undefined;
    this.#joined = Buffer.alloc(0);
  }
}

function join(chunks: Buffer[], size: number): Buffer {
  if (chunks.length === 1 && chunks[0].length === size && chunks[0].buffer.byteLength <= size * 1.1 + 64) {
    return chunks[0];
  }
  return Buffer.concat(chunks, size);
}
