// The demo as an Express app (no listening, so tests can drive it): the upload page, the JSON API over
// the file store, and the bookkeeping graceful shutdown needs.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import express, { type ErrorRequestHandler, type NextFunction, type Request, type Response } from 'express';
import {
  diskEngine, ERROR_CODES, resumable, resumableDiskStore, s3Engine, s3ResumableStore, spool, SpoolError,
  type ResumableStore, type StorageEngine,
} from '../lib';
import type { DemoConfig } from './config';
import { FileStore, type FileInfo } from './file-store';

export interface DemoAppOptions {
  /** The S3 client and bucket for STORAGE=s3 (see `openS3` in ./s3). */
  s3?: { client: S3Client; bucket: string };
  /** Where the one line per upload goes. @default console.log */
  log?: (line: string) => void;
}

export interface DemoApp {
  app: express.Express;
  store: FileStore;
  /** Answers new requests 503 SHUTTING_DOWN and waits up to `timeoutMs` for in-flight uploads; true if none is left. */
  drain(timeoutMs: number): Promise<boolean>;
  /** Removes every stored file (the registry dies with the process, so the files would be unreachable). */
  close(): Promise<void>;
}

export function createDemoApp(config: DemoConfig, options: DemoAppOptions = {}): DemoApp {
  const log = options.log ?? console.log;
  const store = new FileStore(config.memoryStoreCap);
  const uploads = new InFlight();
  let closing = false;
  const upload = spool({
    threshold: config.threshold,
    rollover: rolloverEngine(config, options.s3),
    memoryBudget: config.memoryBudget,
    limits: { fileSize: config.maxFileSize, files: config.maxFiles },
    sha256: true, // the demo shows each file's digest
  });
  // Resumable uploads (tus / IETF) at /uploads/: same limits and memory budget; once complete, a file of
  // the same store as the multipart ones (listed, downloaded and deleted through /api/files).
  const tus = resumable({
    store: resumableStoreOf(config, options.s3),
    limits: { fileSize: config.maxFileSize },
    memoryBudget: upload.memoryBudget,
    sha256: true,
    // A completed upload is the file list's (downloaded and deleted through /api/files): a tus DELETE must
    // not remove its bytes from under a listed entry.
    terminateCompleted: false,
    onComplete: (file, req) => {
      const { infos: [info] } = store.addAll([file]); // disk or s3: never evicts
      // The completing request's answer names the stored file, so the page can show its row.
      (req as Request).res?.setHeader('Spool-File-Id', info.id);
      log(`[resumable] ${info.size} bytes -> ${info.storage} "${info.originalname}" id=${info.id}`);
    },
  });

  const app = express();
  app.disable('x-powered-by');
  app.use((_req, res, next) => {
    if (!closing) return next();
    res.setHeader('Connection', 'close');
    sendError(res, 503, 'SHUTTING_DOWN', 'The server is shutting down');
  });

  app.use(pageHeaders, express.static(publicDir()));
  // tus-js-client's browser bundle straight from node_modules: the page has no build step.
  const tusBundle = tusClientBundle();
  app.get('/vendor/tus.min.js', pageHeaders, (_req, res, next) => {
    res.type('application/javascript');
    res.sendFile(tusBundle, { maxAge: '1h' }, (err) => err && next(err));
  });

  app.get('/api/config', (_req, res) => {
    res.json({
      threshold: config.threshold,
      memoryBudget: config.memoryBudget,
      maxFileSize: config.maxFileSize,
      maxFiles: config.maxFiles,
      memoryStoreCap: config.memoryStoreCap,
      rollover: config.storage,
    });
  });

  // Counted before the spool starts reading, finished only once the library has called next(): by then
  // it has removed every partial file of a failed request, so shutdown can wait on this count.
  const track = (_req: Request, res: Response, next: NextFunction) => {
    res.locals.start = process.hrtime.bigint();
    res.locals.done = uploads.begin();
    next();
  };

  // Each tus/IETF request counts as an upload in flight, so shutdown waits for running appends too.
  app.use(
    '/uploads',
    (_req, res, next) => {
      res.once('close', uploads.begin());
      next();
    },
    tus,
  );

  app.post('/api/files', track, upload.any(), async (req, res) => {
    try {
      const files = Array.isArray(req.files) ? req.files : [];
      if (files.length === 0) {
        return sendError(res, 400, 'NO_FILES', 'Send multipart/form-data with at least one file');
      }
      if (!store.fits(files)) {
        await Promise.allSettled(files.map((file) => file.remove()));
        return sendError(res, 507, 'MEMORY_STORE_FULL', 'The demo cannot keep that much in memory');
      }
      // Files of one request are parsed from one body in parallel, so they share the request's time.
      const ms = elapsedMs(res);
      // Added together: making room evicts older files only, never one this answer names.
      const { infos, evicted } = store.addAll(files);
      for (const old of evicted) log(`[evict] ${old.size} bytes memory "${old.originalname}" id=${old.id} (memory store cap)`);
      for (const info of infos) {
        log(`[upload] ${info.size} bytes -> ${info.storage} in ${ms.toFixed(1)} ms (${mbps(info.size, ms)} MB/s) "${info.originalname}" id=${info.id}`);
      }
      res.status(201).json({ files: infos });
    } finally {
      (res.locals.done as () => void)();
    }
  });

  app.get('/api/files', (_req, res) => {
    res.json({ files: store.list() });
  });

  app.get('/api/files/:id', (req, res, next) => {
    const entry = store.get(req.params.id);
    if (!entry) return notFound(res, req.params.id);
    const { info, file } = entry;
    const stream: Readable = file.stream();
    res.setHeader('Content-Type', safeMimetype(info.mimetype));
    res.setHeader('Content-Length', String(info.size));
    res.setHeader('Content-Disposition', contentDisposition(info.originalname));
    // The bytes are the uploader's: never let a browser sniff them into HTML or run them on our origin.
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Content-Security-Policy', "default-src 'none'; sandbox");
    stream.once('error', (err) => {
      if (res.headersSent) return void res.destroy(err);
      for (const name of ['Content-Type', 'Content-Length', 'Content-Disposition']) res.removeHeader(name);
      next(err);
    });
    res.once('close', () => stream.destroy());
    stream.pipe(res);
  });

  app.delete('/api/files/:id', async (req, res) => {
    if (!(await store.delete(req.params.id))) return notFound(res, req.params.id);
    res.status(204).end();
  });

  app.use('/api', (req, res) => sendError(res, 404, 'NOT_FOUND', `No route ${req.method} ${req.originalUrl}`));

  const errors: ErrorRequestHandler = (err, req, res, _next) => {
    const { status, code, message } = describeError(err);
    if (res.locals.done) {
      log(`[upload] failed ${status} ${code} after ${elapsedMs(res).toFixed(1)} ms: ${err instanceof Error ? err.message : err}`);
      (res.locals.done as () => void)();
    } else if (status >= 500) {
      log(`[error] ${req.method} ${req.originalUrl}: ${err instanceof Error ? err.stack : err}`);
    }
    // The library already drained the body; a client that went away (CLIENT_ABORTED) gets nothing.
    if (res.headersSent || res.destroyed) return;
    sendError(res, status, code, message);
  };
  app.use(errors);

  return {
    app,
    store,
    drain(timeoutMs) {
      closing = true;
      return uploads.whenIdle(timeoutMs);
    },
    async close() {
      closing = true;
      // An append whose connection was cut still records what it stored: wait for that (bounded), or its
      // state would come back after the removal below.
      const settled = await Promise.race([tus.close().then(() => true), delay(CLOSE_WAIT).then(() => false)]);
      if (!settled) log(`[shutdown] resumable requests still settling after ${CLOSE_WAIT} ms: removing their uploads anyway`);
      const failures = await store.clear();
      // Unfinished resumable uploads too: nothing could complete them into a registry that is gone.
      try {
        for await (const left of tus.store.list()) await tus.store.remove(left.id);
      } catch (err) {
        failures.push(err);
      }
      if (failures.length > 0) {
        throw new AggregateError(failures, `Could not remove ${failures.length} stored file(s)`);
      }
    },
  };
}

