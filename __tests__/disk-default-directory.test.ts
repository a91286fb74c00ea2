/**
 * The disk engine's default directory, `os.tmpdir()/express-spool`, sits where every local user can create
 * names. It is created private (0700), its files are this user's only (0600), a looser directory of ours is
 * tightened, and a symlink or another user's directory in its place is refused (STORAGE_FAILED) without a
 * byte written through it. A directory the app names keeps the usual modes.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import { join } from 'node:path';
import { diskEngine, spool } from '../lib';
import { close, echoApp, listen, tempDir } from './helpers/app';
import { postMultipart, randomData, sha256 } from './helpers/multipart';

let sandbox: ReturnType<typeof tempDir>;
let server: Server | undefined;

beforeEach(() => {
  sandbox = tempDir('spool-default-dir-');
  jest.spyOn(os, 'tmpdir').mockReturnValue(sandbox.path); // for the engines made in this test
});

afterEach(async () => {
  jest.restoreAllMocks();
  if (server) await close(server);
  server = undefined;
  sandbox.remove();
});

/** A route that keeps its files (persistent), so the test can look at them. */
async function serveDefault(): Promise<Server> {
  server = await listen(echoApp(spool({ storage: diskEngine({ lifetime: 'persistent' }) }).single('f')));
  return server;
}

const mode = (path: string) => lstatSync(path).mode & 0o777;

test('created 0700 when missing; its files 0600, byte-exact', async () => {
  const srv = await serveDefault();
  const data = randomData(300_000);
  const res = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'a.bin', data }]);
  expect(res.status).toBe(200);
  const dir = join(sandbox.path, 'express-spool');
  expect(res.json.file.destination).toBe(dir);
  expect(mode(dir)).toBe(0o700);
  expect(mode(res.json.file.path)).toBe(0o600);
  expect(sha256(readFileSync(res.json.file.path))).toBe(sha256(data));
});

test('an existing directory of ours with looser modes is tightened to 0700 before its first file', async () => {
  const dir = join(sandbox.path, 'express-spool');
  mkdirSync(dir);
  chmodSync(dir, 0o777);
  const srv = await serveDefault();
  const data = randomData(5000);
  const res = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'a.bin', data }]);
  expect(res.status).toBe(200);
  expect(mode(dir)).toBe(0o700);
  expect(sha256(readFileSync(res.json.file.path))).toBe(sha256(data));
});

test('a symlink in its place is refused: STORAGE_FAILED, nothing written where it points', async () => {
  const elsewhere = join(sandbox.path, 'someone-elses');
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, join(sandbox.path, 'express-spool'));
  const srv = await serveDefault();
  const res = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'a.bin', data: randomData(5000) }]);
  expect(res.status).toBe(500);
  expect(res.json.error.code).toBe('STORAGE_FAILED');
  expect(readdirSync(elsewhere)).toEqual([]);
});

const root = process.getuid?.() === 0;
(root ? test : test.skip)("another user's directory in its place is refused (run as root: chowned to nobody)", async () => {
  const dir = join(sandbox.path, 'express-spool');
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  chownSync(dir, 65534, 65534);
  const srv = await serveDefault();
  const res = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'a.bin', data: randomData(5000) }]);
  expect(res.status).toBe(500);
  expect(res.json.error.code).toBe('STORAGE_FAILED');
  expect(readdirSync(dir)).toEqual([]);
  expect(mode(dir)).toBe(0o777); // not ours to change
});

test('a directory the app names keeps the usual modes (umask applies)', async () => {
  const dir = join(sandbox.path, 'app-uploads');
  server = await listen(echoApp(spool({ storage: diskEngine({ directory: dir }) }).single('f')));
  const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'a.bin', data: randomData(5000) }]);
  expect(res.status).toBe(200);
  const umask = process.umask();
  expect(mode(res.json.file.path)).toBe(0o666 & ~umask);
});

test('checked before every file: a directory removed (a tmp cleaner) and recreated by someone else is refused', async () => {
  const srv = await serveDefault();
  const first = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'a.bin', data: randomData(1000) }]);
  expect(first.status).toBe(200);
  const dir = join(sandbox.path, 'express-spool');
  rmSync(dir, { recursive: true, force: true });
  const elsewhere = join(sandbox.path, 'planted');
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, dir);
  const second = await postMultipart(srv, '/upload', [{ name: 'f', filename: 'b.bin', data: randomData(1000) }]);
  expect(second.status).toBe(500);
  expect(second.json.error.code).toBe('STORAGE_FAILED');
  expect(readdirSync(elsewhere)).toEqual([]);
});
