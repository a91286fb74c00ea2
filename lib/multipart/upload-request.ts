import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { appendField, createBody, type FieldObject } from './append-field';
import type { AppRequest, IncomingFile, StoreContext } from '../core/engine';
import { SpoolError } from '../core/errors';
import type { FileCounter, FileSelection } from './file-selection';
import { FileTap } from '../core/file-tap';
import type { MemoryLease } from '../core/memory-budget';
import { REQUEST_SHARE, type ResolvedLimits, type SpoolConfig } from './options';
import { removeAll, removeAllWithin } from '../core/remove-all';
import { runFileFilter } from '../core/run-file-filter';
import { UploadedFile } from '../core/uploaded-file';
import { toParserError, toStorageError } from '../core/error-mapping';
import { createMultipartParser, type FileStreamInfo } from './multipart-parser';
import { watchdog, type Watched } from '../core/watchdog';
import { drainRequest } from '../core/drain';
import { markParsedOnly } from '../core/chunk-release';

function ignore(): void {}

/**
 * What an engine gets besides the bytes. A class with the `signal` getter on its prototype, not an object
 * literal with a getter: a literal's getter is a fresh closure per file, which gives every context a hidden
 * class of its own, kept in old space, and that keeps the whole request reachable until the next full GC.
 *
 * `release()` drops its references once the engine's `store()` has settled. V8 pretenures this allocation
 * site under load (contexts are then born in old space, which only a full GC frees): a context that still
 * pointed at the request, its tap and its parser kept all of them alive through every scavenge, which
 * promoted ~7 KB more per small upload than multer and doubled the full GCs (measured in bench/README).
 */
class FileContext implements StoreContext {
  #request: UploadRequest | undefined;
  #tap: FileTap | undefined;
  #req: AppRequest | undefined;
  #signal: AbortSignal | undefined;
  /** The tap's digest, kept when the context is released. */
  #digest: string | undefined;
  readonly memory: MemoryLease;
  /** An own function, so engines may call it detached (`const { sha256 } = context`). */
  readonly sha256: () => Promise<string | undefined>;

  constructor(request: UploadRequest, tap: FileTap, memory: MemoryLease, req: AppRequest) {
    this.#request = request;
    this.#tap = tap;
    this.#req = req;
    this.memory = memory;
    this.sha256 = () => Promise.resolve(this.#tap ? this.#tap.sha256 : this.#digest);
  }

  /** Created on first use only (most engines never ask). */
  get signal(): AbortSignal {
    this.#signal ??= this.#request?.signal ?? new AbortController().signal;
    return this.#signal;
  }

  get request(): AppRequest {
    return this.#req as AppRequest;
  }

  /** The engine is done with this file: keep only what its answers need (the signal it took, the digest). */
  release(): void {
    this.#digest = this.#tap?.sha256;
    this.#request = undefined;
    this.#tap = undefined;
    this.#req = undefined;
  }
}

export type Next = (err?: unknown) => void;

/** Where the middleware puts its results; typed loosely because Express's Request is not imported. */
export interface SpoolRequest extends IncomingMessage {
  body?: unknown;
  file?: UploadedFile;
  files?: UploadedFile[] | Record<string, UploadedFile[]>;
}

/**
 * Text field bytes a request keeps within its own share before it reserves more: a small form never
 * competes with other reservations (a reservation waiting for a whole S3 part would refuse it).
 */
const FIELD_CREDIT = 64 * 1024;
/** Seconds a client refused for memory is told to wait (`Retry-After`). */
const RETRY_AFTER = '5';

/**
 * One multipart request from first byte to `next()`. Owns the lifecycle: admission against the memory
 * budget, one guarded finish, one watchdog entry for stalls and the deadline. Cancellation has one
 * channel: on failure every live file stream is destroyed with the error (engines that do work of their
 * own also get an AbortSignal). On failure every stored file is removed before `next(err)`; temporary
 * files and the memory lease are released when the response ends.
 */
export class UploadRequest implements Watched {
  readonly #req: SpoolRequest;
  readonly #res: ServerResponse;
  readonly #next: Next;
  readonly #config: SpoolConfig;
  readonly #selection: FileSelection;
  readonly #fileSlots: FileCounter;
  /** This request's limits, fixed when its parse begins. */
  #limits!: ResolvedLimits;
  #controller: AbortController | undefined;
  readonly #lease: MemoryLease;
  readonly #body: FieldObject = createBody();
  /** Files kept, by arrival index (they finish out of order). */
  readonly #files: UploadedFile[] = [];
  /** Everything stored so far, success or not: what cleanup removes. */
  readonly #stored: UploadedFile[] = [];
  /** Failures to report beside the request's error: engines still working, or that could not clean up. */
  readonly #late: SpoolError[] = [];
  /** File streams engines are reading: destroyed with the error when the request fails. */
  readonly #taps = new Set<FileTap>();
  /** Files whose storing has not finished (success or not). */
  #pending = 0;
  /** Called when `#pending` drops to 0 while cleanup waits for it. */
  #onIdle: (() => void) | undefined;
  #parser: Writable | undefined;
  #parsed = false;
  #fileCount = 0;
  /** Bytes of the text field being parsed, reserved on the lease until it ends. */
  #partialField = 0;
  /** What is left of FIELD_CREDIT, the part of the request's share its text fields may use. */
  #fieldCredit = FIELD_CREDIT;
  /** Text field bytes reserved on the lease beyond the credit (the core's own, not an engine's). */
  #fieldHeld = 0;
  /** Bytes of the memory files a failed request's clean-up removed (reserved by their engine, now garbage). */
  #removedInMemory = 0;
  #error: Error | undefined;
  /** Set once cleanup has stopped waiting for engines: anything stored later is removed at once. */
  #abandoned = false;
  #done = false;
  /** The failure path has started waiting for the file work. */
  #settling = false;
  #unwatch: (() => void) | undefined;
  #started = 0;
  #bytesSeen = 0;
  #lastProgress = 0;

