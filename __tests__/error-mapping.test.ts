/**
 * README, Errors: `STORAGE_FULL` (507) "the disk (or quota) is full". A full disk is provoked for real in
 * faults.test.ts (a tmpfs that fills up: ENOSPC → 507). A full quota (EDQUOT) cannot be provoked here: this
 * kernel has no tmpfs quotas, and root ignores quota limits anyway. So the mapping every engine failure
 * goes through (lib/core/error-mapping.ts, `toStorageError`, used by the multipart core on whatever an
 * engine rejects with, the disk engine's fs errors included) is checked directly, and then through a
 * request whose engine fails the way the disk engine does (an fs error from a real write).
 */
import { open } from 'node:fs/promises';
import request from 'supertest';
import { SpoolError, spool, type StorageEngine } from '../lib';
import { toStorageError } from '../lib/core/error-mapping';
import { echoApp } from './helpers/app';

/** An error shaped exactly like Node's fs errors (errno, code, syscall), as a failed write rejects with. */
function fsError(code: string, errno: number): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: write failed, write`), { errno: -errno, code, syscall: 'write' });
}

describe('toStorageError: fs errors → typed SpoolErrors', () => {
  test.each([
    ['ENOSPC', 28, 'STORAGE_FULL', 507],
    ['EDQUOT', 122, 'STORAGE_FULL', 507],
    ['EACCES', 13, 'STORAGE_FAILED', 500],
    ['EROFS', 30, 'STORAGE_FAILED', 500],
    ['EIO', 5, 'STORAGE_FAILED', 500],
  ])('%s (errno %d) → %s (%d), the fs error kept as cause', (code, errno, expected, status) => {
    const cause = fsError(code, errno);
    const err = toStorageError(cause) as SpoolError;
    expect(err).toBeInstanceOf(SpoolError);
    expect([err.code, err.status, err.cause]).toEqual([expected, status, cause]);
  });

  test('a SpoolError an engine raises passes through unchanged', () => {
    const own = new SpoolError('STORAGE_UNAVAILABLE');
    expect(toStorageError(own)).toBe(own);
  });
});

test('through a request: an engine whose write fails with EDQUOT answers 507 STORAGE_FULL (EACCES: 500 STORAGE_FAILED)', async () => {
  // The engine reads part of the file into a real file, then its write fails as a quota-full disk's would.
  const failing = (code: string, errno: number): StorageEngine => ({
    name: 'quota',
    async store(stream) {
      const handle = await open('/dev/null', 'w');
      try {
        for await (const chunk of stream) {
          await handle.write(chunk as Buffer);
          throw fsError(code, errno);
        }
      } finally {
        await handle.close();
      }
      throw new Error('unreachable');
    },
  });
  for (const [code, errno, expected, status] of [['EDQUOT', 122, 'STORAGE_FULL', 507], ['EACCES', 13, 'STORAGE_FAILED', 500]] as const) {
    const res = await request(echoApp(spool({ storage: failing(code, errno) }).any())).post('/upload').attach('f', Buffer.alloc(10_000, 1), 'a.bin');
    expect([res.status, res.body.error.code]).toEqual([status, expected]);
  }
});
