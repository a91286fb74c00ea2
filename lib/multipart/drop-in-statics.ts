import { tmpdir } from 'node:os';
import { diskEngine, type DiskEngineOptions } from '../../engines/disk';
import { memoryEngine } from '../../engines/memory';
import { MULTER_CODES, SpoolError } from '../core/errors';

/** multer 2's messages for its codes (its lib/multer-error.js). */
const MULTER_MESSAGES: Readonly<Record<string, string>> = {
  LIMIT_PART_COUNT: 'Too many parts',
  LIMIT_FILE_SIZE: 'File too large',
  LIMIT_FILE_COUNT: 'Too many files',
  LIMIT_FIELD_KEY: 'Field name too long',
  LIMIT_FIELD_VALUE: 'Field value too long',
  LIMIT_FIELD_COUNT: 'Too many fields',
  LIMIT_UNEXPECTED_FILE: 'Unexpected file field',
  MISSING_FIELD_NAME: 'Field name missing',
  LIMIT_FIELD_NESTING: 'Field name nesting too deep',
  LIMIT_FIELD_ARRAY_INDEX: 'Field name array index too large',
  STREAM_DESTROYED: 'File stream was destroyed',
  INVALID_FIELD_NAME: 'Invalid field name',
};

/**
 * multer's `MulterError`, so that an app migrated by its import alone keeps `new multer.MulterError(code,
 * field, filename)` (any code, as multer's: its own filter errors included) and its error handler's
 * `err instanceof multer.MulterError`, which also holds for every SpoolError express-spool raises with one of
 * multer's codes (`name` 'MulterError').
 */
export class MulterError extends Error {
  override readonly name = 'MulterError';
  readonly code: string;
  readonly field?: string;
  readonly filename?: string;

  constructor(code: string, field?: string, filename?: string) {
    super(Object.hasOwn(MULTER_MESSAGES, code) ? MULTER_MESSAGES[code] : `Unknown error: ${code}`);
    this.code = code;
    if (field) this.field = field;
    if (filename) this.filename = filename;
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true;
    return this === MulterError && value instanceof SpoolError && MULTER_CODES.has(value.code);
  }
}

/**
 * multer's `diskStorage({ destination, filename })` as the disk engine: files stay where they are written, and
 * without a destination they go to `os.tmpdir()`, as multer's do. (An existing name is FILE_EXISTS, 409, where
 * multer overwrites; multer's `flush` option is refused rather than silently dropped.)
 */
export function diskStorage(options: Pick<DiskEngineOptions, 'destination' | 'filename'> = {}) {
  for (const key of Object.keys(options)) {
    if (key !== 'destination' && key !== 'filename') throw new TypeError(`diskStorage: option \`${key}\` is not supported`);
  }
  return diskEngine({ destination: options.destination ?? tmpdir(), filename: options.filename, lifetime: 'persistent' });
}

/** multer's `memoryStorage()` as the memory engine (counted against the memory budget). */
export function memoryStorage() {
  return memoryEngine();
}
