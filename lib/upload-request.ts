import { setMaxListeners } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { appendField, createBody, type FieldObject } from './append-field';
import type { IncomingFile } from './engine';
import { SpoolError } from './errors';
import type { FileSelection } from './file-selection';
import { FileTap } from './file-tap';
import type { MemoryLease } from './memory-budget';
import type { SpoolConfig } from './options';
import { removeAll } from './remove-all';
import { runFileFilter } from './run-file-filter';
import { UploadedFile } from './uploaded-file';
import { toParserError, toStorageError } from './error-mapping';
import { createMultipartParser, type FileStreamInfo } from './multipart-parser';

function ignore(): void {}

export type Next = (err?: unknown) => void;

/** Where the middleware puts its results; typed loosely because Express's Request is not imported. */
export interface SpoolRequest extends IncomingMessage {
  body?: unknown;
  file?: UploadedFile;
  files?: UploadedFile[] | Record<string, UploadedFile[]>;
}

/**
 * One multipart request from first byte to `next()`. Owns the lifecycle: one AbortController wired to the
 * client's socket, limits and errors; one guarded finish; on failure every stored file is removed before
 * `next(err)`; temporary files and the memory lease are released when the response ends.
 */
export class UploadRequest {
  readonly #req: SpoolRequest;
  readonly #res: ServerResponse;
  readonly #next: Next;
  readonly #config: SpoolConfig;
  readonly #selection: FileSelection;
  readonly #allowFile: (fieldname: string) => boolean;
  readonly #controller = new AbortController();
  readonly #lease: MemoryLease;
  readonly #body: FieldObject = createBody();
  /** Files kept, by arrival index (they finish out of order). */
  readonly #files: UploadedFile[] = [];
  /** Everything stored so far, success or not: what cleanup removes. */
  readonly #stored: UploadedFile[] = [];
  readonly #pending = new Set<Promise<void>>();
  #parser: Writable | undefined;
  #parsed = false;
  #fileCount = 0;
  #error: Error | undefined;
  #done = false;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(req: IncomingMessage, res: ServerResponse, next: Next, config: SpoolConfig, selection: FileSelection) {
    this.#req = req as SpoolRequest;
    this.#res = res;
    this.#next = next;
    this.#config = config;
    this.#selection = selection;
    this.#allowFile = selection.counter();
    this.#lease = config.budget.lease();
    // Every file in flight listens for the abort (disk pipelines, S3 uploads); the count is bounded by limits.files.
    setMaxListeners(0, this.#controller.signal);
  }

  start(): void {
    const { limits, preservePath } = this.#config;
    let parser: Writable;
    try {
      parser = createMultipartParser(this.#req.headers, { limits, preservePath }, {
        onField: this.#onField,
        onFile: this.#onFile,
        onLimit: (code) => this.#fail(new SpoolError(code)),
        onError: (err) => this.#fail(toParserError(err)),
        onDone: () => {
          this.#parsed = true;
          void this.#settle();
        },
      });
    } catch (err) {
      this.#finishWith(toParserError(err));
      return;
    }
    this.#parser = parser;
    this.#res.once('close', this.#onResponseClose);
    // A client that goes away closes the response before we answered (#onResponseClose); 'error' covers resets.
    this.#req.once('error', this.#onClientAborted);
    if (this.#config.idleTimeout > 0) this.#watchIdle(this.#config.idleTimeout);
    this.#req.pipe(parser);
  }

