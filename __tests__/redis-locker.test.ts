/**
 * redisLocker() against the real redis-server of the test set-up, driven through its API:
 * - tokens: the per-upload counter that numbers acquisitions can be lost (a failover to a replica that
 *   missed it, eviction, its 30-day expiry) and start again at 1; a holder whose lease lapsed meanwhile must
 *   still not pass for the new holder;
 * - waiting: a request waiting for another instance to let go is ended by a newer request on its own
 *   instance, and stops waiting then rather than at its deadline;
 * - time: a busy event loop does not end a request whose lease Redis keeps confirming, and a lock whose
 *   answer arrives after its lease could lapse is not taken as held.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
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

test('an event loop blocked for longer than a third of the lease, Redis fast: the request is not ended, its lease stays confirmed', async () => {
  const prefix = `busy-${randomBytes(3).toString('hex')}:`;
  const locker = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 1500 });
  const probe = new Redis(process.env.REDIS_URL!);
  const busy = (ms: number) => {
    const until = Date.now() + ms;
    while (Date.now() < until);
  };
  try {
    const ended: string[] = [];
    const release = await locker.acquire('u', (reason) => ended.push(reason.message), 1000);
    // CPU-bound stretches (hashing, JSON, a sync call) of 600 ms between short waits, for five leases.
    for (const stop = Date.now() + 5 * 1500; Date.now() < stop && ended.length === 0; ) {
      await new Promise((r) => setTimeout(r, 498));
      busy(600);
      await new Promise((r) => setTimeout(r, 1));
    }
    expect(ended).toEqual([]);
    expect(await probe.pttl(`${prefix}lock:u`)).toBeGreaterThan(0);
    await expect(locker.check('u')).resolves.toBeUndefined();
    release();
  } finally {
    await locker.close();
    probe.disconnect();
  }
}, 30_000);

/** A proxy in front of Redis that forwards requests at once and can hold back its answers. */
async function answerDelayingProxy(target: string) {
  const { hostname, port } = new URL(target);
  let holding = false;
  let lag = 0;
  const held: (() => void)[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    const answer = (chunk: Buffer) => (lag > 0 ? setTimeout(() => client.write(chunk), lag) : client.write(chunk));
    upstream.on('data', (chunk: Buffer) => (holding ? held.push(() => answer(chunk)) : answer(chunk)));
    client.on('error', () => undefined).on('close', () => upstream.destroy());
    upstream.on('error', () => undefined).on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hold: () => void (holding = true),
    /** Every answer from now on arrives `ms` late (a slow network or a busy Redis). */
    delay: (ms: number) => void (lag = ms),
    flush: () => {
      holding = false;
      for (const send of held.splice(0)) send();
    },
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }),
  };
}

test('a lock whose answer arrives after its lease lapsed is not taken as held: the other instance that took it meanwhile is the only holder', async () => {
  const proxy = await answerDelayingProxy(process.env.REDIS_URL!);
  const prefix = `late-${randomBytes(3).toString('hex')}:`;
  const a = redisLocker({ url: proxy.url, prefix, lease: 1500 });
  const b = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 1500 });
  const probe = new Redis(process.env.REDIS_URL!);
  try {
    await new Promise((r) => setTimeout(r, 300)); // both subscribed
    proxy.hold();
    const aTaking = a.acquire('u', () => undefined, 5000).then((release) => ({ release }), (err: SpoolError) => ({ err }));
    await new Promise((r) => setTimeout(r, 150));
    expect(await probe.exists(`${prefix}lock:u`)).toBe(1); // A's ACQUIRE ran: Redis holds A's token, A has not heard
    // B (another instance's sweep or removal) waits for the key without asking A to let go: it gets it once A's lease lapses.
    let bHolds!: () => void;
    const bHolding = new Promise<void>((resolve) => (bHolds = resolve));
    let bDone!: () => void;
    const bWorking = b.exclusive!('u', () => new Promise<void>((resolve) => (bHolds(), (bDone = resolve))), 5000);
    await bHolding;
    const tokenB = await probe.get(`${prefix}lock:u`);
    proxy.flush(); // A now hears that it got the lock, 1.5 s late
    const outcome = await Promise.race([aTaking, new Promise((r) => setTimeout(r, 1000, 'waiting'))]);
    // A is still waiting for the key (B has it) or gave up: either way it does not hold it, and B's lock is intact.
    if (typeof outcome === 'object' && 'release' in (outcome as object)) throw new Error('A holds the lock while B holds it');
    expect(await probe.get(`${prefix}lock:u`)).toBe(tokenB);
    bDone();
    await bWorking;
    const settled = await aTaking; // once B let go, A may take it in its own right
    if ('release' in settled) settled.release();
  } finally {
    await Promise.all([a.close(), b.close()]);
    await proxy.close();
    probe.disconnect();
  }
}, 30_000);

