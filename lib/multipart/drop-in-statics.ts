import { tmpdir } from 'node:os';
import { diskEngine, type DiskEngineOptions } from '../../engines/disk';
import { memoryEngine } from '../../engines/memory';
import { MULTER_CODES, SpoolError, type SpoolErrorCode } from '../core/errors';

/** The codes multer itself has (`MulterError`'s). */
export type MulterErrorCode = Extract<SpoolErrorCode, 'LIMIT_PART_COUNT' | 'LIMIT_FILE_SIZE' | 'LIMIT_FILE_COUNT' | 'LIMIT_FIELD_KEY' | 'LIMIT_FIELD_VALUE' | 'LIMIT_FIELD_COUNT' | 'LIMIT_UNEXPECTED_FILE' | 'MISSING_FIELD_NAME'>;

/**
 * multer's `MulterError`, so that an app migrated by its import alone keeps its error handler
 * (`err instanceof multer.MulterError`) and its `new multer.MulterError(code, field)`: every SpoolError with a
 * code multer has (`name` 'MulterError') is an instance, and a new one is a SpoolError of that code.
 */
export class MulterError extends SpoolError {
  constructor(code: MulterErrorCode, field?: string) {
    super(code, undefined, field === undefined ? {} : { field });
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof SpoolError && MULTER_CODES.has(value.code);
  }
}

/**
 * multer's `diskStorage({ destination, filename })` as the disk engine: files stay where they are written, and
 * without a destination they go to `os.tmpdir()`, as multer's do.
 */
export function diskStorage(options: Pick<DiskEngineOptions, 'destination' | 'filename'> = {}) {
  return diskEngine({ destination: options.destination ?? tmpdir(), filename: options.filename, lifetime: 'persistent' });
}

/** multer's `memoryStorage()` as the memory engine. */
export function memoryStorage() {
  return memoryEngine();
}
