import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, lstat, mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { AppRequest, IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/core/engine';
import { SpoolError } from '../lib/core/errors';
import { streamInto } from '../lib/core/chunk-sink';
import { DirectFileWriter } from './direct-file-writer';
import { ownPrivateDirectory } from './private-directory';
import { describe } from '../lib/core/sizes';

/** How long files written by a disk engine live. */
export type DiskLifetime = 'persistent' | 'temporary';

/** multer's callback: `callback(null, value)` or `callback(error)`. */
export type DiskCallback = (error: Error | null, value?: string) => void;

/**
 * Chooses a directory or a file name per file, with the request in hand. Either multer's form — call
 * `callback(null, value)` — or return the value (or a promise of it); `(req, file) => …` is enough then.
 */
export type DiskNameFunction = (req: AppRequest, file: IncomingFile, callback: DiskCallback) => string | Promise<string> | void;

export interface DiskEngineOptions {
  /**
   * Where files go. A string is created (recursively) on first use, and again if it disappears (a tmp
   * cleaner). A function picks a directory per file, like multer's `destination(req, file, cb)`, and as
   * with multer the app must have created it: a missing one fails the request (STORAGE_FAILED, `cause`
   * is the ENOENT).
   * @default a directory named `express-spool` under `os.tmpdir()`
   */
  directory?: string | DiskNameFunction;
  /** multer's name for `directory` (same meaning); give one or the other. */
  destination?: string | DiskNameFunction;
  /**
   * `'persistent'`: files stay until the app removes them (multer's diskStorage).
   * `'temporary'`: the core removes them when the response ends, unless the app calls `file.keep()`.
   * @default 'persistent' when a directory is given, otherwise 'temporary'
   */
  lifetime?: DiskLifetime;
  /**
   * Name of the file inside the directory: `filename(req, file, cb)` (multer's form) or a returned value
   * or promise. Must be a plain file name (no path separators). The client's filename is never used unless
   * you use it here — sanitize it. A name that exists already fails the request with FILE_EXISTS (409);
   * the existing file is left alone. A function declared with one parameter is called as
   * `filename(file)`, express-spool 0.1's form (to use only the request, declare `(req, _file) => …`).
   * @default a random UUID v4
   * @example filename: (req, file) => `${req.user.id}-${randomUUID()}.bin`
   */
  filename?: DiskNameFunction;
}

/**
 * Details a disk-stored file carries (multer's diskStorage fields, as multer gives them: `destination` the
 * directory as the app gave it, `path` that joined with `filename`, so relative when the directory was).
 */
export interface DiskDetails {
  readonly destination: string;
  readonly filename: string;
  readonly path: string;
}

const SAFE_NAME = /^[^/\\\0]+$/;
/**
 * Bytes that may wait behind the write in flight while the memory budget has room: with the parser's chunks
 * (a socket read, at most 64 KiB) the writer then holds less than 1 MiB, which is reserved per file. Writes
 * go out eagerly (what arrived while the last write was in flight, one `writev`), so they grow only while the
 * disk is busy: one write per incoming chunk costs a thread-pool round trip larger than the copy into the
 * page cache itself (bench/README.md, "Profile"), and with many files at once full, aligned batches cost more
 * kernel time than eager ones ("Session 11: when batches go out").
 */
const LARGE_QUEUE = 448 * 1024;
const LARGE_RESERVATION = 1024 * 1024;
/**
 * Otherwise one chunk waits behind the one being written: held outside the budget, counted in the memory
 * bound's per-upload overhead.
 */
const SMALL_QUEUE = 1;
const KNOWN_OPTIONS = new Set(['directory', 'destination', 'lifetime', 'filename']);

/** Writes each file to a directory under a generated (or app-chosen) name. */
export function diskEngine(options: DiskEngineOptions = {}): StorageEngine {
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new TypeError(`Unknown diskEngine option \`${key}\``);
  }
  if (options.directory !== undefined && options.destination !== undefined) {
    throw new TypeError('Give `directory` or `destination` (its multer name), not both');
  }
  const optionName = options.destination !== undefined ? 'destination' : 'directory';
  const directory = options.destination ?? options.directory;
  const { lifetime, filename } = options;
  if (directory !== undefined && typeof directory !== 'function' && (typeof directory !== 'string' || directory === '')) {
    throw new TypeError(`Expected \`${optionName}\` to be a non-empty string or a function, got ${describe(directory)}`);
  }
  if (lifetime !== undefined && lifetime !== 'persistent' && lifetime !== 'temporary') {
    throw new TypeError(`Expected \`lifetime\` to be 'persistent' or 'temporary', got ${describe(lifetime)}`);
  }
  if (filename !== undefined && typeof filename !== 'function') {
    throw new TypeError(`Expected \`filename\` to be a function, got ${describe(filename)}`);
  }
  // As the app gave it (what `destination` and `path` report, as multer's do), and resolved once for the
  // engine's own file operations, which a later change of the working directory must not move.
  const given = typeof directory === 'function' ? undefined : (directory ?? join(tmpdir(), 'express-spool'));
  const fixed = given === undefined ? undefined : resolve(given);
  // The default directory sits in the shared tmp: it must be ours alone (see `ownPrivateDirectory`).
  const shared = directory === undefined;
  const temporary = (lifetime ?? (directory === undefined ? 'temporary' : 'persistent')) === 'temporary';

  async function chooseName(file: IncomingFile, request: AppRequest): Promise<string> {
    if (!filename) return randomUUID();
    const legacy = filename.length === 1 ? (filename as unknown as (file: IncomingFile) => unknown) : undefined;
    const name = legacy ? legacy(file) : await ask(filename, request, file);
    if (typeof name !== 'string' || !SAFE_NAME.test(name) || name === '.' || name === '..') {
      throw new TypeError(`diskEngine \`filename\` must return a plain file name, got ${describe(name)}`);
    }
    return name;
  }

  async function chooseDirectory(file: IncomingFile, request: AppRequest): Promise<{ given: string; resolved: string }> {
    if (fixed !== undefined) return { given: given as string, resolved: fixed };
    const chosen = await ask(directory as DiskNameFunction, request, file);
    if (typeof chosen !== 'string' || chosen === '') {
      throw new TypeError(`diskEngine \`${optionName}\` must give a directory, got ${describe(chosen)}`);
    }
    return { given: chosen, resolved: resolve(chosen) };
  }

  return {
    name: 'disk',
    async store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      const destination = await chooseDirectory(file, context.request);
      const name = await chooseName(file, context.request);
      const path = join(destination.resolved, name);
      // Only a file this call created may be removed: 'wx' refuses to open an existing one.
      const handle = await create(destination.resolved, name, fixed !== undefined ? { shared } : undefined, file);
      try {
        // No signal: the core destroys `stream` when the request fails, which aborts the writer.
        await writeFile(stream, handle, context);
      } catch (err) {
        await handle.close().catch(() => undefined); // (the writer has closed it already; this is for safety)
        await rm(path, { force: true });
        throw err;
      }
      const details: DiskDetails = { destination: destination.given, filename: name, path: join(destination.given, name) };
      return {
        storage: 'disk',
        details,
        temporary,
        stream: () => createReadStream(path),
        remove: () => rm(path, { force: true }),
      };
    },
  };
}

