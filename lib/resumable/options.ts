import { resumableDiskStore } from '../../engines/resumable-disk';
import type { AppRequest } from '../core/engine';
import { MemoryBudget } from '../core/memory-budget';
import { DEFAULT_LIMITS, type FileFilter } from '../multipart/options';
import { countOption, describe, sizeOption, type Size, durationOption } from '../core/sizes';
import type { UploadedFile } from '../core/uploaded-file';
import { UploadLocks } from './upload-lock';
import type { UploadLocker } from './upload-locker';
import { isResumableStore, type ResumableStore } from './upload-store';

/** Limits of resumable uploads (the multipart `limits` names where the meaning is the same). */
export interface ResumableLimits {
  /** Max bytes of one upload (tus `Tus-Max-Size`, IETF `Upload-Limit: max-size`); more is 413. @default '1GiB' */
  fileSize?: Size;
  /** Max bytes one request may append (IETF `max-append-size`); more is 413, what came before is kept. @default fileSize */
  appendSize?: Size;
}

export type ResumableProtocol = 'tus' | 'ietf';

export interface ResumableOptions {
  /** Where uploads live. @default resumableDiskStore() — a directory under os.tmpdir() */
  store?: ResumableStore;
  limits?: ResumableLimits;
  /**
   * Decides from the declared metadata (`filename` → `originalname`, `filetype` → `mimetype`), before any
   * byte is stored, whether an upload may be created: same signature as the multipart `fileFilter`. A
   * refusal is FILE_REJECTED (400); an error is passed on as the response.
   */
  fileFilter?: FileFilter;
  /**
   * Called once per completed upload (not for tus partial uploads) before the completing request is
   * answered; a rejection answers that request with the error (the upload stays complete). The file is an
   * {@link UploadedFile}: `storage`, `size`, `sha256`, `stream()`, `remove()`, `originalname`,
   * `mimetype`, and the store's details (disk: `path`). Completed uploads do not expire: the app owns them.
   */
  onComplete?: (file: UploadedFile, req: AppRequest) => void | Promise<void>;
  /**
   * Compute `sha256` of the whole upload (kept in memory across appends; after a restart, or an append
   * whose stored bytes differ from the bytes hashed, read back once from the store at completion). Off by
   * default, as in `spool()`: an app that does not read `file.sha256` does not pay for it (a third of the
   * CPU of a disk upload, bench/). An upload whose client declared a `Repr-Digest` is hashed regardless.
   * @default false
   */
  sha256?: boolean;
  /** Lifetime (ms) of an unfinished upload, renewed by every append (tus `Upload-Expires`); 0: never. @default 86400000 (24 h) */
  expiration?: number;
  /** Run `sweep()` this often (ms, unref'd timer); 0: only when the app calls it. @default 3600000 */
  sweepInterval?: number;
  /** Bytes all requests of this middleware may hold in memory, or a {@link MemoryBudget} shared with `spool()`. @default '64MiB' */
  memoryBudget?: Size | MemoryBudget;
  /** Protocols answered on this URL space. @default ['tus', 'ietf'] */
  protocols?: readonly ResumableProtocol[];
  /**
   * Send `104 Upload Resumption Supported` interim responses to IETF draft requests (HTTP/1.1 and HTTP/2):
   * one with the upload's Location when a creation starts, and progress ones (see `interimProgress`).
   * `false`: none at all. @default true
   */
  interimResponses?: boolean;
  /**
   * Progress 104s while an IETF draft append (or creation with a body) streams: each carries the
   * `Upload-Offset` the store has durably recorded — what a HEAD, even after a restart, reports at least —
   * and is sent once at least `bytes` more were recorded AND at least `interval` ms passed since the last
   * one (or since the request began). The disk store records a state file at those points; a store that
   * never reports durable progress (the S3 store, for now) sends none. Never for tus requests, never after
   * the final response started, never for requests with a Content-Digest (all or nothing). `false`: off.
   * @default { bytes: '1MiB', interval: 1000 }
   */
  interimProgress?: false | { bytes?: Size; interval?: number };
  /** An append that receives nothing for this many ms is ended (what it stored is kept); 0: off. @default 30000 */
  idleTimeout?: number;
  /** How long (ms) a request waits for a superseded request on the same upload to let go; then 423. @default 5000 */
  lockTimeout?: number;
  /**
   * How long (ms) a store has to finish an append once the append was ended (its client gone, a newer
   * request on the upload, the idle timeout): past it the request is answered 500
   * STORAGE_FAILED, and the upload stays locked (and its memory counted) until the store settles — a store
   * that never does keeps it so. A client waiting for its answer waits for a slow store. 0: wait as long as
   * the store takes. @default 10000
   */
  settleTimeout?: number;
  /**
   * How long (ms) a store may go during an append without reading the body while its client is sending
   * (or has sent it all), or without finishing once the body is in: past it the append is ended as above
   * (what the store recorded is kept) and the request answered 500 STORAGE_FAILED, so a store stuck on a
   * request that never returns cannot hold a waiting client for ever. Time the store spends waiting for the
   * client (that is `idleTimeout`) or for memory from the budget does not count. A store that reads a part at
   * a time waits for its part uploads between reads (the S3 store: up to `queueSize + 1` parts): keep this
   * above that time. 0: off. @default 120000
   */
  storeTimeout?: number;
  /**
   * One writer per upload. The default works inside one process; behind a load balancer use `redisLocker()`
   * (and give it to the store as its `fence`). See README "Running many instances".
   * @default an in-process lock
   */
  locker?: UploadLocker;
  /** How long (ms) a request may wait for its share of the memory budget; then 503 + Retry-After. @default 10000 */
  admissionTimeout?: number;
  /**
   * Whether a client's `DELETE` may remove a completed upload (tus termination; as tusd and @tus/server
   * do by default: the upload's URL is the client's capability). `false` when the app keeps what
   * onComplete got (`file.path`) and no client may remove it: such a DELETE is answered 400
   * UPLOAD_COMPLETED and removes nothing. Unfinished uploads and partial ones can always be terminated.
   * @default true
   */
  terminateCompleted?: boolean;
  /**
   * tus concatenation (`Upload-Concat`: partial uploads assembled into a final one, as tus-js-client's
   * `parallelUploads` sends). A final upload's bytes are copied from its partials, and partials may be named
   * several times and serve several finals: one small request can make the store write up to
   * `limits.fileSize`. `false` answers `Upload-Concat` with 400 INVALID_UPLOAD_REQUEST and leaves the
   * extension out of `Tus-Extension`.
   * @default true
   */
  concatenation?: boolean;
}

