import type { Readable } from 'node:stream';
import { whenAborted } from '../lib/core/abort';
import { bufferPool } from '../lib/core/buffer-pool';
import type { MemoryLease } from '../lib/core/memory-budget';
import type { Crc } from './s3-checksum';

/**
 * One part's bytes, held under a reservation of the request's memory budget until `release()`, which also
 * drops them: whoever still holds the Part object (an upload loop, its `first` part) no longer keeps the
 * buffer alive past its reservation.
 */
export interface Part {
  /** The bytes; empty once released. */
  readonly body: Buffer;
  /** No byte follows this part. */
  readonly last: boolean;
  /** CRC of `body` when a checksum was asked for. */
  readonly crc?: bigint;
  /**
   * Gives the part's reservation back; call it once the part's bytes are no longer held. Idempotent.
   * `sent`: the request that carried the bytes succeeded, so nothing reads them any more and the buffer
   * goes back to the process's pool for the next part. After a failure it is dropped instead: an
   * abandoned request may still be handing it to a socket.
   */
  release(sent?: boolean): void;
}

export interface PartReaderOptions {
  readonly partSize: number;
  readonly memory: Pick<MemoryLease, 'reserve' | 'release'>;
  readonly signal: AbortSignal;
  readonly crc?: Crc;
}

/**
 * Cuts a stream into parts for S3. Each part is reserved whole on the memory budget *before* a byte of it
 * is read (waiting, first come first served, while the budget is full — the stream stays paused, so the
 * client is slowed down instead of memory growing), then filled by copying chunks into one buffer of
 * `partSize`: the chunks themselves are not kept. Whole-part reservations cannot deadlock: a reservation
 * never waits while holding part of a part.
 *
 * The part buffers come from the process's pool (lib/core/buffer-pool.ts) and go back once sent: a large
 * upload then reuses `queueSize + 1` buffers instead of allocating a new one per part, each of which would
 * live past its UploadPart into V8's old generation and wait there for a full GC (memory that grew with
 * the file's size).
 */
export class PartReader {
  readonly #stream: Readable;
  readonly #options: PartReaderOptions;

  constructor(stream: Readable, options: PartReaderOptions) {
    this.#stream = stream;
    this.#options = options;
  }

  /** The next part; rejects when the stream fails or `signal` aborts (the reservation is then given back). */
  async next(): Promise<Part> {
    const { partSize, memory, signal, crc } = this.#options;
    await memory.reserve(partSize, signal);
    let reserved = partSize;
    const pool = bufferPool(partSize);
    /** The pooled buffer while this part owns it. */
    let pooled: Buffer | undefined;
    let part: { body: Buffer; last: boolean; crc?: bigint; release(sent?: boolean): void } | undefined;
    const release = (sent = false) => {
      if (sent && pooled) pool.give(pooled);
      pooled = undefined;
      memory.release(reserved);
      reserved = 0;
      if (part) part.body = EMPTY;
    };
    try {
      const buffer = (pooled = pool.take()); // may throw (no memory, or a partSize past Buffer's limit)
      const { size, last, checksum } = await fill(this.#stream, buffer, signal, crc);
      let body = buffer.subarray(0, size);
      if (last && size <= partSize / 2) {
        // A short last part (or a small file) keeps an exact copy; the rest of its reservation goes back.
        // The copy fits the reservation: partSize ≥ 2 × size while both exist. Nothing else read the
        // pooled buffer, so it is free for the next part at once.
        body = Buffer.from(body);
        pool.give(buffer);
        pooled = undefined;
        memory.release(partSize - size);
        reserved = size;
      }
      part = { body, last, crc: checksum, release };
      return part;
    } catch (err) {
      release();
      throw err;
    }
  }
}

const EMPTY = Buffer.alloc(0);

interface Filled {
  readonly size: number;
  readonly last: boolean;
  readonly checksum?: bigint;
}

/**
 * Copies chunks from `stream` into `target` until it is full and the stream is known to go on (a peeked
 * chunk is put back, unread), or the stream ends. The CRC is taken chunk by chunk, so no long pause.
 */
function fill(stream: Readable, target: Buffer, signal: AbortSignal, crc: Crc | undefined): Promise<Filled> {
  return new Promise((resolve, reject) => {
    let size = 0;
    let checksum = crc ? 0n : undefined;
    let unlisten = (): void => undefined;
    const copy = (chunk: Buffer, length: number) => {
      chunk.copy(target, size, 0, length);
      if (crc) checksum = crc.update(checksum!, target.subarray(size, size + length));
      size += length;
    };
    const settle = (fn: () => void) => {
      stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      unlisten();
      fn();
    };
    const onData = (chunk: Buffer) => {
      const room = target.length - size;
      if (chunk.length <= room) {
        copy(chunk, chunk.length);
        return; // full or not, keep reading: the next event tells whether this was the last part
      }
      copy(chunk, room);
      stream.pause();
      stream.unshift(chunk.subarray(room));
      settle(() => resolve({ size, last: false, checksum }));
    };
    const onEnd = () => settle(() => resolve({ size, last: true, checksum }));
    const onError = (err: Error) => settle(() => reject(err));
    // Destroyed without an error (or after one we already heard): it will never end.
    const onClose = () => settle(() => reject(stream.errored ?? new Error('Premature close')));
    if (stream.readableEnded) return resolve({ size: 0, last: true, checksum });
    if (stream.destroyed) return reject(stream.errored ?? new Error('Premature close'));
    unlisten = whenAborted(signal, (reason) => settle(() => reject(reason)));
    if (signal.aborted) return;
    stream.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
    stream.resume();
  });
}
