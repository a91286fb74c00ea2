/**
 * Every failure express-spool reports, as a string-literal union.
 * Codes shared with multer keep multer's names so existing error handlers keep working.
 */
export type SpoolErrorCode =
  | 'LIMIT_PART_COUNT'
  | 'LIMIT_FILE_SIZE'
  | 'LIMIT_FILE_COUNT'
  | 'LIMIT_FIELD_KEY'
  | 'LIMIT_FIELD_VALUE'
  | 'LIMIT_FIELD_COUNT'
  | 'LIMIT_UNEXPECTED_FILE'
  | 'MISSING_FIELD_NAME'
  | 'INVALID_FIELD_NAME'
  | 'MALFORMED_MULTIPART'
  | 'UNSUPPORTED_CONTENT_TYPE'
  | 'ALREADY_PARSED'
  | 'FILE_REJECTED'
  | 'CLIENT_ABORTED'
  | 'REQUEST_TIMEOUT'
  | 'MEMORY_BUDGET_EXCEEDED'
  | 'STORAGE_FAILED'
  | 'STORAGE_FULL'
  | 'STORAGE_UNAVAILABLE'
  | 'FILE_EXISTS'
  | 'UPLOAD_NOT_FOUND'
  | 'UPLOAD_EXPIRED'
  | 'UPLOAD_LOCKED'
  | 'UPLOAD_COMPLETED'
  | 'OFFSET_MISMATCH'
  | 'INCONSISTENT_LENGTH'
  | 'CHECKSUM_MISMATCH'
  | 'INVALID_UPLOAD_REQUEST'
  | 'UNSUPPORTED_PROTOCOL_VERSION';

interface CodeInfo {
  readonly status: number;
  readonly message: string;
}

/** HTTP status and default message of each code: the one table to read when mapping errors. */
export const ERROR_CODES: Readonly<Record<SpoolErrorCode, CodeInfo>> = Object.freeze({
  LIMIT_PART_COUNT: { status: 413, message: 'Too many parts' },
  LIMIT_FILE_SIZE: { status: 413, message: 'File too large' },
  LIMIT_FILE_COUNT: { status: 413, message: 'Too many files' },
  LIMIT_FIELD_KEY: { status: 413, message: 'Field name too long' },
  LIMIT_FIELD_VALUE: { status: 413, message: 'Field value too long' },
  LIMIT_FIELD_COUNT: { status: 413, message: 'Too many fields' },
  LIMIT_UNEXPECTED_FILE: { status: 400, message: 'Unexpected file field' },
  MISSING_FIELD_NAME: { status: 400, message: 'Field name missing' },
  INVALID_FIELD_NAME: { status: 400, message: 'Invalid field name' },
  MALFORMED_MULTIPART: { status: 400, message: 'Malformed multipart body' },
  UNSUPPORTED_CONTENT_TYPE: { status: 415, message: 'Unsupported multipart content type' },
  ALREADY_PARSED: { status: 500, message: 'A second upload middleware ran on a request whose body was already parsed' },
  FILE_REJECTED: { status: 400, message: 'File rejected by fileFilter' },
  CLIENT_ABORTED: { status: 400, message: 'Client aborted the request' },
  REQUEST_TIMEOUT: { status: 408, message: 'Request body stalled' },
  MEMORY_BUDGET_EXCEEDED: { status: 503, message: 'Memory budget for uploads exhausted' },
  STORAGE_FAILED: { status: 500, message: 'Storage engine failed' },
  STORAGE_FULL: { status: 507, message: 'Storage is full' },
  STORAGE_UNAVAILABLE: { status: 503, message: 'Storage backend unavailable' },
  FILE_EXISTS: { status: 409, message: 'A file with that name already exists' },
  // Resumable uploads (tus 1.0, IETF drafts); each protocol front-end may answer some with its own status.
  UPLOAD_NOT_FOUND: { status: 404, message: 'No such upload' },
  UPLOAD_EXPIRED: { status: 410, message: 'The upload has expired' },
  UPLOAD_LOCKED: { status: 423, message: 'The upload is busy with another request' },
  UPLOAD_COMPLETED: { status: 400, message: 'The upload is already complete' },
  OFFSET_MISMATCH: { status: 409, message: 'Upload-Offset does not match the upload' },
  INCONSISTENT_LENGTH: { status: 400, message: 'Inconsistent upload length' },
  CHECKSUM_MISMATCH: { status: 460, message: 'Checksum mismatch' },
  INVALID_UPLOAD_REQUEST: { status: 400, message: 'Invalid resumable upload request' },
  UNSUPPORTED_PROTOCOL_VERSION: { status: 412, message: 'Unsupported resumable upload protocol version' },
});

/**
 * Codes raised for exactly the condition multer raises them for. Errors with these codes are named
 * 'MulterError', so handlers written for multer that test `err.name === 'MulterError'` keep working;
 * every other code is named 'SpoolError'. `instanceof SpoolError` holds for all of them.
 */
export const MULTER_CODES: ReadonlySet<SpoolErrorCode> = new Set<SpoolErrorCode>([
  'LIMIT_PART_COUNT',
  'LIMIT_FILE_SIZE',
  'LIMIT_FILE_COUNT',
  'LIMIT_FIELD_KEY',
  'LIMIT_FIELD_VALUE',
  'LIMIT_FIELD_COUNT',
  'LIMIT_UNEXPECTED_FILE',
  'MISSING_FIELD_NAME',
]);

export interface SpoolErrorOptions {
  /** The form field the error is about, when there is one. */
  field?: string;
  /** The client's filename of the file the error is about. */
  filename?: string;
  /** Overrides the code's default HTTP status (e.g. 502 for an S3 error answer). */
  status?: number;
  cause?: unknown;
}

/**
 * The one error class express-spool throws or passes to `next()`; tell errors apart by `code`.
 * `name` is 'MulterError' for the codes multer shares ({@link MULTER_CODES}), 'SpoolError' otherwise.
 */
export class SpoolError extends Error {
  override readonly name: 'SpoolError' | 'MulterError';
  readonly code: SpoolErrorCode;
  /** HTTP status to answer with; Express's default handler reads `status`. */
  readonly status: number;
  /** Same as `status`, for handlers that read `statusCode`. */
  readonly statusCode: number;
  /** Set when the error was caused by a specific field (multer's `field`). */
  readonly field?: string;
  /** The client's filename of the file that caused it (multer's `filename`, on LIMIT_FILE_SIZE and LIMIT_UNEXPECTED_FILE). */
  readonly filename?: string;
  /** Failures met while removing already stored files during cleanup (multer's `storageErrors`). */
  storageErrors: unknown[] = [];

  constructor(code: SpoolErrorCode, message?: string, options: SpoolErrorOptions = {}) {
    const info = ERROR_CODES[code];
    super(message ?? info.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = MULTER_CODES.has(code) ? 'MulterError' : 'SpoolError';
    this.code = code;
    this.status = options.status ?? info.status;
    this.statusCode = this.status;
    if (options.field !== undefined) this.field = options.field;
    if (options.filename !== undefined) this.filename = options.filename;
  }

  /** Whether an HTTP response should expose `message` (client errors only, like http-errors). */
  get expose(): boolean {
    return this.status < 500;
  }
}

export function isSpoolError(value: unknown): value is SpoolError {
  return value instanceof SpoolError;
}
