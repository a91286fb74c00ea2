/**
 * redisLocker as the S3 store's fence (the README's many-instances set-up, `fence: locker`), against the
 * real redis-server and radosgw (found by a hostile review). README "When Redis does not answer": a request
 * whose lease Redis has stopped confirming is ended (423, what it stored recorded first); a slow Redis alone
 * does not end it. The fence refuses a write only once Redis says another holder has the upload.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import { redisLocker, resumable, s3ResumableStore, type RedisLocker } from '../lib/index';
import { eventually } from './helpers/app';
import { OCTETS, request, serveAtFiles, TUS } from './helpers/resumable';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy';
import { s3TestClient, storedSha256, useTestBucket } from './setup/s3-env';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let bucket: string;
let admin: S3Client;
useTestBucket((c, b) => {
  admin = c;
  bucket = b;
});

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await Promise.resolve(fn()).catch(() => undefined);
});

async function instance(locker: RedisLocker, lockTimeout = 1000) {
  const client = s3TestClient();
  const prefix = `fence-${randomBytes(3).toString('hex')}/`;
  const middleware = resumable({
    locker,
    store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB', fence: locker }),
    sweepInterval: 0,
    lockTimeout,
    idleTimeout: 30_000,
  });
  const served = await serveAtFiles(middleware);
  cleanups.push(() => client.destroy(), () => served.close());
  return { url: served.url, prefix };
}

/** A proxy in front of Redis that forwards at once and delays every answer by `lag` ms (as redis-locker.test.ts). */
async function answerDelayingProxy(target: string) {
  const { hostname, port } = new URL(target);
  let lag = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(c).add(upstream);
    c.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => (lag > 0 ? setTimeout(() => c.write(chunk), lag) : c.write(chunk)));
    c.on('error', () => undefined).on('close', () => upstream.destroy());
    upstream.on('error', () => undefined).on('close', () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    delay: (ms: number) => void (lag = ms),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

test('a slow Redis (every answer 600 ms late, lease 1.5 s) does not stop a PATCH: its 1 MiB is stored and recorded', async () => {
  const proxy = await answerDelayingProxy(process.env.REDIS_URL!);
  cleanups.push(() => proxy.close());
  const locker = redisLocker({ url: proxy.url, prefix: `slow-${randomBytes(3).toString('hex')}:`, lease: 1500 });
  cleanups.push(() => locker.close());
  const a = await instance(locker, 5000);
  await new Promise((r) => setTimeout(r, 300)); // subscribed
  const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 2 * MiB });
  expect(created.status).toBe(201);
  const url = a.url + created.headers.location!;
  proxy.delay(600); // the locker's own tests show the lock is taken and kept confirmed at this lag
  const body = randomBytes(MiB);
  const patch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, body);
  const head = await request(url, 'HEAD', TUS);
  // The lock was taken and never lost; the request should have stored its 1 MiB.
  expect([patch.status, head.status, head.headers['upload-offset']]).toEqual([204, 200, String(MiB)]);
}, 60_000);

test('Redis goes silent mid-PATCH: the request is ended 423 and the 1 MiB it stored is recorded first', async () => {
  const proxy: TcpProxy = await startTcpProxy(process.env.REDIS_URL!);
  cleanups.push(() => proxy.cut(), () => proxy.resume());
  const locker = redisLocker({ url: proxy.url.replace(/^http:/, 'redis:'), prefix: `silent-${randomBytes(3).toString('hex')}:`, lease: 1500 });
  cleanups.push(() => locker.close());
  const a = await instance(locker, 500);
  await new Promise((r) => setTimeout(r, 300));
  const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 4 * MiB });
  expect(created.status).toBe(201);
  const url = a.url + created.headers.location!;
  const first = randomBytes(MiB);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  async function* body() {
    yield first;
    await held; // the client stalls: only the lock's loss ends the request
    yield randomBytes(3 * MiB);
  }
  const patching = request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4 * MiB }, body());
  await new Promise((r) => setTimeout(r, 500));
  proxy.stall();
  const res = await patching.catch((err: Error) => ({ status: -1, error: err.message }));
  release();
  expect(res.status).toBe(423);
  proxy.resume();
  // (as the disk store's twin of this test, redis-silent.test.ts)
  await eventually(async () => {
    const head = await request(url, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(MiB)]);
  }, 6000);
}, 60_000);

