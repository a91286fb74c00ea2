/**
 * jest globalTeardown: stops the local radosgw, but only if
 * s3-global-setup.ts started it (not an external S3_ENDPOINT, not a server
 * that was already running before the tests).
 */
import { runLocalS3, STARTED_DIR_KEY } from './s3-global-setup';

export default async function s3GlobalTeardown(): Promise<void> {
  const g = globalThis as Record<string, unknown>;
  const dir = (g[STARTED_DIR_KEY] as string | undefined) || process.env[STARTED_DIR_KEY];
  if (!dir) return;
  delete g[STARTED_DIR_KEY];
  delete process.env[STARTED_DIR_KEY];
  const res = runLocalS3('stop', dir);
  if (res.error || res.status !== 0) {
    throw new Error(
      `[s3-global-teardown] could not stop the local S3 server in ${dir}: ` +
        `${res.error ? res.error.message : `exit status ${res.status}`}`,
    );
  }
}
