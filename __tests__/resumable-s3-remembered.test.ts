/**
 * s3ResumableStore answers the read before a PATCH from the state it committed last, without asking S3
 * (`get(id, { append: true })`). Two instances on one bucket and prefix, no shared lock, on the real test S3
 * server: whatever the other instance did since — appended, removed, completed — the remembering instance
 * must answer as if it had read S3 first, and leave nothing behind (no state that brings a removed upload
 * back, no tail, no open multipart upload).
 */
import { randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { resumable, s3ResumableStore, type Resumable } from '../lib/index';
import { bucketInspector } from './helpers/bucket-inspector';
import { sha256 as sha } from './helpers/multipart';
import { OCTETS, request, serveAtFiles, sha256Of, TUS } from './helpers/resumable';
import { s3TestClient, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;

let admin: S3Client;
let bucket: string;
useTestBucket((c, b) => {
  admin = c;
  bucket = b;
});

interface Instance {
  url: string;
  middleware: Resumable;
  completed: string[];
  /** The part numbers of this instance's UploadParts, in order. */
  parts: number[];
  close(): Promise<void>;
}

async function instance(prefix: string): Promise<Instance> {
  const client = s3TestClient();
  const completed: string[] = [];
  const parts: number[] = [];
  const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
  (client as unknown as { send: typeof send }).send = (command: unknown, options?: unknown) => {
    if ((command as object).constructor.name === 'UploadPartCommand') parts.push(Number((command as { input: { PartNumber: number } }).input.PartNumber));
    return send(command, options);
  };
  const middleware = resumable({
    store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB' }),
    sweepInterval: 0,
    onComplete: async (file) => void completed.push(await sha256Of(file.stream())),
  });
  const served = await serveAtFiles(middleware);
  return {
    url: served.url,
    middleware,
    completed,
    parts,
    async close() {
      await served.close();
      client.destroy();
    },
  };
}

const { keysUnder, openUploads, objectBytes } = bucketInspector(() => ({ client: admin, bucket }));

const patch = (url: string, offset: number, body: Buffer) => request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, body);

describe('s3ResumableStore: the state remembered for the next PATCH, when another instance moved on', () => {
  let prefix: string;
  let a: Instance;
  let b: Instance;
  let data: Buffer;
  let path: string;
  let id: string;

  /** A creates an upload of 24 MiB and appends its first `first` bytes: A remembers that state. */
  async function started(first: number): Promise<void> {
    prefix = `remembered-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    data = randomBytes(24 * MiB);
    const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
    expect(created.status).toBe(201);
    path = created.headers.location!;
    id = path.split('/').pop()!;
    expect((await patch(`${a.url}${path}`, 0, data.subarray(0, first))).status).toBe(204);
  }

  afterEach(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  // A remembers either a part and no tail (5 MiB in: the PATCH writes a new tail and commits it, or claims
  // a part number, sends the part and commits) or a part and a tail (8 MiB in: the PATCH reads the tail first).
  test.each([
    ['one part', '1 MiB (a new tail, one state commit)', 5, 1],
    ['one part', '6 MiB (a claim, a part, a tail)', 5, 6],
    ['a part and a tail', '1 MiB', 8, 1],
    ['a part and a tail', '6 MiB', 8, 6],
  ])('removed by the other instance while A remembers %s, then a PATCH of %s at that offset: 404, nothing left in S3', async (_what, _size, first, size) => {
    await started(first * MiB);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
    const res = await patch(`${a.url}${path}`, first * MiB, data.subarray(first * MiB, (first + size) * MiB));
    expect(res.status).toBe(404);
    // Nothing A wrote in that request stays: no state (which would bring the upload back), no tail, no part.
    expect(await keysUnder(prefix)).toEqual([]);
    expect(await openUploads(prefix)).toEqual([]);
    expect((await request(`${a.url}${path}`, 'HEAD', TUS)).status).toBe(404);
    expect((await request(`${b.url}${path}`, 'HEAD', TUS)).status).toBe(404);
    expect(await a.middleware.sweep()).toBe(0);
    expect(await keysUnder(prefix)).toEqual([]);
  }, 60_000);

  test('removed before A ever wrote a part (A remembers a tail-only state): a PATCH that makes the first part gets 404, no multipart upload stays open', async () => {
    await started(MiB);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    const res = await patch(`${a.url}${path}`, MiB, data.subarray(MiB, 12 * MiB));
    expect(res.status).toBe(404);
    expect(await keysUnder(prefix)).toEqual([]);
    expect(await openUploads(prefix)).toEqual([]);
  }, 60_000);

  test('appended by the other instance: a PATCH at the new offset is taken (A reads S3 again), byte-exact', async () => {
    await started(8 * MiB);
    expect((await patch(`${b.url}${path}`, 8 * MiB, data.subarray(8 * MiB, 16 * MiB))).status).toBe(204);
    const res = await patch(`${a.url}${path}`, 16 * MiB, data.subarray(16 * MiB));
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(data.length));
    expect(a.completed).toEqual([sha(data)]);
    expect(sha(await objectBytes(prefix + id))).toBe(sha(data));
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
  }, 60_000);

  test('appended by the other instance: a PATCH at the offset A remembers is refused, and B\'s bytes stand', async () => {
    await started(8 * MiB);
    expect((await patch(`${b.url}${path}`, 8 * MiB, data.subarray(8 * MiB, 16 * MiB))).status).toBe(204);
    const stale = await patch(`${a.url}${path}`, 8 * MiB, randomBytes(6 * MiB));
    expect([409, 423]).toContain(stale.status);
    const head = await request(`${a.url}${path}`, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(16 * MiB));
    expect((await patch(`${a.url}${path}`, 16 * MiB, data.subarray(16 * MiB))).status).toBe(204);
    expect(sha(await objectBytes(prefix + id))).toBe(sha(data));
    expect(await openUploads(prefix)).toEqual([]);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
  }, 60_000);

  test.each([5, 8])('completed by the other instance (A remembers %i MiB): a PATCH at that offset is refused, the object is intact and nothing is left beside it', async (first) => {
    await started(first * MiB);
    expect((await patch(`${b.url}${path}`, first * MiB, data.subarray(first * MiB))).status).toBe(204);
    expect(b.completed).toEqual([sha(data)]);
    const stale = await patch(`${a.url}${path}`, first * MiB, randomBytes(6 * MiB));
    expect(stale.status).toBeGreaterThanOrEqual(400);
    expect(stale.status).toBeLessThan(500);
    expect(sha(await objectBytes(prefix + id))).toBe(sha(data));
    expect(await openUploads(prefix)).toEqual([]);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    const head = await request(`${a.url}${path}`, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(data.length));
    expect(a.completed).toEqual([]);
  }, 60_000);

  test('the part number a PATCH reserves for its instance\'s next PATCH is never another instance\'s: a stale PATCH on it is refused, its part counts for nothing, byte-exact', async () => {
    prefix = `reserved-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    data = randomBytes(20 * MiB);
    const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
    path = created.headers.location!;
    id = path.split('/').pop()!;
    // A: part 1, and its last state claims part 2 for A's next PATCH.
    expect((await patch(`${a.url}${path}`, 0, data.subarray(0, 5 * MiB))).status).toBe(204);
    expect(a.parts).toEqual([1]);
    // B reads that state from S3 and appends: it must start after the reserved number.
    expect((await patch(`${b.url}${path}`, 5 * MiB, data.subarray(5 * MiB, 10 * MiB))).status).toBe(204);
    expect(b.parts).toEqual([3]);
    // A, on the state it remembers (offset 5 MiB), sends its part under the reserved number: the part reaches
    // S3, A's state commit finds B's, the request is refused.
    const stale = await patch(`${a.url}${path}`, 5 * MiB, randomBytes(5 * MiB));
    expect(stale.status).toBe(423);
    expect(a.parts).toEqual([1, 2]);
    // A reads again; both instances finish the upload: A's part 2 is in no state that counts.
    const head = await request(`${a.url}${path}`, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(10 * MiB));
    expect((await patch(`${a.url}${path}`, 10 * MiB, data.subarray(10 * MiB, 15 * MiB))).status).toBe(204);
    expect(a.parts).toEqual([1, 2, 5]);
    expect((await patch(`${b.url}${path}`, 15 * MiB, data.subarray(15 * MiB))).status).toBe(204);
    expect(b.completed).toEqual([sha(data)]);
    expect(sha(await objectBytes(prefix + id))).toBe(sha(data));
    expect(await openUploads(prefix)).toEqual([]);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
  }, 60_000);
});