test('a slow Redis, every answer later than a third of the lease: the request is not ended, its lease stays confirmed', async () => {
  const proxy = await answerDelayingProxy(process.env.REDIS_URL!);
  const prefix = `slow-${randomBytes(3).toString('hex')}:`;
  const locker = redisLocker({ url: proxy.url, prefix, lease: 1500 });
  const probe = new Redis(process.env.REDIS_URL!);
  try {
    await new Promise((r) => setTimeout(r, 300)); // subscribed
    proxy.delay(600); // the lock itself and every renewal (each 500 ms) confirmed 600 ms after it was sent
    const ended: string[] = [];
    const release = await locker.acquire('u', (reason) => ended.push(reason.message), 3000);
    await new Promise((r) => setTimeout(r, 5 * 1500));
    expect(ended).toEqual([]);
    expect(await probe.pttl(`${prefix}lock:u`)).toBeGreaterThan(0);
    release();
  } finally {
    await locker.close();
    await proxy.close();
    probe.disconnect();
  }
}, 30_000);

test.each([
  ['700 ms late (more than half the lease left): taken, renewed at once, not ended once Redis is fast again', 700, true],
  ['800 ms late (less than half the lease left): let go and not taken; the request gets 423 at its lockTimeout', 800, false],
])('a lock answered %s', async (_label, lag, taken) => {
  const proxy = await answerDelayingProxy(process.env.REDIS_URL!);
  const prefix = `lateanswer-${randomBytes(3).toString('hex')}:`;
  const locker = redisLocker({ url: proxy.url, prefix, lease: 1500 });
  const probe = new Redis(process.env.REDIS_URL!);
  try {
    await new Promise((r) => setTimeout(r, 300)); // subscribed
    proxy.delay(lag);
    const ended: string[] = [];
    const outcome = await locker.acquire('u', (reason) => ended.push(reason.message), 2000).then((release) => ({ release }), (err: SpoolError) => ({ err }));
    proxy.delay(0);
    if (taken) {
      if (!('release' in outcome)) throw new Error(`not taken: ${outcome.err.message}`);
      await new Promise((r) => setTimeout(r, 3000));
      expect(ended).toEqual([]);
      expect(await probe.pttl(`${prefix}lock:u`)).toBeGreaterThan(0);
      outcome.release();
    } else {
      expect('err' in outcome && outcome.err.code).toBe('UPLOAD_LOCKED');
      await new Promise((r) => setTimeout(r, lag + 200)); // the last late answer arrives, and is let go
      expect(await probe.exists(`${prefix}lock:u`)).toBe(0);
    }
  } finally {
    await locker.close();
    await proxy.close();
    probe.disconnect();
  }
}, 30_000);

test('close() while a request holds a lock: the request is ended at once (nothing would renew its lease)', async () => {
  const prefix = `closing-${randomBytes(3).toString('hex')}:`;
  const a = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 1500 });
  const ended: string[] = [];
  const release = await a.acquire('u', (reason) => ended.push(reason.code), 1000);
  await a.close();
  expect(ended).toEqual(['UPLOAD_LOCKED']);
  release(); // after close: harmless
}, 10_000);