/** How long (ms) shutdown waits for resumable requests to settle before removing their uploads. */
const CLOSE_WAIT = 10_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function rolloverEngine(config: DemoConfig, s3: DemoAppOptions['s3']): StorageEngine {
  // A directory makes the disk engine persistent: files outlive their request, to be downloaded later.
  if (config.storage === 'disk') return diskEngine({ directory: config.uploadDir });
  if (!s3) throw new TypeError('createDemoApp: STORAGE=s3 needs options.s3 (see openS3 in examples/s3.ts)');
  return s3Engine({ client: s3.client, bucket: s3.bucket, prefix: 'uploads/' });
}

function resumableStoreOf(config: DemoConfig, s3: DemoAppOptions['s3']): ResumableStore {
  // A directory of its own, so unfinished uploads never mix with the multipart rollover files.
  if (config.storage === 'disk') return resumableDiskStore({ directory: path.join(config.uploadDir, 'resumable') });
  if (!s3) throw new TypeError('createDemoApp: STORAGE=s3 needs options.s3 (see openS3 in examples/s3.ts)');
  return s3ResumableStore({ client: s3.client, bucket: s3.bucket, prefix: 'resumable/' });
}

/** tus-js-client's browser build (a devDependency, installed by `npm ci`). */
function tusClientBundle(): string {
  const file = path.join(path.dirname(require.resolve('tus-js-client/package.json')), 'dist', 'tus.min.js');
  if (!existsSync(file)) throw new Error(`tus-js-client's browser bundle not found at ${file}; run npm ci`);
  return file;
}