test('the lock key lost mid-PATCH (a flush, a failover), nobody else holding the upload: the request is ended, its 1 MiB recorded, the upload goes on byte-exact', async () => {
  const prefix = `flush-${randomBytes(3).toString('hex')}:`;
  const locker = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 1500 });
  cleanups.push(() => locker.close());
  const a = await instance(locker, 500);
  await new Promise((r) => setTimeout(r, 300));
  const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 4 * MiB });
  const url = a.url + created.headers.location!;
  const id = created.headers.location!.split('/').pop()!;
  const first = randomBytes(MiB);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  async function* body() {
    yield first;
    await held;
    yield randomBytes(3 * MiB);
  }
  const patching = request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4 * MiB }, body());
  await new Promise((r) => setTimeout(r, 400));
  const probe = new Redis(process.env.REDIS_URL!);
  // (only this test's keys: FLUSHALL would disturb parallel workers; the effect on this lock is the same)
  expect(await probe.del(`${prefix}lock:${id}`, `${prefix}fence:${id}`)).toBe(2);
  probe.disconnect();
  const res = await patching.catch((err: Error) => ({ status: -1, error: err.message }));
  release();
  expect(res.status).toBe(423);
  const head = await request(url, 'HEAD', TUS);
  expect([head.status, head.headers['upload-offset']]).toEqual([200, String(MiB)]);
  // and what it did store goes on byte-exact
  const rest = randomBytes(3 * MiB);
  const more = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': String(head.headers['upload-offset']) }, rest);
  expect(more.status).toBe(204);
  expect(await storedSha256(admin, bucket, `${a.prefix}${id}`)).toBe(sha(Buffer.concat([first, rest])));
}, 60_000);

test('graceful shutdown of one instance (locker.close(), as in a rolling deploy): its PATCH is ended 423 and the 1 MiB it stored is recorded, as the other instance sees', async () => {
  const prefix = `close-${randomBytes(3).toString('hex')}:`;
  const lockA = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 3000 });
  const lockB = redisLocker({ url: process.env.REDIS_URL, prefix, lease: 3000 });
  cleanups.push(() => lockA.close(), () => lockB.close());
  const client = s3TestClient();
  const storePrefix = `close-${randomBytes(3).toString('hex')}/`;
  const make = (locker: RedisLocker) =>
    resumable({ locker, store: s3ResumableStore({ client, bucket, prefix: storePrefix, partSize: '5MiB', fence: locker }), sweepInterval: 0, idleTimeout: 30_000 });
  const a = await serveAtFiles(make(lockA));
  const b = await serveAtFiles(make(lockB));
  cleanups.push(() => client.destroy(), () => a.close(), () => b.close());
  await new Promise((r) => setTimeout(r, 300));
  const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 4 * MiB });
  const path = created.headers.location!;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  async function* body() {
    yield randomBytes(MiB);
    await held;
    yield randomBytes(3 * MiB);
  }
  const patching = request(`${a.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4 * MiB }, body());
  await new Promise((r) => setTimeout(r, 500));
  await lockA.close(); // instance A shutting down
  const res = await patching.catch((err: Error) => ({ status: -1, error: err.message }));
  release();
  expect(res.status).toBe(423);
  const head = await request(`${b.url}${path}`, 'HEAD', TUS);
  expect([head.status, head.headers['upload-offset']]).toEqual([200, String(MiB)]);
}, 60_000);