export interface ResumableConfig {
  store: ResumableStore;
  fileSize: number;
  appendSize: number;
  fileFilter: FileFilter | undefined;
  onComplete: ResumableOptions['onComplete'];
  sha256: boolean;
  expiration: number;
  sweepInterval: number;
  budget: MemoryBudget;
  protocols: ReadonlySet<ResumableProtocol>;
  interimResponses: boolean;
  /** Progress 104s: at most one per `bytes` recorded and per `interval` ms; undefined when off. */
  interimProgress: { readonly bytes: number; readonly interval: number } | undefined;
  idleTimeout: number;
  lockTimeout: number;
  settleTimeout: number;
  storeTimeout: number;
  locker: UploadLocker;
  admissionTimeout: number;
  terminateCompleted: boolean;
  concatenation: boolean;
}

const KNOWN = new Set([
  'store', 'limits', 'fileFilter', 'onComplete', 'sha256', 'expiration', 'sweepInterval', 'memoryBudget',
  'protocols', 'interimResponses', 'interimProgress', 'idleTimeout', 'lockTimeout', 'settleTimeout', 'storeTimeout', 'admissionTimeout', 'locker',
  'terminateCompleted', 'concatenation',
]);

export function resolveResumableOptions(options: ResumableOptions = {}): ResumableConfig {
  if (typeof options !== 'object' || options === null) throw new TypeError(`Expected options to be an object, got ${describe(options)}`);
  for (const key of Object.keys(options)) if (!KNOWN.has(key)) throw new TypeError(`Unknown option \`${key}\``);
  const { store, fileFilter, onComplete, limits = {} } = options;
  if (store !== undefined && !isResumableStore(store)) throw new TypeError(`Expected \`store\` to be a resumable store, got ${describe(store)}`);
  for (const [name, fn] of [['fileFilter', fileFilter], ['onComplete', onComplete]] as const) {
    if (fn !== undefined && typeof fn !== 'function') throw new TypeError(`Expected \`${name}\` to be a function, got ${describe(fn)}`);
  }
  if (typeof limits !== 'object' || limits === null) throw new TypeError(`Expected \`limits\` to be an object, got ${describe(limits)}`);
  for (const key of Object.keys(limits)) {
    if (key !== 'fileSize' && key !== 'appendSize') throw new TypeError(`Unknown option \`limits.${key}\``);
  }
  const fileSize = sizeOption('limits.fileSize', limits.fileSize, DEFAULT_LIMITS.fileSize);
  const protocols = options.protocols ?? ['tus', 'ietf'];
  if (!Array.isArray(protocols) || protocols.length === 0 || protocols.some((p) => p !== 'tus' && p !== 'ietf')) {
    throw new TypeError(`Expected \`protocols\` to be a non-empty array of 'tus' and 'ietf', got ${describe(protocols)}`);
  }
  return {
    store: store ?? resumableDiskStore(),
    fileSize,
    appendSize: Math.min(sizeOption('limits.appendSize', limits.appendSize, fileSize), fileSize),
    fileFilter,
    onComplete,
    sha256: booleanOption('sha256', options.sha256, false),
    expiration: durationOption('expiration', options.expiration, 86_400_000, Number.MAX_SAFE_INTEGER),
    sweepInterval: durationOption('sweepInterval', options.sweepInterval, 3_600_000),
    budget: options.memoryBudget instanceof MemoryBudget ? options.memoryBudget : new MemoryBudget(options.memoryBudget ?? '64MiB'),
    protocols: new Set(protocols),
    interimResponses: booleanOption('interimResponses', options.interimResponses, true),
    interimProgress: progressOption(options.interimProgress),
    idleTimeout: durationOption('idleTimeout', options.idleTimeout, 30_000),
    lockTimeout: durationOption('lockTimeout', options.lockTimeout, 5_000),
    settleTimeout: durationOption('settleTimeout', options.settleTimeout, 10_000),
    storeTimeout: durationOption('storeTimeout', options.storeTimeout, 120_000),
    locker: lockerOption(options.locker),
    admissionTimeout: durationOption('admissionTimeout', options.admissionTimeout, 10_000),
    terminateCompleted: booleanOption('terminateCompleted', options.terminateCompleted, true),
    concatenation: booleanOption('concatenation', options.concatenation, true),
  };
}

function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new TypeError(`Expected \`${name}\` to be a boolean, got ${describe(value)}`);
  return value;
}

function progressOption(value: unknown): ResumableConfig['interimProgress'] {
  if (value === false) return undefined;
  if (value === undefined) return { bytes: 1024 * 1024, interval: 1000 };
  if (typeof value !== 'object' || value === null) {
    throw new TypeError(`Expected \`interimProgress\` to be false or { bytes, interval }, got ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (key !== 'bytes' && key !== 'interval') throw new TypeError(`Unknown option \`interimProgress.${key}\``);
  }
  const { bytes, interval } = value as { bytes?: Size; interval?: number };
  return { bytes: sizeOption('interimProgress.bytes', bytes, 1024 * 1024), interval: durationOption('interimProgress.interval', interval, 1000) };
}

function lockerOption(value: unknown): UploadLocker {
  if (value === undefined) return new UploadLocks();
  const locker = value as UploadLocker | null;
  if (typeof locker !== 'object' || locker === null || typeof locker.acquire !== 'function' || typeof locker.has !== 'function') {
    throw new TypeError(`Expected \`locker\` to be an upload locker, got ${describe(value)}`);
  }
  return locker;
}