/** The JSON error shape of every API failure: the library's code and status when it is a SpoolError. */
function describeError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof SpoolError) {
    // Server-side failures may carry paths or upstream details: log them, show the code's own message.
    return { status: err.status, code: err.code, message: err.expose ? err.message : ERROR_CODES[err.code].message };
  }
  const status = (err as { status?: unknown } | null)?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return { status, code: 'BAD_REQUEST', message: (err as Error).message };
  }
  return { status: 500, code: 'INTERNAL', message: 'Internal server error' };
}

function sendError(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

function notFound(res: Response, id: string): void {
  sendError(res, 404, 'NOT_FOUND', `No stored file with id ${JSON.stringify(id)}`);
}

function pageHeaders(_req: Request, res: Response, next: NextFunction): void {
  // The page is all same-origin files: no inline script, no third-party anything.
  res.setHeader('Content-Security-Policy', "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
  res.setHeader('X-Content-Type-Options', 'nosniff');
  next();
}

/** examples/public from examples/ (ts-jest) or from dist/examples/ (npm start), which tsc does not copy. */
function publicDir(): string {
  const candidates = [path.join(__dirname, 'public'), path.resolve(__dirname, '..', '..', 'examples', 'public')];
  const found = candidates.find((dir) => existsSync(path.join(dir, 'index.html')));
  if (!found) throw new Error(`Demo page not found; looked in ${candidates.join(' and ')}`);
  return found;
}

/**
 * `attachment` with an ASCII fallback name and the exact UTF-8 name in RFC 5987 `filename*`.
 * The name is the client's: control characters go, quotes/backslashes/% cannot break out of the header.
 */
export function contentDisposition(originalname: string): string {
  const name =
    originalname
      .replace(/[\u0000-\u001f\u007f]/g, '')
      .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd') // lone surrogates
      .split(/[\\/]/)
      .pop()
      ?.trim() || 'download';
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_');
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

/** The declared type when it is a plain `type/subtype` token pair; anything else downloads as bytes. */
function safeMimetype(mimetype: string): string {
  return /^[\w!#$&^.+-]+\/[\w!#$&^.+-]+$/.test(mimetype) ? mimetype : 'application/octet-stream';
}

function elapsedMs(res: Response): number {
  return Number(process.hrtime.bigint() - (res.locals.start as bigint)) / 1e6;
}

function mbps(bytes: number, ms: number): string {
  return ms > 0 ? (bytes / 1e6 / (ms / 1000)).toFixed(1) : '-';
}

/** Counts requests in progress and lets shutdown wait (bounded) until there are none. */
class InFlight {
  #count = 0;
  #waiters: (() => void)[] = [];

  begin(): () => void {
    this.#count++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#count === 0) for (const wake of this.#waiters.splice(0)) wake();
    };
  }

  whenIdle(timeoutMs: number): Promise<boolean> {
    if (this.#count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}
