/**
 * The demo as `npm start` runs it (README, "Demo server"): the built entry, dist/examples/server.js, in its
 * own process. "a bad value exits with status 1 and a message naming it"; on SIGTERM it "stops accepting
 * requests …, deletes every file it stored … and exits 0". (Stopping the local S3 server it started needs
 * STORAGE=s3 without S3_ENDPOINT, i.e. Ceph installed and started by the demo: not run here.)
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { randomData, sha256 } from './helpers/multipart';
import { eventually, tempDir } from './helpers/app';

// The demo built as `npm start` builds it (tsconfig.build.json), into a directory of this run's own one level
// under the repository (the demo finds examples/public two levels up, and node_modules from there): a fresh
// clone has no dist/, and the suite never writes it.
const root = join(__dirname, '..');
const BUILD = join(root, `.demo-build-${randomBytes(4).toString('hex')}`);
const ENTRY = join(BUILD, 'examples', 'server.js');
beforeAll(() => {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', BUILD], { cwd: root, stdio: 'pipe', timeout: 120_000 });
}, 120_000);
afterAll(() => rmSync(BUILD, { recursive: true, force: true }));

interface Run {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(env: Record<string, string>): Run {
  // A clean environment: only what node needs and the variables under test (no S3_*, no PORT from outside).
  const child = spawn(process.execPath, [ENTRY], {
    cwd: join(__dirname, '..'),
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, stdout: () => out, stderr: () => err, exit };
}

const running: ChildProcess[] = [];
afterEach(() => {
  for (const child of running.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

test('the demo builds with tsconfig.build.json (the build npm start runs) to an entry node can start', () => {
  expect(existsSync(ENTRY)).toBe(true);
});

test.each([
  ['PORT', 'abc', 'PORT="abc": expected an integer from 0 to 65535'],
  ['MAX_FILE_SIZE', '1 potato', 'MAX_FILE_SIZE="1 potato": expected a byte count of at least 1'],
  ['STORAGE', 'ftp', "STORAGE=\"ftp\": expected 'disk' or 's3'"],
])('a bad %s=%j exits with status 1 and a message naming it, without listening', async (name, value, message) => {
  const dir = tempDir('spool-demo-proc-');
  try {
    const run = start({ PORT: '0', UPLOAD_DIR: dir.path, [name]: value });
    running.push(run.child);
    expect(await run.exit).toEqual({ code: 1, signal: null });
    expect(run.stderr()).toContain(message);
    expect(run.stderr()).toContain('Invalid configuration');
    expect(run.stdout()).not.toContain('express-spool demo on');
  } finally {
    dir.remove();
  }
}, 20_000);

test('SIGTERM: the files it stored are deleted and it exits 0; its port refuses connections afterwards', async () => {
  const dir = tempDir('spool-demo-proc-');
  try {
    const run = start({ PORT: '0', HOST: '127.0.0.1', UPLOAD_DIR: dir.path, SPOOL_THRESHOLD: '64KiB', STORAGE: 'disk' });
    running.push(run.child);
    await eventually(() => expect(run.stdout()).toMatch(/express-spool demo on http:\/\/localhost:\d+/), 15_000);
    const port = Number(/localhost:(\d+)/.exec(run.stdout())![1]);
    const base = `http://127.0.0.1:${port}`;
    const small = randomData(1000);
    const large = randomData(300 * 1024);
    const res = await request(base).post('/api/files').attach('a', small, 'small.bin').attach('b', large, 'large.bin').expect(201);
    expect(res.body.files.map((f: any) => [f.originalname, f.storage, f.sha256])).toEqual([
      ['small.bin', 'memory', sha256(small)],
      ['large.bin', 'disk', sha256(large)],
    ]);
    const onDisk = () => readdirSync(dir.path, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
    expect(onDisk()).toHaveLength(1);

    run.child.kill('SIGTERM');
    expect(await run.exit).toEqual({ code: 0, signal: null });
    expect(run.stdout()).toContain('[shutdown] SIGTERM');
    expect(run.stdout()).toContain('[shutdown] stored files removed, bye');
    expect(run.stderr()).toBe('');
    expect(onDisk()).toEqual([]);
    // It stopped listening: nothing answers on its port any more.
    await expect(request(base).get('/api/files')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  } finally {
    dir.remove();
  }
}, 30_000);