  constructor(req: IncomingMessage, res: ServerResponse, next: Next, config: SpoolConfig, selection: FileSelection) {
    this.#req = req as SpoolRequest;
    this.#res = res;
    this.#next = next;
    this.#config = config;
    this.#selection = selection;
    this.#fileSlots = selection.counter();
    this.#lease = config.budget.lease();
  }

  /** Aborted when the request fails; created only for the engines and filters that ask for it. */
  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    if (this.#error && !this.#controller.signal.aborted) this.#controller.abort(this.#error);
    return this.#controller.signal;
  }

  start(): void {
    // As multer: error handlers can read req.body (the fields parsed so far) whenever the request fails,
    // before its parse began too.
    this.#req.body = this.#body;
    this.#res.on('close', this.#onResponseClose); // 'close' comes once: `on` spares a wrapper per request
    if (this.#lease.tryReserve(REQUEST_SHARE)) return this.#begin();
    this.#waitForAdmission();
  }

  /** The budget is full: wait a bounded time for our share without reading the body, or refuse with 503. */
  #waitForAdmission(): void {
    const { admissionTimeout } = this.#config;
    const signal = admissionTimeout > 0 ? AbortSignal.any([this.signal, AbortSignal.timeout(admissionTimeout)]) : this.signal;
    this.#lease.reserve(REQUEST_SHARE, signal).then(
      () => this.#begin(),
      (err: unknown) => {
        if (this.#done) return;
        const refusal = err instanceof SpoolError && err.code === 'MEMORY_BUDGET_EXCEEDED'
          ? err
          : new SpoolError('MEMORY_BUDGET_EXCEEDED', 'No memory for another upload right now; retry later');
        this.#finishWith(this.#error ?? refusal);
      },
    );
  }

