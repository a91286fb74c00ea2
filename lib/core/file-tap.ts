import { StreamingSha256 } from './streaming-sha256';
import { Readable } from 'node:stream';
import type { ChunkSink } from './chunk-sink';
import type { Collected, Reservations } from './collect-chunks';
import { ByteList } from './byte-list';
import { claimChunk } from './chunk-release';

/** A `collect()` in progress: chunks go straight from the source into `bytes`. */
interface Collector {
  readonly lease: Reservations;
  readonly maxBytes: number;
  readonly bytes: ByteList;
  readonly resolve: (collected: Collected) => void;
  readonly reject: (err: unknown) => void;
}

/** The most bytes a file may have, and what the core does past it (it fails the request, which destroys the tap). */
export interface TapLimit {
  readonly maxBytes: number;
  onExceeded(): void;
}

/** A `forward()` in progress. */
interface Forward {
  readonly sink: ChunkSink;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The stream an engine reads: the parser's file stream, counted, held to the file size limit (and hashed,
 * when asked) on the way through. A plain Readable fed by hand (not a Transform) keeps one cheap hop per
 * chunk; backpressure is passed to the parser by pausing its file stream when we are full. Two paths skip even that hop:
 * `collect()` (chunks into a list, for the memory and spool engines) and `forward()` (chunks into a
 * ChunkSink, for the disk engine).
 *
 * It is also the one channel of cancellation: when the request fails, the core destroys the tap with the
 * error, so an engine that only reads its stream stops without knowing about any signal.
 *
 * The digest is updated chunk by chunk on the event loop: no copies, no thread hops, and the cost is the
 * digest's own (measured in bench/).
 */
export class FileTap extends Readable {
  readonly #source: Readable;
  #bytes = 0;
  readonly #limit: TapLimit | undefined;
  readonly #hash: StreamingSha256 | undefined;
  #digest: string | undefined;
  #sourceEnded = false;
  #collector: Collector | undefined;
  /** Every byte went to a collector or a sink: the tap is done without ever having been read. */
  #collected = false;
  #forward: Forward | undefined;
  /**
   * Chunks a collector took and gave back (`unread()`), in order, from `#pendingAt` on: they go out before
   * the source's next ones, through `_read()` or `forward()`. Kept here rather than `unshift()`ed into the
   * Readable buffer so that `forward()` can hand them on one by one.
   */
  #pending: Buffer[] = [];
  #pendingAt = 0;
  /**
   * The last collect stopped on its own (past the threshold or the budget) and its chunks are not back yet.
   * The source is paused, but its 'end' may already be on its way: the tap must not end before them.
   */
  #overflowed = false;
  /** `push(null)` was called: nothing can go out through the Readable side any more. */
  #eofPushed = false;

  constructor(source: Readable, hash: boolean, limit?: TapLimit) {
    super({ highWaterMark: 64 * 1024 });
    this.#source = source;
    this.#limit = limit;
    if (hash) this.#hash = new StreamingSha256();
    // Nothing flows until a consumer comes (a reader's `_read()`, `collect()` or `forward()`): the tap
    // never holds chunks of its own before then, so the fast paths can take over whole. (Paused first, a
    // 'data' listener does not schedule a resume.)
    source.pause();
    source.on('data', this.#onData).on('end', this.#onEnd).on('error', this.#onError);
  }

  /** Bytes that went through so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Hex sha256 of all the bytes; undefined when hashing is off or before the source has ended. */
  get sha256(): string | undefined {
    return this.#digest;
  }

  /** Whether every byte was consumed, by a reader, by `collect()` or by a sink. */
  get consumed(): boolean {
    return this.#collected || this.readableEnded;
  }

  /** The digest as a promise (the engine contract's `sha256()`). */
  digest(): Promise<string | undefined> {
    return Promise.resolve(this.#digest);
  }

  /** Whether `collect()` may take over: nothing has read or buffered any of the tap yet. */
  get collectable(): boolean {
    return (
      this.#collector === undefined &&
      this.#forward === undefined &&
      !this.#hasPending() &&
      !this.#sourceEnded &&
      !this.destroyed &&
      this.readableFlowing === null &&
      this.readableLength === 0 &&
      this.listenerCount('data') === 0 &&
      this.listenerCount('readable') === 0
    );
  }

  /**
   * `collectChunks()` for the tap itself (the memory and spool engines' path): the source's chunks go
   * straight into the list, without the Readable hop and its end/close events. Same contract: stops
   * before passing `maxBytes` or the budget with the source paused (`putBack()` then hands the tap on),
   * and a destroyed tap (the request failed) rejects and releases what was reserved.
   */
  collect(lease: Reservations, maxBytes: number): Promise<Collected> {
    return new Promise((resolve, reject) => {
      this.#collector = { lease, maxBytes, bytes: new ByteList(), resolve, reject };
      this.#source.resume();
    });
  }

  /**
   * Gives back what the last `collect()` took (its chunks and overflow), to go out first. Only right after
   * a collect that stopped on its own, with nothing read since; false otherwise (use `unshift()` then).
   */
  unread(collected: Collected): boolean {
    if (!this.#overflowed || this.#eofPushed || collected.overflow === undefined || this.readableLength > 0 || this.#hasPending()) return false;
    this.#overflowed = false;
    this.#pending = [...collected.chunks, collected.overflow];
    this.#pendingAt = 0;
    return true;
  }

  /** Whether `forward()` may take over: nobody reads the tap or has read any of it, and it has not failed. */
  get forwardable(): boolean {
    return (
      this.#collector === undefined &&
      this.#forward === undefined &&
      !this.destroyed &&
      !this.#eofPushed &&
      this.readableLength === 0 &&
      this.readableFlowing !== true &&
      this.listenerCount('data') === 0 &&
      this.listenerCount('readable') === 0
    );
  }

  /**
   * `streamInto()` for the tap itself (the disk engine's path): chunks go from the source's `data` events
   * straight into `sink`, after any the tap holds, with the source paused while the sink is full. A
   * destroyed tap (the request failed) aborts the sink and rejects; a failing sink destroys the tap.
   */
  forward(sink: ChunkSink): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#forward = { sink, resolve, reject };
      this.#overflowed = false;
      // (an 'error' listener of our own: a tap used outside the core may have none, and the error is reported here)
      sink.failed((err) => this.on('error', ignore).destroy(err));
      // Nothing from the source until what the tap holds is out (`#pump` resumes it).
      this.#source.pause();
      this.#pump();
    });
  }

