import type { Readable } from 'node:stream';
import type { IncomingFile, StoredFile } from './engine';

/**
 * A file as the app sees it on `req.file` / `req.files`: multer's fields, the engine's details
 * (`buffer`; `destination`/`filename`/`path`; `bucket`/`key`/…), plus `storage`, `sha256` and methods.
 * Methods live on the prototype, so `res.json(req.file)` shows data only.
 */
export class UploadedFile implements IncomingFile {
  declare readonly fieldname: string;
  declare readonly originalname: string;
  declare readonly encoding: string;
  declare readonly mimetype: string;
  /** Bytes received. */
  declare readonly size: number;
  /** Which engine kept the bytes: 'memory' | 'disk' | 's3' | a custom engine's name. */
  declare readonly storage: string;
  /** Hex sha256 of the bytes received, computed while streaming (absent when hashing is off). */
  declare readonly sha256?: string;
  /** Memory engine: the bytes. */
  declare readonly buffer?: Buffer;
  /** Disk engine: directory, generated file name and full path. */
  declare readonly destination?: string;
  declare readonly filename?: string;
  declare readonly path?: string;
  /** S3 engine: where the object went. */
  declare readonly bucket?: string;
  declare readonly key?: string;
  declare readonly location?: string;
  declare readonly etag?: string;
  declare readonly versionId?: string;

  readonly #stored: StoredFile;
  #kept = false;
  #removal: Promise<void> | undefined;

  constructor(meta: IncomingFile, size: number, sha256: string | undefined, stored: StoredFile) {
    const self = this as { -readonly [K in keyof UploadedFile]: UploadedFile[K] };
    self.fieldname = meta.fieldname;
    self.originalname = meta.originalname;
    self.encoding = meta.encoding;
    self.mimetype = meta.mimetype;
    self.size = size;
    self.storage = stored.storage;
    if (sha256 !== undefined) self.sha256 = sha256;
    this.#stored = stored;
    // Copy descriptors, not values, so lazy getters (the memory engine's buffer) stay lazy.
    const details = stored.details as Record<string, unknown>;
    for (const key in details) {
      // A detail may not shadow the file's own members (remove, isTemporary, toString…): the core relies on them.
      if (key in UploadedFile.prototype) continue;
      const descriptor = Object.getOwnPropertyDescriptor(details, key);
      if (!descriptor) continue;
      if (descriptor.get || descriptor.set) {
        // Read through to the engine's getter with one accessor per key shared by every file: copying the
        // engine's getter would give each file its own hidden class (see engines/memory.ts, readBuffer).
        const shared = UploadedFile.#accessor(key);
        descriptor.get = descriptor.get && shared.get;
        descriptor.set = descriptor.set && shared.set;
      }
      Object.defineProperty(this, key, descriptor);
    }
  }

  static readonly #accessors = new Map<string, { get(this: UploadedFile): unknown; set(this: UploadedFile, value: unknown): void }>();

  static #accessor(key: string) {
    let accessor = UploadedFile.#accessors.get(key);
    if (!accessor) {
      accessor = {
        get() {
          return (this.#stored.details as Record<string, unknown>)[key];
        },
        set(value) {
          (this.#stored.details as Record<string, unknown>)[key] = value;
        },
      };
      UploadedFile.#accessors.set(key, accessor);
    }
    return accessor;
  }

  /** A fresh Readable of the stored bytes, whichever engine holds them. */
  stream(): Readable {
    return this.#stored.stream();
  }

  /** Deletes the stored bytes. Safe to call more than once. */
  remove(): Promise<void> {
    this.#removal ??= removeStored(this.#stored);
    return this.#removal;
  }

  /** Keeps a temporary file past the end of the response (the app then owns its removal). */
  keep(): this {
    this.#kept = true;
    return this;
  }

  /** Whether the core must remove this file when the response ends. */
  get isTemporary(): boolean {
    return this.#stored.temporary === true && !this.#kept;
  }
}

/** The engine's remove() as a promise of nothing: a plain JavaScript engine may return undefined or throw. */
async function removeStored(stored: StoredFile): Promise<void> {
  await stored.remove();
}
