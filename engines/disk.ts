import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/engine';
import { describe } from '../lib/sizes';

/** How long files written by a disk engine live. */
export type DiskLifetime = 'persistent' | 'temporary';

export interface DiskEngineOptions {
  /**
   * Directory the files are written to; created (recursively) on first use.
   * @default a directory named `express-spool` under `os.tmpdir()`
   */
  directory?: string;
  /**
   * `'persistent'`: files stay until the app removes them (multer's diskStorage).
   * `'temporary'`: the core removes them when the response ends, unless the app calls `file.keep()`.
   * @default 'persistent' when `directory` is given, otherwise 'temporary'
   */
  lifetime?: DiskLifetime;
  /**
   * Name of the file inside `directory`. Receives the part's metadata; must return a plain file name
   * (no path separators). The client's filename is never used unless you use it here — sanitize it.
   * @default a random UUID v4
   */
  filename?: (file: IncomingFile) => string;
}

/** Details a disk-stored file carries (multer's diskStorage fields). */
export interface DiskDetails {
  readonly destination: string;
  readonly filename: string;
  readonly path: string;
}

const SAFE_NAME = /^[^/\\\0]+$/;

/** Writes each file to `directory` under a generated name. */
export function diskEngine(options: DiskEngineOptions = {}): StorageEngine {
  const { directory, lifetime, filename = () => randomUUID() } = options;
  if (directory !== undefined && (typeof directory !== 'string' || directory === '')) {
    throw new TypeError(`Expected \`directory\` to be a non-empty string, got ${describe(directory)}`);
  }
  if (lifetime !== undefined && lifetime !== 'persistent' && lifetime !== 'temporary') {
    throw new TypeError(`Expected \`lifetime\` to be 'persistent' or 'temporary', got ${describe(lifetime)}`);
  }
  if (typeof filename !== 'function') {
    throw new TypeError(`Expected \`filename\` to be a function, got ${describe(filename)}`);
  }
  const destination = resolve(directory ?? join(tmpdir(), 'express-spool'));
  const temporary = (lifetime ?? (directory === undefined ? 'temporary' : 'persistent')) === 'temporary';
  let ready: Promise<unknown> | undefined;

  return {
    name: 'disk',
    async store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      const name = filename(file);
      if (typeof name !== 'string' || !SAFE_NAME.test(name) || name === '.' || name === '..') {
        throw new TypeError(`diskEngine \`filename\` must return a plain file name, got ${describe(name)}`);
      }
      // Retry mkdir after a failure (e.g. the directory was removed while the app runs).
      ready ??= mkdir(destination, { recursive: true }).catch((err) => {
        ready = undefined;
        throw err;
      });
      await ready;
      const path = join(destination, name);
      const output = createWriteStream(path, { flags: 'wx', highWaterMark: 1024 * 1024 });
      try {
        await pipeline(stream, output, { signal: context.signal });
      } catch (err) {
        await rm(path, { force: true });
        throw err;
      }
      const details: DiskDetails = { destination, filename: name, path };
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