  override _read(): void {
    if (this.#forward !== undefined) return;
    this.#overflowed = false; // read from here on: a later unread() would come after bytes already out
    while (this.#hasPending()) {
      if (!this.push(this.#nextPending())) return;
    }
    if (this.#sourceEnded) this.#pushEof();
    else this.#source.resume();
  }

  #pushEof(): void {
    if (this.#eofPushed) return;
    this.#eofPushed = true;
    this.push(null);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#detach();
    // Let the parser go on past this part: the request is failing, or the engine gave up on it.
    this.#source.resume();
    this.#pending = [];
    this.#pendingAt = 0;
    const collector = this.#collector;
    if (collector) {
      this.#collector = undefined;
      collector.lease.release(collector.bytes.size);
      collector.reject(err ?? new Error('Premature close'));
    }
    const forward = this.#forward;
    if (forward) {
      this.#forward = undefined;
      void forward.sink.abort().then(() => forward.reject(err ?? new Error('Premature close')));
    }
    callback(err);
  }

  /** Hands the sink what the tap holds, then lets the source flow into it (or ends it). */
  #pump = (): void => {
    const forward = this.#forward;
    if (forward === undefined) return;
    while (this.#hasPending()) {
      const chunk = this.#nextPending();
      this.#claimFor(chunk, forward.sink);
      if (!forward.sink.write(chunk, this.#pump)) return;
    }
    if (this.#sourceEnded) this.#endForward(forward);
    else this.#source.resume();
  };

  /** Lets `sink` free `chunk` once written (chunk-release.ts), unless the digest still holds it un-hashed. */
  #claimFor(chunk: Buffer, sink: ChunkSink): void {
    if (this.#hash?.holds(chunk) !== true) claimChunk(chunk, sink);
  }

  #hasPending(): boolean {
    return this.#pendingAt < this.#pending.length;
  }

  /** The next pending chunk (an index, not shift(): shift() moves every element of a large array). */
  #nextPending(): Buffer {
    const chunk = this.#pending[this.#pendingAt++];
    if (this.#pendingAt === this.#pending.length) {
      this.#pending = [];
      this.#pendingAt = 0;
    }
    return chunk;
  }

  #endForward(forward: Forward): void {
    this.#forward = undefined;
    this.#collected = true;
    forward.sink.end().then(forward.resolve, forward.reject);
  }

  #onData = (chunk: Buffer): void => {
    this.#bytes += chunk.length;
    // Past the file size limit no byte goes on: the core fails the request, which destroys this tap.
    if (this.#limit !== undefined && this.#bytes > this.#limit.maxBytes) return this.#limit.onExceeded();
    this.#hash?.update(chunk);
    const forward = this.#forward;
    if (forward !== undefined) {
      // The source is resumed only once nothing is pending; a chunk already on its way waits its turn.
      // (Claimed when it goes to the sink: the sink alone holds it then, and may give it back once written.)
      if (this.#hasPending()) {
        this.#pending.push(chunk);
        this.#source.pause();
      } else {
        this.#claimFor(chunk, forward.sink);
        if (!forward.sink.write(chunk, this.#pump)) this.#source.pause();
      }
      return;
    }
    const collector = this.#collector;
    if (collector === undefined) {
      if (!this.push(chunk)) this.#source.pause();
    } else if (collector.bytes.size + chunk.length <= collector.maxBytes && collector.lease.tryReserve(chunk.length)) {
      collector.bytes.push(chunk);
    } else {
      // Past the limit or the budget: stop, and leave the rest to whoever reads the tap next.
      this.#source.pause();
      this.#collector = undefined;
      this.#overflowed = true;
      const size = collector.bytes.size;
      collector.resolve({ chunks: collector.bytes.take(), size, overflow: chunk });
    }
  };

  #onEnd = (): void => {
    // No detach: an ended source sends nothing more, and removing three listeners per file is not free.
    this.#sourceEnded = true;
    if (this.#hash) this.#digest = this.#hash.hex();
    const forward = this.#forward;
    if (forward !== undefined) {
      if (!this.#hasPending()) this.#endForward(forward);
      return;
    }
    const collector = this.#collector;
    if (collector === undefined) {
      // After pending chunks (or a collect's that are not back yet), `_read()` ends the tap once they are out.
      if (!this.#hasPending() && !this.#overflowed) this.#pushEof();
      return;
    }
    this.#collector = undefined;
    this.#collected = true;
    const size = collector.bytes.size;
    collector.resolve({ chunks: collector.bytes.take(), size });
  };

  #onError = (err: Error): void => {
    this.destroy(err);
  };

  #detach(): void {
    this.#source.off('data', this.#onData).off('end', this.#onEnd).off('error', this.#onError);
  }
}

function ignore(): void {}
