import { createReadStream } from 'node:fs';
import { finished, PassThrough, Readable } from 'node:stream';
import type { IncomingFile, StorageEngine, StoreContext, StoredFile } from '../core/engine';
import type { MulterFile, MulterStorageEngine } from './multer-types';
import { describe } from '../core/sizes';
import { SpoolError } from '../core/errors';

export interface FromMulterStorageOptions {
  /** `storage` name reported for files whose kind cannot be inferred. @default 'multer' */
  name?: string;
  /** Reads a stored file back, for engines that keep neither `buffer` nor `path` (e.g. multer-s3). */
  readStream?: (info: Record<string, unknown>) => Readable;
}

/**
 * Makes a multer StorageEngine (multer's diskStorage / memoryStorage, multer-s3, GridFS, …) an express-spool
 * engine, usable alone or as the spool's rollover. On abort the engine's input is ended early rather than
 * errored (multer engines often never call back after an input error), and whatever it stored is removed.
 */
export function fromMulterStorage(storage: MulterStorageEngine, options: FromMulterStorageOptions = {}): StorageEngine {
  if (typeof storage?._handleFile !== 'function' || typeof storage._removeFile !== 'function') {
    throw new TypeError(`Expected \`storage\` to be a multer StorageEngine (_handleFile, _removeFile), got ${describe(storage)}`);
  }
  return {
    name: options.name ?? 'multer',
    store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      // Kept for _removeFile, which runs after store() (the core releases the context then).
      const request = context.request;
      return new Promise((resolve, reject) => {
        const input = new PassThrough();
        let failure: unknown;
        const stop = (reason: unknown) => {
          failure ??= reason;
          stream.unpipe(input);
          input.end();
        };
        // The core destroys `stream` with the error when the request fails: that ends the engine's input.
        // finished() also reports a stream destroyed before we got it (e.g. a limit hit during a rollover).
        const cleanup = finished(stream, (err) => {
          if (err) stop(err);
        });
        stream.pipe(input);
        const multerFile: MulterFile = { ...file, stream: input };
        storage._handleFile(request, multerFile, (err, info = {}) => {
          cleanup();
          if (err) return reject(err);
          const full: MulterFile = { ...multerFile, ...info };
          const remove = () =>
            new Promise<void>((done, fail) => storage._removeFile(request, full, (e) => (e ? fail(e) : done())));
          if (failure !== undefined) {
            // The engine finished a cut-short file: remove it, then report why it was cut — or, when the
            // removal failed, that the file may be left (the core lists it in the error's storageErrors).
            remove().then(
              () => reject(failure),
              (err: unknown) => reject(new SpoolError('STORAGE_FAILED', 'The multer engine could not remove the file it stored for a failed upload', { cause: err, field: file.fieldname })),
            );
            return;
          }
          const { stream: _input, ...details } = info;
          resolve({
            storage: kindOf(info, options.name),
            details,
            stream: () => readBack(info, options.readStream),
            remove,
          });
        });
      });
    },
  };
}

function kindOf(info: Record<string, unknown>, fallback = 'multer'): string {
  if (Buffer.isBuffer(info.buffer)) return 'memory';
  if (typeof info.path === 'string') return 'disk';
  if (typeof info.bucket === 'string' && typeof info.key === 'string') return 's3';
  return fallback;
}

function readBack(info: Record<string, unknown>, custom?: (info: Record<string, unknown>) => Readable): Readable {
  if (custom) return custom(info);
  if (Buffer.isBuffer(info.buffer)) return Readable.from([info.buffer]);
  if (typeof info.path === 'string') return createReadStream(info.path);
  throw new TypeError('This multer engine keeps neither `buffer` nor `path`: pass `readStream` to fromMulterStorage()');
}
