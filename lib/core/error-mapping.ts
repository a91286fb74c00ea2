import { SpoolError } from './errors';

/** Any error the multipart parser raises (or throws at construction) is the client's malformed body. */
export function toParserError(err: unknown): Error {
  if (err instanceof SpoolError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/unsupported content type/i.test(message)) {
    return new SpoolError('UNSUPPORTED_CONTENT_TYPE', message, { cause: err });
  }
  return new SpoolError('MALFORMED_MULTIPART', `Malformed multipart body: ${message}`, { cause: err });
}

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);

/**
 * An engine failure, typed: SpoolErrors pass through (engines may raise their own codes); a full disk is
 * STORAGE_FULL (507); anything else is STORAGE_FAILED (500) with the original error as `cause`.
 */
export function toStorageError(err: unknown): Error {
  if (err instanceof SpoolError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && DISK_FULL.has(code)) {
    return new SpoolError('STORAGE_FULL', undefined, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new SpoolError('STORAGE_FAILED', `Storage engine failed: ${message}`, { cause: err });
}
