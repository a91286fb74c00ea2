/**
 * jest globalSetup: provides an S3 server to the tests.
 *
 * - If S3_ENDPOINT is set, that external S3-compatible server is used as is
 *   (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are then required; S3_REGION
 *   and S3_BUCKET_PREFIX are optional).
 * - Otherwise scripts/local-s3.sh starts a local Ceph radosgw (installing it
 *   with apt-get when missing) in LOCAL_S3_DIR (default: a new directory in
 *   os.tmpdir() for each run, so runs side by side do not share or stop each
 *   other's server, and nothing is written into the repository), and its
 *   S3_* exports are put into process.env, which the test workers inherit.
 *   The global teardown stops it again, but only if this setup started it
 *   (a server already running in LOCAL_S3_DIR is left alone).
 *
 * Failing to get a server throws: the S3 tests must fail, never be skipped.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const LOCAL_S3_SCRIPT = path.join(REPO_ROOT, 'scripts', 'local-s3.sh');
export const STARTED_DIR_KEY = '__SPOOL_LOCAL_S3_STARTED_DIR';

/** LOCAL_S3_DIR, or a path in os.tmpdir() that does not exist yet (local-s3.sh creates and removes it). */
export function localS3Dir(): string {
  return process.env.LOCAL_S3_DIR || path.join(os.tmpdir(), `express-spool-s3-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Runs scripts/local-s3.sh; stderr goes to ours, stdout is returned. */
export function runLocalS3(
  command: 'start' | 'stop' | 'status',
  dir: string,
): { status: number | null; stdout: string; error?: Error } {
  const res = spawnSync('bash', [LOCAL_S3_SCRIPT, command, dir], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    // the first start may apt-get install Ceph
    timeout: 15 * 60 * 1000,
    killSignal: 'SIGKILL',
  });
  return { status: res.status, stdout: res.stdout ?? '', error: res.error };
}

/** Parses `export NAME=value` lines. */
export function parseExports(stdout: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2].replace(/^(['"])(.*)\1$/, '$2');
  }
  return vars;
}

const REQUIRED = ['S3_ENDPOINT', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'] as const;

export default async function s3GlobalSetup(): Promise<void> {
  if (process.env.S3_ENDPOINT) {
    const missing = REQUIRED.filter((k) => !process.env[k]);
    if (missing.length > 0) {
      throw new Error(
        `S3_ENDPOINT=${process.env.S3_ENDPOINT} is set, but ${missing.join(', ')} ` +
          `is not: set them for the external S3 server, or unset S3_ENDPOINT to ` +
          `start a local radosgw`,
      );
    }
    process.env.S3_REGION ||= 'us-east-1';
    process.stderr.write(`\n[s3-global-setup] using external S3 server ${process.env.S3_ENDPOINT}\n`);
    return;
  }

  const dir = localS3Dir();
  const before = runLocalS3('status', dir);
  const alreadyRunning = before.status === 0;
  const t0 = Date.now();
  const res = alreadyRunning ? before : runLocalS3('start', dir);
  const vars = parseExports(res.stdout);
  const missing = REQUIRED.filter((k) => !vars[k]);

  if (res.error || res.status !== 0 || missing.length > 0) {
    if (!alreadyRunning) runLocalS3('stop', dir);
    const why = res.error
      ? res.error.message
      : res.status !== 0
        ? `exit status ${res.status}`
        : `no ${missing.join(', ')} in its output`;
    throw new Error(
      `[s3-global-setup] could not start the local S3 server (${LOCAL_S3_SCRIPT} start ${dir}): ` +
        `${why}. Its log is above. To use another S3-compatible server instead, set ` +
        `S3_ENDPOINT, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY.\n${res.stdout}`,
    );
  }

  for (const [k, v] of Object.entries(vars)) process.env[k] = v;
  process.env.S3_REGION ||= 'us-east-1';
  if (!alreadyRunning) {
    // read by s3-global-teardown.ts (same process)
    process.env[STARTED_DIR_KEY] = dir;
    (globalThis as Record<string, unknown>)[STARTED_DIR_KEY] = dir;
  }
  process.stderr.write(
    `[s3-global-setup] local radosgw ${alreadyRunning ? 'already running' : `started in ${((Date.now() - t0) / 1000).toFixed(1)} s`}` +
      ` at ${process.env.S3_ENDPOINT}\n`,
  );
}
