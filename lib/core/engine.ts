import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { MemoryLease } from './memory-budget';

/**
 * The request as an app sees it: Express and its middleware add fields (`user`, `params`, …), so callbacks
 * that receive it (fileFilter, S3 `key`) may read them without a cast.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AppRequest = IncomingMessage & { [field: string]: any };

/** What the core knows about a file part before any byte of it is stored. */
export interface IncomingFile {
  /** Form field name of the part. */
  readonly fieldname: string;
  /** File name as the client sent it (never used as a path or key unless an engine is told to). */
  readonly originalname: string;
  /** Content-Transfer-Encoding of the part (usually '7bit'). */
  readonly encoding: string;
  /** Content-Type of the part, as the client declared it. */
  readonly mimetype: string;
}

/** Everything an engine gets besides the bytes. */
export interface StoreContext {
  /** Aborted when the request fails or the client goes away: stop writing, remove the partial file, reject. */
  readonly signal: AbortSignal;
  /** The request's share of the memory budget; engines that keep bytes in memory reserve them here. */
  readonly memory: MemoryLease;
  /**
   * Hex sha256 of the file's bytes, once the stream has ended (resolves undefined before that, or when
   * hashing is off). Lets engines record the digest with what they stored.
   */
  sha256(): Promise<string | undefined>;
  /**
   * The HTTP request, for naming only (e.g. an S3 key from a route parameter); never read its body.
   * Valid while `store()` runs: keep your own reference if a later callback (a `remove()`) needs it.
   */
  readonly request: AppRequest;
}

/**
 * What an engine stored. `details` are copied onto the uploaded file the app sees
 * (multer's `buffer`, `destination`, `filename`, `path`; S3's `bucket`, `key`, …); getters are kept lazy.
 */
export interface StoredFile {
  /** Which engine kept the bytes: 'memory' | 'disk' | 's3' | a custom name. */
  readonly storage: string;
  readonly details: object;
  /** True for stores that the core must remove when the response ends (unless the app calls `keep()`). */
  readonly temporary?: boolean;
  /** Reads the stored bytes back. */
  stream(): Readable;
  /** Deletes what was stored; resolves when it is gone. Must tolerate being called twice. */
  remove(): Promise<void>;
}

/**
 * The contract between the core and every storage engine.
 * An engine consumes the file stream, honours the abort signal, and returns what it stored;
 * cleanup policy (what to remove, and when) belongs to the core.
 */
export interface StorageEngine {
  /** Short name used in errors and logs. */
  readonly name: string;
  /**
   * Consumes `stream` to its end and stores it. On `context.signal` abort or a stream error,
   * removes anything partially written and rejects.
   */
  store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile>;
}

export function isStorageEngine(value: unknown): value is StorageEngine {
  return typeof value === 'object' && value !== null && typeof (value as StorageEngine).store === 'function';
}
