import type { IncomingMessage, ServerResponse } from 'node:http';
import { SpoolError } from '../core/errors';
import { FileSelection, type FieldSpec } from './file-selection';
import type { MemoryBudget } from '../core/memory-budget';
import { resolveOptions, type SpoolOptions } from './options';
import { UploadRequest, type Next } from './upload-request';

/** A connect/Express middleware: `(req, res, next)`. */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void;

/** What `spool()` returns: multer's five route helpers. */
export interface Spool {
  /** One file in field `name` → `req.file`. */
  single(name: string): Middleware;
  /** Up to `maxCount` files in field `name` → `req.files` (array). */
  array(name: string, maxCount?: number): Middleware;
  /** Files in the named fields → `req.files` (object of arrays by field name). */
  fields(fields: readonly FieldSpec[]): Middleware;
  /** Files in any field → `req.files` (array). */
  any(): Middleware;
  /** Text fields only; any file fails with LIMIT_UNEXPECTED_FILE. */
  none(): Middleware;
  /** The memory budget this instance's requests share. */
  readonly memoryBudget: MemoryBudget;
}

/**
 * Requests already parsed. A second upload middleware on the same request (a global `app.use(upload.any())`
 * and a route's `upload.single()`) cannot enforce its own limits and fields on a body already read, so it
 * fails with ALREADY_PARSED (500: a configuration error) instead of silently doing nothing.
 */
const handled = new WeakSet<IncomingMessage>();
const FORM_DATA = /^\s*multipart\/form-data\s*(?:;|$)/i;

/**
 * Creates the upload middleware. Options are validated here (TypeError on a bad one).
 * @example
 * const upload = spool({ threshold: '1MiB', rollover: diskEngine({ directory: './uploads' }) });
 * app.post('/photos', upload.single('photo'), (req, res) => res.json(req.file));
 */
export function spool(options?: SpoolOptions): Spool {
  const config = resolveOptions(options);
  const middleware = (selection: FileSelection): Middleware => {
    return (req, res, next) => {
      if (!hasBody(req)) return next();
      if (handled.has(req)) return next(new SpoolError('ALREADY_PARSED'));
      const contentType = req.headers['content-type'];
      if (typeof contentType !== 'string' || !FORM_DATA.test(contentType)) {
        const type = typeof contentType === 'string' ? contentType.split(';', 1)[0].trim().toLowerCase() : '';
        if (!type.startsWith('multipart/')) return next();
        // multipart/mixed, /related, …: meant for us (multipart) but not a form we can parse. As with multer,
        // the error handler finds an (empty) req.body.
        (req as { body?: unknown }).body = Object.create(null);
        return next(new SpoolError('UNSUPPORTED_CONTENT_TYPE', `Unsupported content type ${type}`));
      }
      handled.add(req);
      new UploadRequest(req, res, next, config, selection).start();
    };
  };
  return {
    single: (name) => middleware(FileSelection.single(name)),
    array: (name, maxCount) => middleware(FileSelection.array(name, maxCount)),
    fields: (fields) => middleware(FileSelection.fields(fields)),
    any: () => middleware(FileSelection.any()),
    none: () => middleware(FileSelection.none()),
    memoryBudget: config.budget,
  };
}

/** Like type-is: a request has a body when it has a Content-Length or Transfer-Encoding header. */
function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || req.headers['content-length'] !== undefined;
}

