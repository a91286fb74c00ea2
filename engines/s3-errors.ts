import { SpoolError } from '../lib/core/errors';

/** Network-level failures: the store could not be reached, or the connection broke. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN']);
/** Answers that mean "not now": S3's 503 SlowDown / ServiceUnavailable, a gateway in front of the store (502, 504). */
const UNAVAILABLE_STATUS = new Set([502, 503, 504]);

/**
 * Types an S3 failure:
 * - no answer (refused, reset, timed out) or a 502/503/504 answer → STORAGE_UNAVAILABLE (503): retry later;
 * - any other answer (bad credentials, missing bucket, NoSuchUpload, 500 InternalError) → STORAGE_FAILED
 *   with status 502: the upstream said no;
 * - an error that is not from the SDK at all (a bug, a bad configuration) → STORAGE_FAILED (500), never
 *   mistaken for an outage.
 * The SDK error stays as `cause`; assert on its `name` (e.g. 'NoSuchBucket'), not its message.
 */
export function toS3Error(err: unknown): SpoolError {
  if (err instanceof SpoolError) return err;
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } } | null;
  const name = e?.name ?? 'Error';
  const status = e?.$metadata?.httpStatusCode;
  const message = `S3 ${name}: ${e?.message ?? String(err)}`;
  if (status !== undefined) {
    if (UNAVAILABLE_STATUS.has(status)) return new SpoolError('STORAGE_UNAVAILABLE', message, { cause: err });
    return new SpoolError('STORAGE_FAILED', message, { status: 502, cause: err });
  }
  // The SDK marks every request it attempted with $metadata; without a status, no answer came back.
  const noAnswer = (e?.code !== undefined && UNREACHABLE.has(e.code)) || name === 'TimeoutError' || e?.$metadata !== undefined;
  if (noAnswer) return new SpoolError('STORAGE_UNAVAILABLE', message, { cause: err });
  return new SpoolError('STORAGE_FAILED', message, { cause: err });
}
