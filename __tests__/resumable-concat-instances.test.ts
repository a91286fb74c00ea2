import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { redisLocker } from '../lib/index';
import { close, eventually, tempDir } from './helpers/app';
import { OCTETS, request, startResumable, TUS } from './helpers/resumable';

// tus concatenation-unfinished behind a load balancer (redisLocker, one store): the final is declared on B
// while the LAST unfinished partial is being appended to on A. A's completion finds no final (not in its
// memory, no link yet: B could not take the partial's lock); B writes the link once A lets go — and must
// then assemble the final itself (the partial is complete by now), without waiting for a HEAD on the final
// (tus clients send none), so that it is neither lost nor swept with its partials when they expire.

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const idOf = (url: string) => url.split('/').pop()!;

test.each([
  ['assembled without a HEAD, onComplete once', 0],
  ['assembled before its partials expire: the sweep leaves the final alone', 4000],
])('final declared on B while A completes its last partial: %s', async (_label, expiration) => {
  const prefix = `concat-instances-${randomBytes(3).toString('hex')}:`;
  const lockA = redisLocker({ url: process.env.REDIS_URL, prefix });
  const lockB = redisLocker({ url: process.env.REDIS_URL, prefix });
  const dir = tempDir('spool-concat-instances-');
  const A = await startResumable({ locker: lockA, ...(expiration ? { expiration } : {}) }, dir);
  const B = await startResumable({ locker: lockB, ...(expiration ? { expiration } : {}) }, dir);
  try {
    const a = randomBytes(MiB);
    const b = randomBytes(3000);
    const partial = async (length: number) => {
      const res = await request(A.endpoint, 'POST', { ...TUS, 'Upload-Concat': 'partial', 'Upload-Length': length });
      expect(res.status).toBe(201);
      return A.url + res.headers.location!;
    };
    const [pa, pb] = [await partial(a.length), await partial(b.length)];
    expect((await request(pb, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, b)).status).toBe(204); // pb complete
    let release!: () => void;
    const stalled = new Promise<void>((resolve) => (release = resolve));
    async function* body() {
      yield a.subarray(0, 64 * KiB);
      await stalled;
      yield a.subarray(64 * KiB);
    }
    const appending = request(pa, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': a.length }, body());
    await eventually(() => expect(statSync(join(dir.path, idOf(pa))).size).toBe(64 * KiB));
    const final = await request(B.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${new URL(pa).pathname} ${new URL(pb).pathname}` });
    expect(final.status).toBe(201);
    expect(final.headers['upload-offset']).toBeUndefined(); // pending
    await new Promise((r) => setTimeout(r, 300)); // B tries to link pa at least once meanwhile
    release();
    expect((await appending).status).toBe(204); // the last partial is complete (on A)
    const finalId = idOf(final.headers.location!);
    // B's deferred link lands in pa's state, and B then assembles the final: no HEAD needed.
    await eventually(() => expect(JSON.parse(readFileSync(join(dir.path, `${idOf(pa)}.json`), 'utf8')).extra.finals).toBe(finalId), 15_000);
    await eventually(() => expect(A.completed.length + B.completed.length).toBe(1), 15_000);
    const state = JSON.parse(readFileSync(join(dir.path, `${finalId}.json`), 'utf8'));
    expect({ complete: state.complete, offset: state.offset }).toEqual({ complete: true, offset: a.length + b.length });
    expect([...A.completed, ...B.completed][0].readBack).toBe(sha(Buffer.concat([a, b])));
    if (expiration) {
      await new Promise((r) => setTimeout(r, expiration + 200));
      await A.middleware.sweep(); // the partials expired: they go, the assembled final stays
    }
    const head = await request(B.url + final.headers.location!, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(a.length + b.length)]);
    await new Promise((r) => setTimeout(r, 300));
    expect(A.completed.length + B.completed.length).toBe(1); // once
  } finally {
    A.middleware.close();
    B.middleware.close();
    await close(A.server);
    await close(B.server);
    await Promise.all([lockA.close(), lockB.close()]);
    dir.remove();
  }
}, 60_000);
