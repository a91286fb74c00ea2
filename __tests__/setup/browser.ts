/**
 * Part of jest's global setup: makes sure the Chromium that __tests__/demo-e2e.test.ts drives is there,
 * installing Debian's package with apt-get when it is missing and we may (root, or passwordless sudo).
 * playwright cannot download its own browser here.
 *
 * It never throws: when the browser cannot be had, it puts the reason and the command to run into
 * SPOOL_CHROMIUM_MISSING, and the end-to-end test (only it) fails with that message.
 *
 * SPOOL_CHROMIUM names another executable (then nothing is installed).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const DEFAULT_CHROMIUM = '/usr/bin/chromium';
export const MISSING_KEY = 'SPOOL_CHROMIUM_MISSING';
export const INSTALL_COMMAND = 'sudo apt-get install -y --no-install-recommends chromium';

/** The browser the end-to-end test launches. */
export function chromiumPath(): string {
  return process.env.SPOOL_CHROMIUM || DEFAULT_CHROMIUM;
}

/** Why the browser is not there (set by the global setup in the workers' environment), or undefined. */
export function chromiumMissing(): string | undefined {
  if (process.env[MISSING_KEY]) return process.env[MISSING_KEY];
  if (!existsSync(chromiumPath())) return `Chromium is not installed at ${chromiumPath()}. Install it with: ${INSTALL_COMMAND}`;
  return undefined;
}

const log = (line: string) => process.stderr.write(`[browser-setup] ${line}\n`);

/** apt-get as root, or through `sudo -n`; undefined when neither is possible. */
function aptGet(): string[] | undefined {
  if (spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status !== 0) return undefined;
  if (process.getuid?.() === 0) return ['apt-get'];
  return spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0 ? ['sudo', '-n', 'apt-get'] : undefined;
}

/** Runs apt-get with its output captured; returns the tail of it on failure. */
function apt(cmd: string[], args: string[]): string | undefined {
  const res = spawnSync(cmd[0], [...cmd.slice(1), '-q', '-y', '-o', 'DPkg::Lock::Timeout=600', ...args], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 15 * 60 * 1000,
  });
  if (res.status === 0) return undefined;
  const output = `${res.stdout ?? ''}${res.stderr ?? ''}`.trim().split('\n').slice(-5).join('\n');
  return res.error ? res.error.message : `apt-get ${args[0]} exited with ${res.status}: ${output}`;
}

export default function browserSetup(): void {
  delete process.env[MISSING_KEY];
  const exe = chromiumPath();
  if (existsSync(exe)) return;
  const fail = (message: string) => {
    process.env[MISSING_KEY] = message;
    log(`${message} (the demo's end-to-end test will fail)`);
  };
  if (exe !== DEFAULT_CHROMIUM) {
    return fail(`SPOOL_CHROMIUM=${exe} does not exist: point it at a Chromium executable, or unset it to use ${DEFAULT_CHROMIUM} (installed when missing)`);
  }
  const cannot = (why: string) =>
    fail(`Chromium is not installed at ${exe} and the test setup could not install it (${why}). Install it with: ${INSTALL_COMMAND}`);
  const cmd = aptGet();
  if (!cmd) return cannot('that needs apt-get, and root or passwordless sudo');

  const t0 = Date.now();
  log(`Chromium is missing: installing Debian's chromium with ${cmd.join(' ')} (a minute or so, once) …`);
  // apt-get update first only when the package lists do not know chromium (a fresh container), or after
  // an install that failed (stale lists).
  const install = () => apt(cmd, ['install', '--no-install-recommends', 'chromium']);
  const policy = spawnSync('apt-cache', ['policy', 'chromium'], { encoding: 'utf8' }).stdout ?? '';
  let why = /Candidate: (?!\(none\))/.test(policy) ? install() : 'not in the package lists';
  if (why) why = apt(cmd, ['update']) ?? install();
  if (why) return cannot(why);
  if (!existsSync(exe)) return cannot(`apt-get installed chromium but there is no ${exe}`);
  log(`installed ${exe} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}
