import { SpoolError } from '../lib/errors';

/** Network-level failures: the store could not be reached at all. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN']);

/**
 * Types an S3 failure: an unreachable store or a 503 answer → STORAGE_UNAVAILABLE (503); any other answer
 * from S3 (bad credentials, missing bucket, …) → STORAGE_FAILED with status 502 (the upstream said no).
 * The SDK error stays as `cause`; assert on its `name` (e.g. 'NoSuchBucket'), not its message.
 */
export function toS3Error(err: unknown): SpoolError {
  if (err instanceof SpoolError) return err;
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } } | null;
  const name = e?.name ?? 'Error';
  const httpStatus = e?.$metadata?.httpStatusCode;
  const message = `S3 ${name}: ${e?.message ?? String(err)}`;
  if ((e?.code && UNREACHABLE.has(e.code)) || httpStatus === 503 || name === 'TimeoutError' || httpStatus === undefined) {
    return new SpoolError('STORAGE_UNAVAILABLE', message, { cause: err });
  }
  return new SpoolError('STORAGE_FAILED', message, { status: 502, cause: err });
}
