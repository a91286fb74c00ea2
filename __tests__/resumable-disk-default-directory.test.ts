/**
 * `resumableDiskStore()` without a directory uses `os.tmpdir()/express-spool-resumable`, where every local user
 * can create names: the same threat the multipart disk engine guards its own default against
 * (__tests__/disk-default-directory.test.ts). The store makes the directory 0700 and its files 0600, refuses a
 * symlink or another user's directory there (500 STORAGE_FAILED), and never writes through a symlink planted
 * at an upload's data file, in any directory (O_NOFOLLOW). Found by a hostile review: a symlink was followed,
 * another user's world-writable directory used, a planted `<id>` symlink overwritten, and files were 0644.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { resumable, resumableDiskStore } from '../lib';
import { tempDir } from './helpers/app';
import { OCTETS, request, serveAtFiles, TUS } from './helpers/resumable';

let sandbox: ReturnType<typeof tempDir>;
beforeEach(() => {
  sandbox = tempDir('rev20e-resumable-default-');
  jest.spyOn(os, 'tmpdir').mockReturnValue(sandbox.path); // the store's default directory goes under the sandbox
});
afterEach(() => {
  jest.restoreAllMocks();
  sandbox.remove();
});

async function serveDefaultStore() {
  return serveAtFiles(resumable({ store: resumableDiskStore(), sweepInterval: 0 }));
}

test('a symlink planted at the default directory is not followed: nothing is written where it points', async () => {
  const elsewhere = join(sandbox.path, 'attackers-dir');
  mkdirSync(elsewhere);
  symlinkSync(elsewhere, join(sandbox.path, 'express-spool-resumable'));
  const srv = await serveDefaultStore();
  try {
    const res = await request(`${srv.url}/files`, 'POST', { ...TUS, 'Upload-Length': 5 });
    // diskEngine answers STORAGE_FAILED (500) in this situation; anything but writing through the link will do.
    expect(readdirSync(elsewhere)).toEqual([]);
    expect(res.status).toBe(500);
  } finally {
    await srv.close();
  }
});

const root = process.getuid?.() === 0;
(root ? test : test.skip)(
  "another user's world-writable default directory: a symlink they plant at <id> does not make the append overwrite the file it points to",
  async () => {
    const dir = join(sandbox.path, 'express-spool-resumable');
    mkdirSync(dir, { mode: 0o777 });
    chmodSync(dir, 0o777);
    chownSync(dir, 65534, 65534); // created by "nobody", as another local user would
    const victim = join(sandbox.path, 'victim.txt'); // e.g. ~/.ssh/authorized_keys of the server's user
    writeFileSync(victim, 'precious content\n');
    const srv = await serveDefaultStore();
    try {
      const created = await request(`${srv.url}/files`, 'POST', { ...TUS, 'Upload-Length': 5 });
      if (created.status === 201) {
        const id = created.headers.location!.split('/').pop()!;
        // The other user sees `<id>.json` appear in their directory and plants `<id>` -> victim.
        symlinkSync(victim, join(dir, id));
        await request(`${srv.url}/files/${id}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('PWNED'));
      }
      expect(readFileSync(victim, 'utf8')).toBe('precious content\n');
      // And the store should refuse such a directory outright, as diskEngine does for its default.
      expect(created.status).toBe(500);
    } finally {
      await srv.close();
    }
  },
);

test('uploads under the default directory are private to this user (dir 0700, files 0600), as diskEngine\'s are', async () => {
  const srv = await serveDefaultStore();
  try {
    const created = await request(`${srv.url}/files`, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': 5 }, Buffer.from('hello'));
    expect(created.status).toBe(201);
    const id = created.headers.location!.split('/').pop()!;
    const dir = join(sandbox.path, 'express-spool-resumable');
    expect(lstatSync(dir).mode & 0o077).toBe(0);
    expect(lstatSync(join(dir, id)).mode & 0o077).toBe(0);
    expect(lstatSync(join(dir, `${id}.json`)).mode & 0o077).toBe(0);
  } finally {
    await srv.close();
  }
});

test('in a directory the app chose too, an append never writes through a symlink planted at the upload\'s data file', async () => {
  const dir = join(sandbox.path, 'uploads');
  const victim = join(sandbox.path, 'victim.txt');
  writeFileSync(victim, 'precious content\n');
  const srv = await serveAtFiles(resumable({ store: resumableDiskStore({ directory: dir }), sweepInterval: 0 }));
  try {
    const created = await request(`${srv.url}/files`, 'POST', { ...TUS, 'Upload-Length': 5 });
    expect(created.status).toBe(201);
    const id = created.headers.location!.split('/').pop()!;
    symlinkSync(victim, join(dir, id));
    const patched = await request(`${srv.url}/files/${id}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('PWNED'));
    expect(patched.status).toBe(500);
    expect(readFileSync(victim, 'utf8')).toBe('precious content\n');
  } finally {
    await srv.close();
  }
});
