import { diskEngine, type DiskNameFunction } from '../../engines/disk';
import { spoolEngine } from '../../engines/spool';
import { charsetOption, DEFAULT_PARAM_CHARSET } from './content-disposition';
import { isStorageEngine, type AppRequest, type IncomingFile, type StorageEngine } from '../core/engine';
import type { MulterStorageEngine } from '../multer/multer-types';
import { MemoryBudget } from '../core/memory-budget';
import { assertParserSupported } from './multipart-parser';
import { countOption, describe, sizeOption, type Size, durationOption } from '../core/sizes';

/** Request limits (busboy's names). Every limit is on by default; pass `Infinity` to lift one. */
export interface SpoolLimits {
  /** Max bytes per file. @default '1GiB' */
  fileSize?: Size;
  /** Max file parts per request. @default 100 */
  files?: number;
  /** Max text fields per request. @default 1000 */
  fields?: number;
  /** Max bytes per text field value. @default '1MiB' */
  fieldSize?: Size;
  /** Max bytes per field name. @default 200 */
  fieldNameSize?: Size;
  /** Max parts (files + fields) per request. @default 1100 */
  parts?: number;
  /** Max header key/value pairs per part. @default 2000 */
  headerPairs?: number;
}

export type FileFilterCallback = (error: Error | null, acceptFile?: boolean) => void;

/**
 * Decides, before any byte is stored, whether a file is kept: call `callback(null, true|false)`
 * (multer's style), or return a boolean / a promise of one. A rejected file is skipped silently;
 * an error fails the request with that error.
 */
export type FileFilter = (
  req: AppRequest,
  file: IncomingFile,
  callback: FileFilterCallback,
) => void | boolean | Promise<boolean | void>;

export interface SpoolOptions {
  /**
   * Files that end within this many bytes stay in memory; larger ones go to `rollover`.
   * Ignored when `storage` is given.
   * @default '1MiB'
   */
  threshold?: Size;
  /**
   * Engine for files past the threshold.
   * @default diskEngine() — temporary files under os.tmpdir(), removed when the response ends
   */
  rollover?: StorageEngine;
  /**
   * Store every file with this engine instead of the memory/rollover spool (e.g. `memoryEngine()`). A
   * multer StorageEngine (multer-s3, …) is taken as it is, through {@link fromMulterStorage}.
   */
  storage?: StorageEngine | MulterStorageEngine;
  /**
   * multer's `dest`: every file is written to this directory (created if missing) under a random name and
   * stays there, as with `storage: diskEngine({ directory: dest })`. As with multer, `storage` wins over it
   * and an empty one is no `dest`.
   */
  dest?: string | DiskNameFunction;
  /**
   * Bytes all in-flight requests of this middleware may hold in memory together, or a shared
   * {@link MemoryBudget} instance. Spooled files roll over early when it is exhausted.
   * @default '64MiB'
   */
  memoryBudget?: Size | MemoryBudget;
  /**
   * Request limits; or, as with multer 2, a function of the request that returns them, called once per
   * request before its body is read (limits by user, say). A function that throws fails the request with
   * its error.
   */
  limits?: SpoolLimits | ((req: AppRequest) => SpoolLimits);
  fileFilter?: FileFilter;
  /**
   * Compute `file.sha256` while streaming (on the event loop, at the digest's own cost). Off by default:
   * an app that does not read the digest does not pay for it.
   * @default false
   */
  sha256?: boolean;
  /** Keep the directory part of client filenames in `originalname`. @default false */
  preservePath?: boolean;
  /**
   * Charset of part header parameters sent without one (`filename="…"`, `name="…"`), multer's option.
   * Browsers send these as raw UTF-8 bytes, hence the default; multer's default is 'latin1'.
   * `filename*=UTF-8''…` (RFC 8187) always carries its own charset.
   * @default 'utf8'
   */
  defParamCharset?: string;
  /**
   * Charset of text field values whose part declares none (multer's option).
   * @default 'utf8'
   */
  defCharset?: string;
  /**
   * Feeds the request body to the parser instead of `req.pipe(parser)` (multer's option): for platforms
   * that read the body before the app runs (Google Cloud Functions' and Firebase's `req.rawBody`), write
   * it yourself — `parser.end(req.rawBody)` — and end the parser.
   */
  streamHandler?: (req: AppRequest, parser: NodeJS.WritableStream) => void;
  /**
   * multer's buffer sizes for busboy's streams: accepted so that options move over unchanged, and not
   * used — express-spool sizes its own buffers, which its memory bound counts on.
   */
  highWaterMark?: number;
  /** See `highWaterMark`. */
  fileHwm?: number;
  /**
   * Fail with REQUEST_TIMEOUT (408) when the body stalls this many ms; 0 turns it off.
   * @default 30000
   */
  idleTimeout?: number;
  /**
   * Fail with REQUEST_TIMEOUT (408) when a request has not finished this many ms after it started
   * (body received and every file stored), however steadily its bytes trickle in; 0 turns it off.
   * Node's own `server.requestTimeout` (default 300000 since Node 18) also ends slow request bodies:
   * raise both for large uploads over slow links.
   * @default 300000
   */
  requestTimeout?: number;
  /**
   * How long (ms) a new request may wait for its share of the memory budget before it is refused with
   * 503 MEMORY_BUDGET_EXCEEDED and a `Retry-After` header. Its body is not read while it waits.
   * @default 10000
   */
  admissionTimeout?: number;
  /**
   * After a failure, how long (ms) to wait for storage engines to stop before answering anyway. A file an
   * engine stores after that is removed as soon as it is reported.
   * @default 10000
   */
  settleTimeout?: number;
  /**
   * After an error, how long (ms) to keep reading the rest of the body before answering, so the client
   * sees the error response instead of a reset connection.
   * @default 2000
   */
  drainTimeout?: number;
}