/**
 * Writes `stream` into `handle`, with more bytes queued per write while the request's memory budget is at
 * most half used (an optional speed-up must not crowd out what requests need). The writer closes the handle
 * either way.
 */
async function writeFile(stream: Readable, handle: FileHandle, context: StoreContext): Promise<void> {
  const memory = context.memory;
  const reserved = typeof memory?.tryReserveSpare === 'function' && memory.tryReserveSpare(LARGE_RESERVATION);
  try {
    await streamInto(stream, new DirectFileWriter(handle, reserved ? LARGE_QUEUE : SMALL_QUEUE));
  } finally {
    if (reserved) memory.release(LARGE_RESERVATION);
  }
}

/**
 * Creates `path` exclusively. A directory the engine owns (a string option) is created when missing —
 * also after a tmp cleaner removed it; one the app chose per file is not (multer's rule). The default
 * directory (`shared`: under the system's tmp, where other local users can create names too) is created
 * private (0700) and checked before each file, and its files are readable by this user only.
 */
async function create(directory: string, name: string, owned: { shared: boolean } | undefined, file: IncomingFile): Promise<FileHandle> {
  if (owned?.shared) await ownPrivateDirectory(directory);
  try {
    return await open(join(directory, name), 'wx', owned?.shared ? 0o600 : 0o666);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      // The message names the file, not the server's directory: 4xx messages are shown to clients.
      throw new SpoolError('FILE_EXISTS', `A file named ${JSON.stringify(name)} already exists`, { cause: err, field: file.fieldname });
    }
    if (code !== 'ENOENT' || !owned) throw err;
  }
  await mkdir(directory, { recursive: true, mode: owned.shared ? 0o700 : 0o777 });
  return create(directory, name, owned.shared ? owned : undefined, file);
}

/**
 * Calls a multer-style `(req, file, cb)` function that may also return its answer (or a promise of it).
 * One that declares the callback (or no parameter at all: a wrapper) answers through it unless it returns a
 * string or a promise of one: an `async (req, file, cb)` that calls `cb` later resolves to nothing, and a
 * concise arrow returns whatever its last call did (a timer, a handle), neither of which is an answer
 * (multer ignores them too).
 */
function ask(fn: DiskNameFunction, request: AppRequest, file: IncomingFile): Promise<unknown> {
  const takesCallback = fn.length >= 3 || fn.length === 0;
  return new Promise((resolvePromise, reject) => {
    let settled = false;
    const callback: DiskCallback = (error, value) => {
      if (settled) return;
      settled = true;
      if (error) reject(error);
      else resolvePromise(value);
    };
    try {
      const result = fn(request, file, callback) as unknown;
      if (result === undefined || (takesCallback && typeof result !== 'string' && !isThenable(result))) return;
      Promise.resolve(result).then(
        (value) => {
          if (takesCallback && typeof value !== 'string') return; // (the callback answers)
          callback(null, value as string);
        },
        (error: unknown) => callback(error as Error),
      );
    } catch (error) {
      callback(error as Error);
    }
  });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}