  #begin(): void {
    if (this.#done || this.#error) return;
    this.#lease.keep(REQUEST_SHARE); // held to the end: a reservation that cannot fit beside it is refused at once
    const { limitsFor, preservePath, defParamCharset, defCharset, streamHandler } = this.#config;
    let limits: ResolvedLimits;
    try {
      limits = this.#limits = limitsFor(this.#req); // (the app's function may throw: its error is the answer)
    } catch (err) {
      this.#finishWith(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    let parser: Writable;
    try {
      parser = createMultipartParser(this.#req.headers, { limits, preservePath, defParamCharset, defCharset }, {
        onField: this.#onField,
        onFieldBytes: this.#onFieldBytes,
        onFile: this.#onFile,
        onLimit: (code) => this.#fail(new SpoolError(code)),
        onError: (err) => this.#fail(toParserError(err)),
        onDone: () => {
          this.#parsed = true;
          this.#settle();
        },
      });
    } catch (err) {
      this.#finishWith(toParserError(err));
      return;
    }
    this.#parser = parser;
    // Filled as fields arrive, as multer does: a fileFilter or a disk engine's `filename(req, file)` can read
    // the fields sent before the file.
    this.#req.body = this.#body;
    // 'error' covers resets; a client that goes away closes the response before we answered.
    this.#req.on('error', this.#onClientAborted);
    this.#watch();
    if (!streamHandler) {
      // Only node:http's own parser hands out a fresh buffer per body chunk: a request fed by app code (an
      // in-process harness, an adapter) may push its own buffers, or one buffer twice. First of all 'data'
      // listeners (an app's included): it counts them before any can remove itself.
      if (fedByNodeHttp(this.#req)) this.#req.prependListener('data', this.#markParsedOnly);
      this.#bufferedBeforeParse = this.#req.readableLength;
      return void this.#req.pipe(parser);
    }
    try {
      streamHandler(this.#req, parser);
    } catch (err) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * A body chunk that the parser is the only reader of (this listener and the pipe's are the request's only
   * ones): the disk engine may then free a file's chunk once written (lib/core/chunk-release.ts). It runs
   * first in each emit, so an app's listener that removes itself on this chunk is still counted.
   */
  #markParsedOnly = (chunk: Buffer): void => {
    // Bytes the request held before the parser came may have been read and put back (`unshift`) by a
    // middleware that still holds them: never marked.
    if (this.#bufferedBeforeParse > 0) {
      this.#bufferedBeforeParse -= chunk.length;
      return;
    }
    const req = this.#req;
    if (req.listenerCount('data') === 2 && req.listenerCount('readable') === 0) markParsedOnly(chunk);
  };
  #bufferedBeforeParse = 0;

  /** A text field's bytes as they arrive: the parser holds them until the field ends, so they count now. */
  #onFieldBytes = (bytes: number): void => {
    if (this.#error) return;
    if (!this.#takeFieldMemory(bytes)) return this.#fail(new SpoolError('MEMORY_BUDGET_EXCEEDED'));
    this.#partialField += bytes;
  };

  /** Counts text field bytes: from the request's field credit first, then from the budget. */
  #takeFieldMemory(bytes: number): boolean {
    const fromCredit = Math.min(bytes, this.#fieldCredit);
    if (bytes > fromCredit && !this.#lease.tryReserve(bytes - fromCredit)) return false;
    this.#fieldCredit -= fromCredit;
    this.#fieldHeld += bytes - fromCredit;
    return true;
  }

  /** Gives back text field bytes: the credit is refilled first. */
  #giveFieldMemory(bytes: number): void {
    const toCredit = Math.min(bytes, FIELD_CREDIT - this.#fieldCredit);
    this.#fieldCredit += toCredit;
    this.#fieldHeld -= bytes - toCredit;
    this.#lease.release(bytes - toCredit);
  }

  #onField = (name: string | undefined, value: string, valueTruncated: boolean): void => {
    // The raw bytes counted while the field arrived become its value's count below.
    this.#giveFieldMemory(this.#partialField);
    this.#partialField = 0;
    if (this.#error) return;
    if (valueTruncated) return this.#fail(new SpoolError('LIMIT_FIELD_VALUE', undefined, { field: name }));
    const problem = this.#checkName(name);
    if (problem || name === undefined) return this.#fail(problem ?? new SpoolError('MISSING_FIELD_NAME'));
    // Field values stay in memory until the app is done with req.body: they count like file chunks.
    if (!this.#takeFieldMemory(name.length + value.length)) {
      return this.#fail(new SpoolError('MEMORY_BUDGET_EXCEEDED', undefined, { field: name }));
    }
    if (!appendField(this.#body, name, value)) this.#fail(new SpoolError('INVALID_FIELD_NAME', undefined, { field: name }));
  };

  #onFile = (fieldname: string | undefined, stream: Readable, info: FileStreamInfo): void => {
    // Listen before anything else: a malformed body can error the stream right away (multer CVE-2025-7338).
    stream.on('error', (err) => this.#fail(toParserError(err)));
    if (this.#error) return void stream.resume();
    const problem = this.#checkName(fieldname);
    if (problem || fieldname === undefined) return this.#failAndSkip(stream, problem ?? new SpoolError('MISSING_FIELD_NAME'));
    // No filename: what a browser sends for a file input left empty. multer skips such a part, and so do we.
    if (!info.filename) return void stream.resume();
    if (!this.#fileSlots.take(fieldname)) {
      return this.#failAndSkip(stream, new SpoolError('LIMIT_UNEXPECTED_FILE', undefined, { field: fieldname, filename: info.filename }));
    }
    // Its names stay on req.files with the file, up to 16 KiB each (a part's header block): they count
    // like a text field's value.
    const names = Buffer.byteLength(fieldname) + Buffer.byteLength(info.filename) + Buffer.byteLength(info.mimeType);
    if (!this.#takeFieldMemory(names)) {
      return this.#failAndSkip(stream, new SpoolError('MEMORY_BUDGET_EXCEEDED', undefined, { field: fieldname }));
    }
    const meta: IncomingFile = {
      fieldname,
      originalname: info.filename,
      encoding: info.encoding,
      mimetype: info.mimeType,
    };
    const index = this.#fileCount++;
    this.#pending++;
    this.#storeFile(index, stream, meta).then(this.#fileSettled, this.#fileFailed);
  };

  #fileSettled = (): void => {
    if (--this.#pending > 0) return;
    if (this.#onIdle) this.#onIdle();
    // The last file is stored after the parser finished: that is the end of a successful request.
    else if (this.#parsed && !this.#error) this.#settle();
  };

  #fileFailed = (err: unknown): void => {
    const error = toStorageError(err);
    // The request failed already: an engine that could not clean up after its cut-short file says so
    // with STORAGE_FAILED, which the app hears in storageErrors (the request's own error stays the answer).
    if (this.#error && error !== this.#error && error instanceof SpoolError && error.code === 'STORAGE_FAILED') this.#late.push(error);
    this.#fail(error);
    this.#fileSettled();
  };

  async #storeFile(index: number, stream: Readable, meta: IncomingFile): Promise<void> {
    const { fileFilter, engine, sha256 } = this.#config;
    if (fileFilter) {
      let accepted: boolean;
      try {
        // A file it skips does not count towards its field's maxCount, as with multer: its slot goes back
        // as soon as the verdict is given, before a part that follows in the same read is counted.
        accepted = await runFileFilter(fileFilter, this.#req, meta, this.signal, (ok) => ok || this.#fileSlots.giveBack(meta.fieldname));
      } catch (err) {
        stream.resume();
        if (this.#error) return; // the request failed while the filter ran: that error wins
        return this.#fail(err instanceof Error ? err : new SpoolError('FILE_REJECTED', String(err)));
      }
      // The request may have failed while the filter was pending (multer CVE-2026-3304): store nothing.
      if (this.#error) return void stream.resume();
      // A rejected file is skipped whatever its size, as with multer: its bytes are read and dropped.
      if (!accepted) return void stream.resume();
    }
    // Past limits.fileSize the request fails. The tap counts from the file's first byte: nothing has read the
    // stream yet. A file the filter rejected was skipped above whatever its size, as with multer; one whose
    // stream already holds more than the limit (it arrived while the filter ran) fails before any engine starts.
    const { fileSize } = this.#limits;
    const overLimit = () => this.#fail(new SpoolError('LIMIT_FILE_SIZE', undefined, { field: meta.fieldname, filename: meta.originalname }));
    if (stream.readableLength > fileSize) {
      stream.resume();
      return overLimit();
    }
    const tap = new FileTap(stream, sha256, { maxBytes: fileSize, onExceeded: overLimit });
    // The core hears the source's errors itself; this keeps a tap destroyed before its engine reads it
    // (e.g. while a directory is created) from crashing the process.
    tap.on('error', ignore);
    this.#taps.add(tap);
    const context = new FileContext(this, tap, this.#lease, this.#req);
    let stored;
    try {
      stored = await engine.store(tap, meta, context);
    } finally {
      context.release();
      this.#taps.delete(tap);
      // An engine that gave up without consuming the stream leaves the tap half-read: release it.
      if (!tap.consumed) tap.destroy();
    }
    const file = new UploadedFile(meta, tap.bytes, tap.sha256, stored);
    if (this.#abandoned) {
      // Reported after cleanup stopped waiting: nobody else will ever remove it.
      await file.remove().catch(ignore);
      return;
    }
    this.#stored.push(file); // from here on cleanup owns it, whatever happens next
    this.#files[index] = file;
  }

  #checkName(name: string | undefined): SpoolError | undefined {
    if (name === undefined || name === '') return new SpoolError('MISSING_FIELD_NAME');
    if (Buffer.byteLength(name) > this.#limits.fieldNameSize) {
      return new SpoolError('LIMIT_FIELD_KEY', undefined, { field: name.slice(0, 100) });
    }
    return undefined;
  }

  #failAndSkip(stream: Readable, err: Error): void {
    stream.resume();
    this.#fail(err);
  }

  #watch(): void {
    const { idleTimeout, requestTimeout } = this.#config;
    if (idleTimeout <= 0 && requestTimeout <= 0) return;
    this.#started = this.#lastProgress = Date.now();
    this.#bytesSeen = this.#req.socket?.bytesRead ?? 0;
    const interval = Math.min(idleTimeout > 0 ? idleTimeout / 4 : Infinity, requestTimeout > 0 ? requestTimeout / 4 : Infinity, 1000);
    this.#unwatch = watchdog.watch(this, interval);
  }

  /**
   * The watchdog's tick: fails the request when the client sent nothing for `idleTimeout` ms (time the body
   * is paused by our own backpressure does not count: a slow engine is not a stalled client), or when it
   * is still running `requestTimeout` ms after it started, whatever it is waiting for.
   */
  check(now: number): boolean {
    if (this.#done) return false;
    const { idleTimeout, requestTimeout } = this.#config;
    if (requestTimeout > 0 && now - this.#started >= requestTimeout) {
      this.#fail(new SpoolError('REQUEST_TIMEOUT', 'Request took longer than requestTimeout'));
      return !this.#done;
    }
    if (idleTimeout > 0 && !this.#parsed && !this.#error) {
      const bytes = this.#req.socket?.bytesRead ?? 0;
      if (bytes !== this.#bytesSeen || this.#req.readableFlowing === false) {
        this.#bytesSeen = bytes;
        this.#lastProgress = now;
      } else if (now - this.#lastProgress >= idleTimeout) {
        this.#fail(new SpoolError('REQUEST_TIMEOUT'));
      }
    }
    return !this.#done;
  }

  #onClientAborted = (): void => {
    this.#fail(new SpoolError('CLIENT_ABORTED'));
  };

  #onResponseClose = (): void => {
    // Before we answered: the client went away mid-body.
    if (!this.#done) this.#fail(new SpoolError('CLIENT_ABORTED'));
    // (A failure still settling gives the memory back itself, once it has answered.)
    if (this.#done || !this.#settling) this.#releaseMemory();
    const temporary = this.#stored.filter((file) => file.isTemporary);
    if (temporary.length > 0) void removeAll(temporary);
  };

  /**
   * First error wins. Stops reading, destroys every live file stream with the error (so an engine that
   * only reads its stream stops too), aborts the signal for engines doing work of their own, then
   * `#settle` cleans up once the work has drained or `settleTimeout` passed.
   */
  #fail(err: Error): void {
    if (this.#error || this.#done) return;
    this.#error = err;
    this.#stopReading();
    for (const tap of this.#taps) tap.destroy(err);
    this.#taps.clear();
    this.#controller?.abort(err);
    this.#settle();
  }

  #stopReading(): void {
    const parser = this.#parser;
    if (!parser) return;
    this.#req.unpipe(parser);
    this.#req.off('data', this.#markParsedOnly);
    // The parser is left to be collected: destroying it from inside its own event handlers is unsafe,
    // and with the request unpiped it receives nothing more.
  }

  /** Runs after the parser closes, the last file is stored, or a failure: finishes exactly once. */
  #settle(): void {
    if (this.#error) return void this.#settleFailed();
    // Parser still running (onDone calls us) or files still being stored (the last one calls us).
    if (!this.#parsed || this.#pending > 0 || this.#done) return;
    this.#done = true;
    this.#unwatch?.();
    this.#selection.assign(this.#req, this.#files.filter(Boolean));
    this.#next();
  }

  /** The failure path: waits for the file work (bounded), removes what was stored, then `next(err)`. */
  async #settleFailed(): Promise<void> {
    if (this.#settling) return;
    this.#settling = true;
    await this.#drainPending(this.#config.settleTimeout);
    if (this.#done) return;
    this.#abandoned = true;
    this.#done = true;
    this.#unwatch?.();
    // Bounded like the wait above: an engine whose remove() never settles must not keep the answer back
    // (the removal goes on in the background; what it reported by then is in storageErrors).
    const removing = this.#stored.filter((file) => file.storage === 'memory').reduce((sum, file) => sum + file.size, 0);
    const failures = [...this.#late, ...(await removeAllWithin(this.#stored, this.#config.settleTimeout))];
    this.#removedInMemory += removing;
    this.#stored.length = 0;
    if (failures.length > 0) (this.#error as SpoolError).storageErrors = failures;
    this.#releaseMemory();
    this.#req.body = this.#body; // like multer: error handlers can read the fields parsed so far
    this.#drainThenNext(this.#error!);
  }

  /**
   * Gives the request's memory back. After a failure, an engine still at work (past `settleTimeout`) may
   * still hold what it reserved — an S3 part whose PutObject is in flight — so the lease closes once the
   * engines have settled; what the core itself holds goes at once (the request's share, its text fields,
   * the memory files the clean-up removed), so an engine that never settles keeps only what it reserved
   * for its own work counted.
   */
  #releaseMemory(): void {
    if (this.#error === undefined || this.#pending === 0) return this.#lease.close();
    this.#lease.releaseKept();
    this.#lease.release(this.#fieldHeld + this.#removedInMemory);
    this.#fieldHeld = 0;
    this.#removedInMemory = 0;
    this.#onIdle = () => this.#lease.close();
  }

  /**
   * Waits for pending file work, but never longer than `timeout` ms (an engine may ignore every signal);
   * past it, storageErrors says that engines were still working (what they store then is removed at once).
   */
  async #drainPending(timeout: number): Promise<void> {
    if (this.#pending === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const late = await new Promise<boolean>((resolve) => {
      this.#onIdle = () => resolve(false);
      timer = setTimeout(resolve, timeout, true);
    });
    clearTimeout(timer);
    this.#onIdle = undefined;
    if (late && this.#pending > 0) {
      this.#late.push(new SpoolError('STORAGE_FAILED', `${this.#pending} file(s) still being stored or cleaned up by their engine after settleTimeout (${timeout} ms); that goes on in the background`));
    }
  }

  #finishWith(err: Error): void {
    this.#done = true;
    this.#unwatch?.();
    this.#lease.close();
    this.#drainThenNext(err);
  }

  /** Reads (and drops) the rest of the body for a while so the client can read our error answer. */
  #drainThenNext(err: Error): void {
    const req = this.#req;
    if (!this.#res.headersSent && err instanceof SpoolError && err.code === 'MEMORY_BUDGET_EXCEEDED') {
      this.#res.setHeader('Retry-After', RETRY_AFTER);
    }
    if (!req.complete && !req.destroyed && !this.#res.headersSent) this.#res.setHeader('Connection', 'close');
    drainRequest(req, this.#config.drainTimeout, () => this.#next(err));
  }
}

/** Whether `req` is the message node:http's parser is reading from its socket (not a stream app code feeds). */
function fedByNodeHttp(req: IncomingMessage): boolean {
  const parser = (req.socket as { parser?: { incoming?: unknown } | null } | null | undefined)?.parser;
  return parser?.incoming === req;
}