export interface ResolvedLimits {
  fileSize: number;
  files: number;
  fields: number;
  fieldSize: number;
  fieldNameSize: number;
  parts: number;
  headerPairs: number;
}

export interface SpoolConfig {
  engine: StorageEngine;
  budget: MemoryBudget;
  /** The request's limits (the same object for every request, unless the app gave a function). */
  limitsFor: (req: AppRequest) => ResolvedLimits;
  fileFilter: FileFilter | undefined;
  sha256: boolean;
  preservePath: boolean;
  defParamCharset: string;
  defCharset: string;
  streamHandler: SpoolOptions['streamHandler'];
  idleTimeout: number;
  requestTimeout: number;
  admissionTimeout: number;
  settleTimeout: number;
  drainTimeout: number;
}

export const DEFAULT_LIMITS: Readonly<ResolvedLimits> = Object.freeze({
  fileSize: 1024 ** 3,
  files: 100,
  fields: 1000,
  fieldSize: 1024 ** 2,
  fieldNameSize: 200,
  parts: 1100,
  headerPairs: 2000,
});

const KNOWN_OPTIONS = new Set([
  'threshold', 'rollover', 'storage', 'dest', 'memoryBudget', 'limits', 'fileFilter',
  'sha256', 'preservePath', 'defParamCharset', 'defCharset', 'streamHandler', 'highWaterMark', 'fileHwm', 'idleTimeout', 'requestTimeout', 'admissionTimeout', 'settleTimeout', 'drainTimeout',
]);

/** Validates options once, when the factory is called; throws TypeError with the option's name. */
export function resolveOptions(options: SpoolOptions = {}): SpoolConfig {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected options to be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`Unknown option \`${key}\``);
  }
  const { fileFilter } = options;
  // multer's precedence: `storage` wins, then a (truthy) `dest`, a directory or a `destination` function.
  const dest = options.storage === undefined && options.dest ? options.dest : undefined;
  if (dest !== undefined && typeof dest !== 'string' && typeof dest !== 'function') {
    throw new TypeError(`Expected \`dest\` to be a directory or a function, got ${describe(dest)}`);
  }
  const storage = dest !== undefined ? diskEngine({ directory: dest }) : storageOption(options.storage);
  if (storage !== undefined && (options.threshold !== undefined || options.rollover !== undefined)) {
    throw new TypeError(`\`threshold\` and \`rollover\` configure the default spool engine; do not combine them with \`${dest !== undefined ? 'dest' : 'storage'}\``);
  }
  for (const [name, fn] of [['fileFilter', fileFilter], ['streamHandler', options.streamHandler]] as const) {
    if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`Expected \`${name}\` to be a function, got ${describe(fn)}`);
  }
  countOption('highWaterMark', options.highWaterMark, 0);
  countOption('fileHwm', options.fileHwm, 0);
  assertParserSupported();
  return {
    engine: storage ?? spoolEngine({ threshold: options.threshold, rollover: options.rollover ?? diskEngine() }),
    budget: budgetOption(options.memoryBudget),
    limitsFor: limitsOption(options.limits),
    fileFilter,
    sha256: booleanOption('sha256', options.sha256, false),
    preservePath: booleanOption('preservePath', options.preservePath, false),
    defParamCharset: charsetOption('defParamCharset', options.defParamCharset, DEFAULT_PARAM_CHARSET),
    defCharset: charsetOption('defCharset', options.defCharset, 'utf8'),
    streamHandler: options.streamHandler,
    idleTimeout: durationOption('idleTimeout', options.idleTimeout, 30_000),
    requestTimeout: durationOption('requestTimeout', options.requestTimeout, 300_000),
    admissionTimeout: durationOption('admissionTimeout', options.admissionTimeout, 10_000),
    settleTimeout: durationOption('settleTimeout', options.settleTimeout, 10_000),
    drainTimeout: durationOption('drainTimeout', options.drainTimeout, 2_000),
  };
}

