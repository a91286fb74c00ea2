/**
 * jest globalSetup: provides a Redis server to the tests (the many-instances lock).
 *
 * - If REDIS_URL is set, that server is used as is.
 * - Otherwise scripts/local-redis.sh starts Debian's redis-server (installed with apt-get when missing) on
 *   a free port, without persistence, in a new directory in os.tmpdir(); REDIS_URL is put into
 *   process.env for the workers, and the global teardown stops it.
 *
 * Failing to get a server throws: the Redis tests must fail, never be skipped.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseExports, REPO_ROOT } from './s3-global-setup';

const SCRIPT = path.join(REPO_ROOT, 'scripts', 'local-redis.sh');
export const REDIS_STARTED_DIR_KEY = '__SPOOL_LOCAL_REDIS_STARTED_DIR';

export function runLocalRedis(command: 'start' | 'stop', dir: string): { status: number | null; stdout: string; error?: Error } {
  const res = spawnSync('bash', [SCRIPT, command, dir], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    timeout: 10 * 60 * 1000, // the first start may apt-get install redis-server
    killSignal: 'SIGKILL',
  });
  return { status: res.status, stdout: res.stdout ?? '', error: res.error };
}

export default async function redisGlobalSetup(): Promise<void> {
  if (process.env.REDIS_URL) {
    process.stderr.write(`[redis-global-setup] using ${process.env.REDIS_URL}\n`);
    return;
  }
  const dir = path.join(os.tmpdir(), `express-spool-redis-${process.pid}-${randomBytes(4).toString('hex')}`);
  const res = runLocalRedis('start', dir);
  const url = parseExports(res.stdout).REDIS_URL;
  if (res.error || res.status !== 0 || !url) {
    runLocalRedis('stop', dir);
    throw new Error(
      `[redis-global-setup] could not start a local Redis (${SCRIPT} start ${dir}): ` +
        `${res.error?.message ?? `exit status ${res.status}`}. Set REDIS_URL to use another server.`,
    );
  }
  process.env.REDIS_URL = url;
  process.env[REDIS_STARTED_DIR_KEY] = dir;
  (globalThis as Record<string, unknown>)[REDIS_STARTED_DIR_KEY] = dir;
  process.stderr.write(`[redis-global-setup] local redis-server at ${url}\n`);
}

export async function redisGlobalTeardown(): Promise<void> {
  const g = globalThis as Record<string, unknown>;
  const dir = (g[REDIS_STARTED_DIR_KEY] as string | undefined) || process.env[REDIS_STARTED_DIR_KEY];
  if (!dir) return;
  delete g[REDIS_STARTED_DIR_KEY];
  delete process.env[REDIS_STARTED_DIR_KEY];
  const res = runLocalRedis('stop', dir);
  if (res.error || res.status !== 0) throw new Error(`[redis-global-teardown] could not stop the local Redis in ${dir}`);
}
