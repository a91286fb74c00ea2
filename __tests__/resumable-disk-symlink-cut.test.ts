/**
 * The disk store never writes through a symlink at an upload's name (README): also not when an interrupted
 * atomic append (Upload-Checksum / Content-Digest) cuts its data file back, after someone who can create
 * names in a shared, explicitly configured directory put a symlink there meanwhile. (Found by a review: the
 * cut went through the path-based truncate(), which follows it.)
 */
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { MemoryBudget, resumableDiskStore } from '../lib';
import { eventually, fdsUnder } from './helpers/app';

test('an interrupted atomic append does not truncate the file a symlink at the upload\'s name points to', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rev20f-store-'));
  const outside = mkdtempSync(join(tmpdir(), 'rev20f-victim-'));
  const victim = join(outside, 'precious.txt');
  writeFileSync(victim, 'precious bytes, not the store\'s');
  try {
    const store = resumableDiskStore({ directory: dir });
    const upload = await store.create(
      { length: 100, metadata: {}, createdAt: Date.now(), extra: {} } as any,
      { signal: new AbortController().signal, memory: new MemoryBudget('1MiB').lease(), request: {} as any },
    );
    const body = new PassThrough();
    const appending = store.append(upload, body, {
      atomic: true, signal: new AbortController().signal, memory: new MemoryBudget('1MiB').lease(), request: {} as any,
    }).catch((err) => err);
    body.write(Buffer.from('abc'));
    // The data file is open (its O_NOFOLLOW open passed) and the bytes written: only the cut-back can follow a link now.
    await eventually(() => {
      expect(fdsUnder(dir)).toBe(1);
      expect(statSync(join(dir, upload.id)).size).toBe(3);
    });
    unlinkSync(join(dir, upload.id));
    symlinkSync(victim, join(dir, upload.id));
    body.destroy(new Error('checksum mismatch')); // the atomic append is interrupted: cut back to offset 0
    const outcome = await appending;
    expect(outcome).toMatchObject({ code: 'ELOOP' }); // the cut refused the link (a path truncate() would follow it)
    expect(readlinkSync(join(dir, upload.id))).toBe(victim);
    expect(readFileSync(victim, 'utf8')).toBe('precious bytes, not the store\'s');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});
