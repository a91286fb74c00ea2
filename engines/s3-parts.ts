import type { Readable } from 'node:stream';
import { whenAborted } from '../lib/core/abort';
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
  /** Gives the part's reservation back; call it once the part's bytes are no longer held. Idempotent. */
  release(): void;
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
    let part: { body: Buffer; last: boolean; crc?: bigint; release(): void } | undefined;
    const release = () => {
      memory.release(reserved);
      reserved = 0;
      if (part) part.body = EMPTY;
    };
    try {
      const buffer = Buffer.allocUnsafe(partSize);
      const { size, last, checksum } = await fill(this.#stream, buffer, signal, crc);
      let body = buffer.subarray(0, size);
      if (last && size <= partSize / 2) {
        // A short last part (or a small file) keeps an exact copy; the rest of its reservation goes back.
        // The copy fits the reservation: partSize ≥ 2 × size while both exist.
        body = Buffer.from(body);
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
