/**
 * redisLocker() against the real redis-server of the test set-up, driven through its API:
 * - tokens: the per-upload counter that numbers acquisitions can be lost (a failover to a replica that
 *   missed it, eviction, its 30-day expiry) and start again at 1; a holder whose lease lapsed meanwhile must
 *   still not pass for the new holder;
 * - waiting: a request waiting for another instance to let go is ended by a newer request on its own
 *   instance, and stops waiting then rather than at its deadline.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { redisLocker, type SpoolError } from '../lib/index';

test('after the fencing counter is lost, a stale holder\'s token does not match the new holder\'s: its check fails and it is ended; the new holder\'s lock stays', async () => {
  const prefix = `tokens-${randomBytes(3).toString('hex')}:`;
  const redis = new Redis(process.env.REDIS_URL!);
  const a = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 5000 });
  const b = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 5000 });
  try {
    const ended: SpoolError[] = [];
    const releaseA = await a.acquire('u1', (reason) => ended.push(reason), 1000);
    const tokenA = await redis.get(`${prefix}lock:u1`);
    // A's lease lapses (a frozen instance) and the counter is gone with it.
    expect(await redis.del(`${prefix}lock:u1`, `${prefix}fence:u1`)).toBe(2);
    const releaseB = await b.acquire('u1', () => undefined, 1000);
    const tokenB = await redis.get(`${prefix}lock:u1`);
    expect(tokenB).not.toBe(tokenA);
    expect(tokenB!.split(':')[0]).toBe(tokenA!.split(':')[0]); // the counter did start again

    await expect(a.check('u1')).rejects.toMatchObject({ code: 'UPLOAD_LOCKED' });
    expect(ended.map((e) => e.code)).toEqual(['UPLOAD_LOCKED']);
    releaseA(); // compare-and-delete: B's lock stays
    await new Promise((r) => setTimeout(r, 100));
    expect(await redis.get(`${prefix}lock:u1`)).toBe(tokenB);
    await expect(b.check('u1')).resolves.toBeUndefined();
    releaseB();
    await new Promise((r) => setTimeout(r, 100));
    expect(await redis.exists(`${prefix}lock:u1`)).toBe(0);
  } finally {
    await Promise.all([a.close(), b.close()]);
    redis.disconnect();
  }
}, 20_000);

test('a request waiting for another instance is ended by a newer request here: it stops waiting at once, and the newer one gets the lock when the other instance lets go', async () => {
  const prefix = `waiting-${randomBytes(3).toString('hex')}:`;
  const a = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 5000 });
  const b = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 5000 });
  try {
    const releaseB = await b.acquire('u2', () => undefined, 1000); // another instance holds it (and ignores the ask)
    const ended: string[] = [];
    const older = a.acquire('u2', (reason) => ended.push(reason.code), 3000);
    const olderSettled = older.then(() => 'held', (err: SpoolError) => err.code);
    await new Promise((r) => setTimeout(r, 150));
    const newerStarted = Date.now();
    const newer = a.acquire('u2', () => undefined, 3000);
    expect(await olderSettled).toBe('UPLOAD_LOCKED');
    expect(Date.now() - newerStarted).toBeLessThan(1000); // not at the older one's deadline (3 s)
    expect(ended).toEqual(['UPLOAD_LOCKED']);
    releaseB();
    const releaseNewer = await newer;
    releaseNewer();
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}, 20_000);
