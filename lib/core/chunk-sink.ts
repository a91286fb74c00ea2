import type { Readable } from 'node:stream';
import { releaseChunk } from './chunk-release';
import { FileTap } from './file-tap';

/**
 * Where a file's bytes go without a stream hop in between: `streamInto()` hands it the chunks as they
 * come, with backpressure, and the core's tap calls it straight from the parser's `data` events. A
 * Writable in the same place costs a state machine, a callback and a tick per chunk (bench/README.md,
 * "Profile").
 */
export interface ChunkSink {
  /**
   * Takes `chunk`. Returns false when the sink is full: the caller sends nothing more until the sink
   * calls `drained` (once).
   */
  write(chunk: Buffer, drained: () => void): boolean;
  /** Every chunk was given: resolves once all of them are stored, rejects with the sink's error. */
  end(): Promise<void>;
  /**
   * The bytes will not all come (the stream failed, or the sink did): stop and let go of everything.
   * Resolves once nothing is in flight; never rejects; may be called more than once.
   */
  abort(): Promise<void>;
  /** Registers who to tell when the sink fails on its own (a write error) before `end()` is called. */
  failed(fail: (err: Error) => void): void;
  /**
   * `write()` copies a chunk it returns true for and keeps no reference to it: the feeder may then give the
   * chunk's memory back (`releaseChunk`, for chunks their owner marked).
   */
  readonly copies?: boolean;
}

/**
 * Feeds `stream` into `sink` to its end. Settles once the sink has stored everything (or failed): on a
 * stream error (or a close before the end) the sink is aborted; on a sink error the stream is destroyed
 * (for the core's tap that lets the parser go on past the part).
 */
export function streamInto(stream: Readable, sink: ChunkSink): Promise<void> {
  // The core's own stream, not yet read: it calls the sink from its source's events directly.
  if (stream instanceof FileTap && stream.forwardable) return stream.forward(sink);
  return feed(stream, sink, {}).then(ignore);
}

export interface KeepingOptions {
  /**
   * Called after each chunk was handed to the sink (a progress check, an idle timer's refresh). A promise
   * returned holds the stream (nothing more is read) until it settles. The chunk may be emptied once this
   * returns (see ChunkSink.copies): read it here, not later.
   */
  readonly chunk?: (chunk: Buffer) => Promise<unknown> | void;
  /** On an interrupted stream, let go of what the sink holds (abort) instead of storing it (end). */
  readonly discard?: boolean;
}

/**
 * Like streamInto, for a sink that keeps what it got when the stream does not end cleanly (a resumable
 * append keeps the bytes received before a cut): an error or a premature close ends the sink (or aborts
 * it, with `discard`) and resolves with true, "interrupted". The stream's error is not reported
 * here: its owner knows it. Rejects when the sink fails (the stream is then destroyed).
 */
export function streamIntoKeeping(stream: Readable, sink: ChunkSink, options: KeepingOptions = {}): Promise<boolean> {
  return feed(stream, sink, { keep: true, ...options });
}

function feed(stream: Readable, sink: ChunkSink, { keep = false, chunk: onChunk, discard }: KeepingOptions & { keep?: boolean }): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const detach = () => stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    const settle = () => {
      if (settled) return false;
      settled = true;
      detach();
      return true;
    };
    /** The sink failed: the stream goes (its error is ours to report). */
    const sinkFailed = (err: Error) => {
      if (!settle()) return;
      if (!stream.destroyed) stream.on('error', ignore).destroy(err);
      void sink.abort().then(() => reject(err));
    };
    const interrupted = (err: Error) => {
      if (!settle()) return;
      if (!keep) {
        if (!stream.destroyed) stream.on('error', ignore).destroy(err);
        return void sink.abort().then(() => reject(err));
      }
      if (discard) return void sink.abort().then(() => resolve(true));
      sink.end().then(() => resolve(true), reject);
    };
    /** What holds the stream: the sink being full, a promise of the chunk hook. It flows when none does. */
    let holds = 0;
    const release = () => {
      if (--holds === 0 && !settled) stream.resume();
    };
    const onData = (chunk: Buffer) => {
      // A copying sink has all of the chunk once it returns true, or once it calls back for the rest.
      const copied = sink.write(chunk, sink.copies ? () => (releaseChunk(chunk, stream), release()) : release);
      if (!copied) holds++;
      const wait = onChunk?.(chunk);
      if (copied && sink.copies) releaseChunk(chunk, stream);
      if (wait) {
        holds++;
        wait.then(release, release);
      }
      if (holds > 0) stream.pause();
    };
    const onEnd = () => {
      if (!settle()) return;
      sink.end().then(() => resolve(false), reject);
    };
    const onError = (err: Error) => interrupted(err);
    // Destroyed without an error: it will never end.
    const onClose = () => interrupted(new Error('Premature close'));

    sink.failed(sinkFailed);
    if (stream.readableEnded) return onEnd(); // (a stream that does not destroy itself at its end)
    if (stream.destroyed) return interrupted(stream.errored ?? new Error('Premature close'));
    stream.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
    // A 'data' listener does not restart a stream someone paused (e.g. the spool handing over a rollover).
    stream.resume();
  });
}

function ignore(): void {}
