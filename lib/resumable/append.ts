import type { Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { toStorageError } from '../core/error-mapping';
import { SpoolError } from '../core/errors';
import type { MemoryLease } from '../core/memory-budget';
import { watchdog } from '../core/watchdog';
import { AppendTap } from './append-tap';
import { ChecksumVerifier } from './checksum';
import type { InterimProgress } from './interim-progress';
import type { ResumableConfig } from './options';
import type { AppendIntent } from './protocol';
import type { UploadHashes } from './upload-hashes';
import type { ResumableUpload } from './upload-store';

export interface AppendOutcome {
  /** The upload after the append (offset moved by what was stored). */
  readonly upload: ResumableUpload;
  /** Why the body did not end cleanly (client gone, superseded, limit, checksum, stall); undefined otherwise. */
  readonly failure?: SpoolError;
}

/**
 * Streams one request body into the store at `upload.offset`: limits, per-request checksum, the upload's
 * running sha256, the idle check and cancellation (client gone, superseded by a newer request) all act on
 * one AppendTap. Resolves once the store has recorded what it kept; rejects only when the store failed.
 */
export async function appendBody(
  req: IncomingMessage,
  res: ServerResponse,
  upload: ResumableUpload,
  intent: AppendIntent,
  context: {
    config: ResumableConfig;
    hashes: UploadHashes;
    lease: MemoryLease;
    supersede: (end: (reason: SpoolError) => void) => void;
    /** Progress 104s (IETF draft), offered to the store unless the append is atomic. */
    progress?: InterimProgress;
    /** The upload's renewed expiry, offered to the store to record with the append (`AppendContext.expiresAt`). */
    expiresAt?: () => number;
    /** The store's append, still running after `settleTimeout`: the caller keeps the upload until it settles. */
    lingering: (storing: Promise<unknown>) => void;
  },
): Promise<AppendOutcome> {
  const { config, hashes, lease } = context;
  const declared = upload.length ?? intent.length;
  const room = Math.min(config.appendSize, (declared ?? config.fileSize) - upload.offset);
  const running = config.sha256 || upload.extra.reprDigest ? hashes.continueAt(upload.id, upload.offset) : undefined;
  const atomic = intent.checksum !== undefined;
  const before: Hash | undefined = atomic ? running?.hash.copy() : undefined;
  const tap = new AppendTap(req, {
    max: Math.max(0, room),
    overflow: () =>
      declared !== undefined && upload.offset + room === declared
        ? new SpoolError('INCONSISTENT_LENGTH', 'More bytes than the declared Upload-Length')
        : new SpoolError('LIMIT_FILE_SIZE', undefined),
    verifier: intent.checksum && new ChecksumVerifier(intent.checksum),
    hash: running?.hash,
  });
  // Failures are read from `tap.failure`; a tap failed before (or after) its store reads must not crash the process.
  tap.on('error', ignore);
  const controller = new AbortController();
  const end = (reason: SpoolError) => {
    tap.fail(reason);
    if (!controller.signal.aborted) controller.abort(reason);
  };
  context.supersede(end);
  const onClose = () => {
    if (!res.writableFinished) end(new SpoolError('CLIENT_ABORTED'));
  };
  res.once('close', onClose);
  if (res.destroyed) onClose(); // closed before the append started: no 'close' will come any more
  const stopWatching = config.idleTimeout > 0 ? watchIdle(tap, config.idleTimeout, end) : undefined;
  /** The store went `storeTimeout` ms without reading or finishing: why the append was ended. */
  let stalled: SpoolError | undefined;
  const stopStallWatch =
    config.storeTimeout > 0
      ? watchStore(tap, lease, config.storeTimeout, (reason) => {
          stalled = reason;
          end(reason);
        })
      : undefined;
  // Progress only while the body is still coming: once it ended (or failed) the final response is next.
  const streaming = () => !tap.readableEnded && !tap.destroyed && tap.failure === undefined;
  const interim = atomic ? undefined : context.progress;
  const progress = interim && {
    wanted: (at: number) => streaming() && interim.wanted(at),
    persisted: (at: number) => (streaming() ? interim.persisted(at) : undefined),
  };
  let offset: number;
  try {
    const storing = config.store.append(upload, tap, { signal: controller.signal, memory: lease, atomic, request: req, progress, expiresAt: context.expiresAt });
    // Bounded once the append was ended from outside (client gone, superseded, idle, the store stalled past
    // storeTimeout): a store that ignores its signal must not hold the request for ever. A client waiting for
    // its answer waits for a slow store that keeps going (a limit or a checksum that failed the body is
    // answered once the store settles).
    const ended = () => controller.signal.aborted;
    offset = config.settleTimeout > 0 ? await settledWithin(storing, ended, config.settleTimeout, end, context.lingering) : await storing;
  } catch (err) {
    tap.fail(err instanceof Error ? err : new Error(String(err)));
    if (running) hashes.forget(upload.id);
    throw toStorageError(err);
  } finally {
    interim?.close();
    res.off('close', onClose);
    stopWatching?.();
    stopStallWatch?.();
  }
  if (running) hashes.settle(upload.id, running, running.bytes + tap.bytes, offset, before);
  // A store ended for stalling that still recorded every byte it was handed, in time: no failure.
  const short = stalled !== undefined && offset < upload.offset + tap.bytes ? stalled : undefined;
  const failure = tap.failure ?? short ?? (tap.readableEnded ? undefined : new SpoolError('STORAGE_FAILED', 'The store stopped reading before the body ended'));
  // Let go of the request (the tap reads it in paused mode): the handler then drains the rest at once.
  if (failure !== undefined && tap.failure === undefined) tap.fail(failure);
  return { upload: { ...upload, offset }, failure: failure === undefined ? undefined : asSpoolError(failure) };
}

function asSpoolError(err: Error): SpoolError {
  return err instanceof SpoolError ? err : (toStorageError(err) as SpoolError);
}

/**
 * `storing`, or a STORAGE_FAILED rejection once the append has been ended (`ended()`) for `timeout` ms
 * while the store has not settled. The append is ended then (its signal aborted), and the store's promise,
 * still running, goes to `lingering`.
 */
function settledWithin(storing: Promise<number>, ended: () => boolean, timeout: number, end: (reason: SpoolError) => void, lingering: (p: Promise<unknown>) => void): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    /** When the append was first seen ended. */
    let doneSince: number | undefined;
    let settled = false;
    const stop = watchdog.watch(
      {
        check(now) {
          if (settled) return false;
          if (doneSince === undefined) {
            if (ended()) doneSince = now;
            return true;
          }
          if (now - doneSince < timeout) return true;
          settled = true;
          const err = new SpoolError('STORAGE_FAILED', `The store did not finish the append within ${timeout} ms of its end`);
          end(err);
          lingering(storing.catch(ignore));
          reject(err);
          return false;
        },
      },
      Math.min(timeout / 4, 1000),
    );
    storing.then(
      (offset) => {
        if (settled) return;
        settled = true;
        stop();
        resolve(offset);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        stop();
        reject(err);
      },
    );
  });
}

