import type { Readable } from 'node:stream';
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
}

/**
 * Feeds `stream` into `sink` to its end. Settles once the sink has stored everything (or failed): on a
 * stream error (or a close before the end) the sink is aborted; on a sink error the stream is destroyed
 * (for the core's tap that lets the parser go on past the part).
 */
export function streamInto(stream: Readable, sink: ChunkSink): Promise<void> {
  // The core's own stream, not yet read: it calls the sink from its source's events directly.
  if (stream instanceof FileTap && stream.forwardable) return stream.forward(sink);
  return new Promise((resolve, reject) => {
    let settled = false;
    const detach = () => stream.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      detach();
      if (!stream.destroyed) stream.on('error', ignore).destroy(err); // its error is ours to report
      void sink.abort().then(() => reject(err));
    };
    const resume = () => {
      if (!settled) stream.resume();
    };
    const onData = (chunk: Buffer) => {
      if (!sink.write(chunk, resume)) stream.pause();
    };
    const onEnd = () => {
      if (settled) return;
      settled = true;
      detach();
      sink.end().then(resolve, reject);
    };
    const onError = (err: Error) => fail(err);
    // Destroyed without an error: it will never end.
    const onClose = () => fail(new Error('Premature close'));

    sink.failed(fail);
    if (stream.readableEnded) return onEnd(); // (a stream that does not destroy itself at its end)
    if (stream.destroyed) return fail(stream.errored ?? new Error('Premature close'));
    stream.on('data', onData).once('end', onEnd).once('error', onError).once('close', onClose);
    // A 'data' listener does not restart a stream someone paused (e.g. the spool handing over a rollover).
    stream.resume();
  });
}

function ignore(): void {}
