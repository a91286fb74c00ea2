import type { Hash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { ownChunk } from '../core/chunk-release';
import { SpoolError } from '../core/errors';
import type { ChecksumVerifier } from './checksum';

export interface AppendTapOptions {
  /** Bytes this request may append; one more fails the tap with `overflow`. */
  readonly max: number;
  readonly overflow: () => SpoolError;
  /** Per-request checksum, verified when the body ends: a mismatch fails the tap instead of ending it. */
  readonly verifier?: ChecksumVerifier;
  /** The whole upload's running sha256, fed with every byte handed to the store. */
  readonly hash?: Hash;
}

/**
 * The stream a store reads: the request body, counted, limited, checksummed and hashed on the way. It
 * holds at most one chunk (highWaterMark 0, the body is read only when the store asks for more), so what
 * was handed over and what was hashed stay within a chunk of what the store has consumed — an append cut
 * off mid-way usually keeps the running hash valid.
 *
 * The body is read in paused mode: each time the store asks, `read()` takes everything the request has
 * buffered as one Buffer (the very chunk when there is one, as with ordinary traffic; a concatenation when
 * there are several). A client sending 1-byte HTTP chunks thus costs one Buffer per read rather than one
 * per byte (~200 bytes of memory and a push/pull each) downstream of the request.
 *
 * It is the one channel of cancellation: `fail(err)` stops it, and the store stops (keeping what it
 * stored unless the append is atomic). What was already handed over, and so counted and hashed — bytes the
 * client delivered — still goes to the store first: the tap ends after it rather than being destroyed with
 * it. An atomic (checksummed) append's tap is destroyed instead: none of its bytes count. `failure` tells
 * why it did not end cleanly.
 */
/** Fewer bytes than this, buffered by the request, are read once the socket read has been parsed. */
const GATHER_BYTES = 16 * 1024;

export class AppendTap extends Readable {
  readonly #source: IncomingMessage;
  readonly #options: AppendTapOptions;
  #bytes = 0;
  #failure: Error | undefined;
  /** Since when the store has been waiting for the client's next bytes; undefined while it is not. */
  #waitingSince: number | undefined;
  /** The store asked for more (`_read()`) and nothing has been handed over since. */
  #wanted = false;
  /** A read of a few buffered bytes waits for the rest of the socket read (see #onReadable). */
  #gathering: NodeJS.Immediate | undefined;
  /** `push(null)` was called. */
  #eof = false;
  /** Bytes the request held before the tap came: not the tap's alone (see `#pull`). */
  readonly #before: number;
  /** When the store was last handed something (a chunk, the end), or the tap was made. */
  #handedAt = Date.now();

  constructor(source: IncomingMessage, options: AppendTapOptions) {
    super({ highWaterMark: 0 });
    this.#source = source;
    this.#options = options;
    this.#before = source.readableLength;
    // A 'readable' listener puts the request in paused mode: nothing flows, `read()` takes what is buffered.
    source.on('readable', this.#onReadable);
    source.once('end', this.#onEnd);
    source.once('error', this.#onAborted);
    source.once('close', this.#onClose);
    // A request that ended or went away before the tap was made (its client left while the handler waited
    // for the lock, the state, the memory budget) sends those events no more: settle as if they came now.
    // One whose body ended but is still buffered is read as usual ('end' follows its last read).
    if (source.readableEnded) this.#onEnd();
    else if (source.destroyed) this.#onAborted(); // no 'end' after a destroy: what was buffered is gone
  }

  /** Bytes handed over (and hashed) so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Why the tap did not end cleanly; undefined while running or after a clean end. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Since when (ms) the store has been asking for bytes the client has not sent; undefined when it is not. */
  get waitingSince(): number | undefined {
    return this.#waitingSince;
  }

  /**
   * Since when (ms) the store has had the turn: it was handed something (or the tap was made, or the body
   * ended) and has not asked for more since. Undefined while it waits for the client.
   */
  get storeBusySince(): number | undefined {
    return this.#waitingSince === undefined ? this.#handedAt : undefined;
  }

  fail(err: Error): void {
    // After a clean end (every byte in, the checksum matched) nothing can fail the body any more.
    if (this.#failure || this.readableEnded || this.#eof) return;
    this.#failure = err;
    this.#detach();
    this.#waitingSince = undefined;
    this.#handedAt = Date.now(); // the store's turn: to finish
    if (this.#options.verifier === undefined && !this.destroyed) return this.#end();
    this.destroy(err);
  }

  #end(): void {
    if (this.#eof) return;
    this.#eof = true;
    this.#waitingSince = undefined;
    this.#handedAt = Date.now(); // the store's turn: to finish
    this.push(null);
  }

  override _read(): void {
    this.#waitingSince ??= Date.now();
    this.#wanted = true;
    this.#pull();
  }

  /**
   * More of the body is buffered (or it ended): read it if the store is waiting, else at its next `_read()`.
   * A few bytes wait for the rest of the socket read: the HTTP parser hands each HTTP chunk over on its own,
   * and a client sending 1-byte chunks would otherwise cost a Buffer and a push per byte.
   */
  #onReadable = (): void => {
    if (!this.#wanted) return;
    if (this.#source.readableLength >= GATHER_BYTES) return this.#pull();
    this.#gathering ??= setImmediate(this.#pullGathered);
  };

  #pullGathered = (): void => {
    this.#gathering = undefined;
    this.#pull();
  };

  /** Hands over what the request has buffered, as one Buffer, while the store wants more. */
  #pull(): void {
    while (this.#wanted && !this.destroyed && !this.#eof) {
      // Read by nobody else: no 'data' listener gets it (counted before read(), which may remove a once()),
      // and not bytes that sat in the request before the tap came (an app may have peeked at and kept them).
      const ours = this.#source.listenerCount('data') === 0 && this.#bytes >= this.#before;
      // Everything buffered; null when nothing is (then 'readable' or 'end' comes once something happens).
      const chunk = this.#source.read() as Buffer | null;
      if (chunk === null) return;
      this.#waitingSince = undefined;
      this.#handedAt = Date.now();
      if (this.#bytes + chunk.length > this.#options.max) return this.fail(this.#options.overflow());
      this.#bytes += chunk.length;
      this.#options.verifier?.update(chunk);
      this.#options.hash?.update(chunk);
      // The store, reading this tap alone, may give the chunk's memory back once it has copied it.
      if (ours) ownChunk(chunk, this);
      if (!this.push(chunk)) this.#wanted = false;
    }
  }

  #onEnd = (): void => {
    if (this.#failure) return;
    this.#detach();
    if (this.#options.verifier && !this.#options.verifier.matches()) return this.fail(new SpoolError('CHECKSUM_MISMATCH'));
    this.#end();
  };

  #onAborted = (): void => this.fail(new SpoolError('CLIENT_ABORTED'));

  #onClose = (): void => {
    if (!this.#source.complete) this.#onAborted();
  };

  #detach(): void {
    if (this.#gathering) clearImmediate(this.#gathering);
    this.#gathering = undefined;
    this.#source.off('readable', this.#onReadable).off('end', this.#onEnd).off('error', this.#onAborted).off('close', this.#onClose);
    // Errors after we stopped listening (a reset while the answer is written) must not crash the process.
    this.#source.on('error', ignore);
  }
}

function ignore(): void {}