/** Ends the append (keeping what was stored) when the body brings nothing for `timeout` ms. */
function watchIdle(tap: AppendTap, timeout: number, end: (reason: SpoolError) => void): () => void {
  return watchdog.watch(
    {
      check(now) {
        if (tap.destroyed || tap.readableEnded || tap.failure !== undefined) return false;
        // Only time the store spends waiting for the client counts: a slow store is not a stalled client.
        const since = tap.waitingSince;
        if (since !== undefined && now - since >= timeout) {
          end(new SpoolError('REQUEST_TIMEOUT'));
          return false;
        }
        return true;
      },
    },
    Math.min(timeout / 4, 1000),
  );
}

/**
 * Ends the append when the store has had the turn (handed a chunk or the body's end, and not asking for
 * more) for `timeout` ms: a store stuck on a request that never returns, or one that stopped reading. Time
 * the store spends waiting for memory (`lease.reserve`, first come first served) is not its own: the clock
 * starts again after it.
 */
function watchStore(tap: AppendTap, lease: MemoryLease, timeout: number, stalled: (reason: SpoolError) => void): () => void {
  let memorySeen: number | undefined;
  return watchdog.watch(
    {
      check(now) {
        if (lease.waiting) {
          memorySeen = now;
          return true;
        }
        const busy = tap.storeBusySince;
        const since = busy === undefined || memorySeen === undefined ? busy : Math.max(busy, memorySeen);
        if (since === undefined || now - since < timeout) return true;
        stalled(new SpoolError('STORAGE_FAILED', `The store made no progress on the append for ${timeout} ms`));
        return false;
      },
    },
    Math.min(timeout / 4, 1000),
  );
}

function ignore(): void {}
