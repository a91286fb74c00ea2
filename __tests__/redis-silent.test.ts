/**
 * redisLocker() when Redis stops answering without closing anything (a partition: the TCP proxy in the
 * middle stops forwarding) or is down when the app starts, against the real redis-server the test set-up
 * starts: requests end with 423 within their bounds instead of hanging, a request whose lease Redis no
 * longer confirms ends before that lease can lapse, and once Redis answers again the locker works.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { redisLocker, type RedisLocker } from '../lib/index';
import { close, eventually } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy';

const KiB = 1024;
const redisUrl = () => process.env.REDIS_URL!;
const viaProxy = (proxy: TcpProxy) => proxy.url.replace(/^http:/, 'redis:');

let proxy: TcpProxy | undefined;
let locker: RedisLocker | undefined;
let server: ResumableServer | undefined;
afterEach(async () => {
  proxy?.resume();
  server?.middleware.close();
  if (server) await close(server.server);
  await locker?.close();
  await proxy?.cut();
  server?.dir.remove();
  proxy = locker = server = undefined;
});

async function created(length: number): Promise<string> {
  const res = await request(server!.endpoint, 'POST', { ...TUS, 'Upload-Length': length });
  expect(res.status).toBe(201);
  return server!.url + res.headers.location!;
}

test('Redis goes silent: a HEAD answers 423 within its bounds; once Redis answers again, HEAD works (no lock left taken by the request that gave up)', async () => {
  proxy = await startTcpProxy(redisUrl());
  const prefix1 = `silent-${randomBytes(3).toString('hex')}:`;
  locker = redisLocker({ url: viaProxy(proxy), prefix: prefix1, lease: 1500 });
  server = await startResumable({ locker, lockTimeout: 500 });
  const url = await created(1000);
  expect((await request(url, 'HEAD', TUS)).status).toBe(200);

  const probe = new Redis(redisUrl());
  const counter = `${prefix1}fence:${url.split('/').pop()}`;
  const before = Number(await probe.get(counter));
  proxy.stall();
  const started = Date.now();
  const head = await request(url, 'HEAD', TUS);
  expect(head.status).toBe(423);
  // lockTimeout (500) bounds the wait; one Redis call may take a third of the lease (500) past it.
  expect(Date.now() - started).toBeLessThan(2500);

  proxy.resume(); // the attempt given up on now reaches Redis and takes the lock: it is let go at once
  await eventually(async () => expect(Number(await probe.get(counter))).toBe(before + 1)); // it did take it
  probe.disconnect();
  await eventually(async () => {
    const again = await request(url, 'HEAD', TUS);
    expect([again.status, again.headers['upload-offset']]).toEqual([200, '0']);
  }, 1200); // well under the 1500 ms lease a ghost lock would hold
}, 30_000);

test('Redis goes silent mid-PATCH: the request ends (423) before its lease can lapse, its bytes recorded; HEAD gives the offset once Redis is back', async () => {
  proxy = await startTcpProxy(redisUrl());
  const prefix = `silent-${randomBytes(3).toString('hex')}:`;
  locker = redisLocker({ url: viaProxy(proxy), prefix, lease: 1500 });
  server = await startResumable({ locker, lockTimeout: 500, idleTimeout: 30_000 });
  const url = await created(256 * KiB);
  const first = randomBytes(64 * KiB);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  async function* body() {
    yield first;
    await held; // the client stalls: only the lock's loss can end this request before idleTimeout
    yield randomBytes(192 * KiB);
  }
  const patching = request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 256 * KiB }, body());
  await new Promise((r) => setTimeout(r, 400)); // the first 64 KiB are in, a renewal or two went through
  const stateFile = join(server.dir.path, `${url.split('/').pop()}.json`);
  const recorded = () => JSON.parse(readFileSync(stateFile, 'utf8')).offset as number;
  expect(recorded()).toBe(0); // recorded at the append's end (no checkpoint within 64 KiB)
  const probe = new Redis(redisUrl()); // straight to Redis, not through the proxy
  const lockKey = `${prefix}lock:${url.split('/').pop()}`;
  proxy.stall();
  const stalledAt = Date.now();
  const leaseLeft = await probe.pttl(lockKey); // what Redis still gives the lease when nothing more reaches it
  probe.disconnect();
  expect(leaseLeft).toBeGreaterThan(0);
  // The request is ended when it records what it stored; its answer follows after draining the body
  // (up to 2 s, the client being stalled).
  await eventually(() => expect(recorded()).toBe(64 * KiB), 5000);
  const elapsed = Date.now() - stalledAt;
  const res = await patching.catch((err: Error) => ({ status: -1, error: err.message }));
  release();
  expect(res.status).toBe(423);
  // Ended (what it stored recorded) before the lease that Redis held at the stall ran out.
  expect(elapsed).toBeLessThan(leaseLeft);

  proxy.resume();
  await eventually(async () => {
    const head = await request(url, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(64 * KiB)]);
  }, 5000);
}, 30_000);

test('Redis down when the locker starts: once it is up, the locker subscribes again and requests are served', async () => {
  // A free port where nothing listens yet.
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  // The app's own client: commands fail fast while Redis is away (the locker's subscription included).
  const client = new Redis(`redis://127.0.0.1:${port}`, { maxRetriesPerRequest: 1, retryStrategy: () => 50, lazyConnect: false });
  client.on('error', () => undefined);
  try {
    locker = redisLocker({ client, prefix: `down-${randomBytes(3).toString('hex')}:`, lease: 1500 });
    await new Promise((r) => setTimeout(r, 800)); // the subscription has failed by now
    server = await startResumable({ locker, lockTimeout: 500 });
    const url = await created(10);
    expect((await request(url, 'HEAD', TUS)).status).toBe(423); // Redis is still down

    proxy = await startTcpProxy(redisUrl(), port); // Redis comes up
    await eventually(async () => {
      const head = await request(url, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    }, 5000);
    const patch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('0123456789'));
    expect(patch.status).toBe(204);
    expect(server.completed.map((c) => c.size)).toEqual([10]);
  } finally {
    server?.middleware.close();
    if (server) await close(server.server);
    server?.dir.remove();
    server = undefined;
    await locker?.close();
    locker = undefined;
    client.disconnect();
  }
}, 30_000);

test('Redis silent: sweep() gives up after one bounded attempt instead of waiting on every expired upload, and removes them once Redis is back; close() settles', async () => {
  proxy = await startTcpProxy(redisUrl());
  locker = redisLocker({ url: viaProxy(proxy), prefix: `sweep-${randomBytes(3).toString('hex')}:`, lease: 1500 });
  server = await startResumable({ locker, lockTimeout: 500, expiration: 300 });
  for (let i = 0; i < 6; i++) await created(10);
  await new Promise((r) => setTimeout(r, 500)); // all six expired
  proxy.stall();
  const started = Date.now();
  expect(await server.middleware.sweep()).toBe(0);
  expect(Date.now() - started).toBeLessThan(1500); // one call's bound (500 ms), not six
  expect(server.dir.files().filter((f) => f.endsWith('.json'))).toHaveLength(6);
  proxy.resume();
  expect(await server.middleware.sweep()).toBe(6);
  expect(server.dir.files()).toEqual([]);

  proxy.stall();
  const closing = Date.now();
  await locker.close(); // QUIT gets no answer: the connection is dropped after a second
  locker = undefined;
  expect(Date.now() - closing).toBeLessThan(3000);
}, 30_000);