  #onField = (name: string | undefined, value: string, valueTruncated: boolean): void => {
    if (this.#error) return;
    if (valueTruncated) return this.#fail(new SpoolError('LIMIT_FIELD_VALUE', undefined, { field: name }));
    const problem = this.#checkName(name);
    if (problem || name === undefined) return this.#fail(problem ?? new SpoolError('MISSING_FIELD_NAME'));
    if (!appendField(this.#body, name, value)) this.#fail(new SpoolError('INVALID_FIELD_NAME', undefined, { field: name }));
  };

  #onFile = (fieldname: string | undefined, stream: Readable, info: FileStreamInfo): void => {
    // Listen before anything else: a malformed body can error the stream right away (multer CVE-2025-7338).
    stream.on('error', (err) => this.#fail(toParserError(err)));
    if (this.#error) return void stream.resume();
    const problem = this.#checkName(fieldname);
    if (problem || fieldname === undefined) return this.#failAndSkip(stream, problem ?? new SpoolError('MISSING_FIELD_NAME'));
    if (!this.#allowFile(fieldname)) {
      return this.#failAndSkip(stream, new SpoolError('LIMIT_UNEXPECTED_FILE', undefined, { field: fieldname }));
    }
    stream.once('limit', () => this.#fail(new SpoolError('LIMIT_FILE_SIZE', undefined, { field: fieldname })));
    const meta: IncomingFile = {
      fieldname,
      originalname: info.filename ?? '',
      encoding: info.encoding,
      mimetype: info.mimeType,
    };
    const index = this.#fileCount++;
    const work = this.#storeFile(index, stream, meta).catch((err: unknown) => this.#fail(toStorageError(err)));
    this.#pending.add(work);
    void work.finally(() => this.#pending.delete(work));
  };

  async #storeFile(index: number, stream: Readable, meta: IncomingFile): Promise<void> {
    const { fileFilter, engine, sha256 } = this.#config;
    if (fileFilter) {
      let accepted: boolean;
      try {
        accepted = await runFileFilter(fileFilter, this.#req, meta);
      } catch (err) {
        stream.resume();
        return this.#fail(err instanceof Error ? err : new SpoolError('FILE_REJECTED', String(err)));
      }
      // The request may have failed while the filter was pending (multer CVE-2026-3304): store nothing.
      if (!accepted || this.#error) return void stream.resume();
    }
    const tap = new FileTap(stream, sha256);
    // The core already hears the source's errors; this keeps a tap that errors before its engine
    // starts reading (e.g. while a directory is created) from crashing the process.
    tap.on('error', ignore);
    let stored;
    try {
      stored = await engine.store(tap, meta, {
        signal: this.#controller.signal,
        memory: this.#lease,
        sha256: () => tap.digest(),
        request: this.#req,
      });
    } finally {
      // An engine that gave up without consuming the stream leaves the tap half-read: release it (and its
      // background hash) so nothing outlives the request.
      if (!tap.readableEnded) tap.destroy();
    }
    let digest: string | undefined;
    try {
      digest = await tap.digest();
    } catch (err) {
      await stored.remove(); // never leave bytes behind that no one will hear of
      throw err;
    }
    const file = new UploadedFile(meta, tap.bytes, digest, stored);
    this.#stored.push(file); // from here on cleanup owns it, whatever happens next
    if ((stream as Readable & { truncated?: boolean }).truncated) {
      throw new SpoolError('LIMIT_FILE_SIZE', undefined, { field: meta.fieldname });
    }
    this.#files[index] = file;
  }

  #checkName(name: string | undefined): SpoolError | undefined {
    if (name === undefined || name === '') return new SpoolError('MISSING_FIELD_NAME');
    if (Buffer.byteLength(name) > this.#config.limits.fieldNameSize) {
      return new SpoolError('LIMIT_FIELD_KEY', undefined, { field: name.slice(0, 100) });
    }
    return undefined;
  }

  #failAndSkip(stream: Readable, err: Error): void {
    stream.resume();
    this.#fail(err);
  }

  /**
   * Fails the request when the client sends nothing for `timeout` ms. Polls the socket's byte count instead
   * of listening to every chunk, and does not count time the body is paused by our own backpressure
   * (a slow engine is not a stalled client).
   */
  #watchIdle(timeout: number): void {
    const socket = this.#req.socket as { bytesRead?: number } | undefined;
    let seen = socket?.bytesRead ?? 0;
    let lastProgress = Date.now();
    this.#idleTimer = setInterval(() => {
      const now = Date.now();
      const bytes = socket?.bytesRead ?? 0;
      if (bytes !== seen || this.#req.readableFlowing === false) {
        seen = bytes;
        lastProgress = now;
      } else if (now - lastProgress >= timeout) {
        this.#fail(new SpoolError('REQUEST_TIMEOUT'));
      }
    }, Math.max(10, timeout / 4));
    this.#idleTimer.unref();
  }

  #onClientAborted = (): void => {
    this.#fail(new SpoolError('CLIENT_ABORTED'));
  };

  #onResponseClose = (): void => {
    // Before we answered: the client went away mid-body.
    if (!this.#done) this.#fail(new SpoolError('CLIENT_ABORTED'));
    this.#lease.close();
    const temporary = this.#stored.filter((file) => file.isTemporary);
    if (temporary.length > 0) void removeAll(temporary);
  };

  /** First error wins; stops the parser and every engine, then `#settle` cleans up once work has drained. */
  #fail(err: Error): void {
    if (this.#error || this.#done) return;
    this.#error = err;
    this.#stopReading();
    this.#controller.abort(err);
    void this.#settle();
  }

  #stopReading(): void {
    clearInterval(this.#idleTimer);
    const parser = this.#parser;
    if (!parser) return;
    this.#req.unpipe(parser);
    // The parser is left to be collected: destroying it from inside its own event handlers is unsafe,
    // and with the request unpiped it receives nothing more.
  }

  /** Runs after the parser closes or a failure: waits for all file work, then finishes exactly once. */
  async #settle(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    if (this.#done) return;
    if (!this.#error && !this.#parsed) return; // parser still running; onDone will call us
    this.#done = true;
    clearInterval(this.#idleTimer);
    if (this.#error) {
      const failures = await removeAll(this.#stored);
      this.#stored.length = 0;
      if (failures.length > 0) (this.#error as SpoolError).storageErrors = failures;
      this.#lease.close();
      return this.#drainThenNext(this.#error);
    }
    this.#req.body = this.#body;
    this.#selection.assign(this.#req, this.#files.filter(Boolean));
    this.#next();
  }

  #finishWith(err: Error): void {
    this.#done = true;
    this.#lease.close();
    this.#drainThenNext(err);
  }

  /** Reads (and drops) the rest of the body for a while so the client can read our error answer. */
  #drainThenNext(err: Error): void {
    const req = this.#req;
    if (req.complete || req.destroyed) return this.#next(err);
    if (!this.#res.headersSent) this.#res.setHeader('Connection', 'close');
    let called = false;
    const done = () => {
      if (called) return;
      called = true;
      clearTimeout(timer);
      req.off('end', done).off('close', done);
      this.#next(err);
    };
    const timer = setTimeout(done, this.#config.drainTimeout);
    req.once('end', done).once('close', done);
    req.resume();
  }
}