/**
 * Memory every admitted request holds from the budget: its stream buffers (socket, parser, a file's tap)
 * and FIELD_CREDIT for its first text fields (UploadRequest). The fixed part of the memory bound, see the
 * README. A smaller budget could never admit a request: it is refused when the middleware is made.
 */
export const REQUEST_SHARE = 192 * 1024;

function budgetOption(memoryBudget: SpoolOptions['memoryBudget']): MemoryBudget {
  const budget = memoryBudget instanceof MemoryBudget ? memoryBudget : new MemoryBudget(memoryBudget ?? '64MiB');
  if (budget.limit < REQUEST_SHARE) {
    throw new TypeError(`Expected \`memoryBudget\` to be at least ${REQUEST_SHARE} bytes (one request's share), got ${budget.limit}`);
  }
  return budget;
}

/** The app's engine: ours, or a multer StorageEngine taken through fromMulterStorage. */
function storageOption(storage: SpoolOptions['storage']): StorageEngine | undefined {
  if (storage === undefined || isStorageEngine(storage)) return storage;
  const multerEngine = storage as Partial<MulterStorageEngine> | null;
  if (typeof multerEngine?._handleFile === 'function' && typeof multerEngine._removeFile === 'function') {
    // Loaded here, not at import: apps that never hand over a multer engine do not load the interop.
    const { fromMulterStorage } = require('../multer/from-multer-storage') as typeof import('../multer/from-multer-storage');
    return fromMulterStorage(storage);
  }
  throw new TypeError(`Expected \`storage\` to be a storage engine (express-spool's or multer's), got ${describe(storage)}`);
}

/** Limits fixed once, or asked of the app's function per request (and checked each time). */
function limitsOption(limits: SpoolOptions['limits']): (req: AppRequest) => ResolvedLimits {
  if (typeof limits !== 'function') {
    const fixed = resolveLimits(limits);
    return () => fixed;
  }
  return (req) => {
    const chosen = limits(req);
    if (typeof (chosen as unknown as PromiseLike<unknown> | null)?.then === 'function') {
      throw new TypeError('`limits` must return the limits object itself, not a promise (multer calls it the same way)');
    }
    return resolveLimits(chosen);
  };
}

function resolveLimits(limits: SpoolLimits = {}): ResolvedLimits {
  if (typeof limits !== 'object' || limits === null) {
    throw new TypeError(`Expected \`limits\` to be an object, got ${describe(limits)}`);
  }
  for (const key of Object.keys(limits)) {
    if (!Object.hasOwn(DEFAULT_LIMITS, key)) throw new TypeError(`Unknown option \`limits.${key}\``);
  }
  const d = DEFAULT_LIMITS;
  return {
    fileSize: sizeOption('limits.fileSize', limits.fileSize, d.fileSize),
    files: countOption('limits.files', limits.files, d.files),
    fields: countOption('limits.fields', limits.fields, d.fields),
    fieldSize: sizeOption('limits.fieldSize', limits.fieldSize, d.fieldSize),
    fieldNameSize: sizeOption('limits.fieldNameSize', limits.fieldNameSize, d.fieldNameSize),
    parts: countOption('limits.parts', limits.parts, d.parts),
    headerPairs: countOption('limits.headerPairs', limits.headerPairs, d.headerPairs),
  };
}

function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`Expected \`${name}\` to be a boolean, got ${describe(value)}`);
  return value;
}
