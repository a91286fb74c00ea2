/**
 * s3ResumableStore on the real test S3 server (radosgw), with the store's client's `send` wrapped: the S3
 * requests a PATCH makes are counted by type (behaviour, not timing), and an UploadPart can be held (a
 * gate) or failed, to check that a pooled part buffer is never handed to another part while a send that
 * was aborted may still read it.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import express from 'express';
import { resumable, s3ResumableStore, type Resumable } from '../lib/index';
import { close } from './helpers/app';
import { OCTETS, request, TUS } from './helpers/resumable';
import { s3TestClient, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let bucket: string;
useTestBucket((_client, b) => {
  bucket = b;
});

interface Sent {
  readonly name: string;
  readonly input: Record<string, unknown>;
}

/** A real client whose sends are recorded; `intercept` may hold or fail one (it gets the real send). */
function countingClient() {
  const client = s3TestClient();
  const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
  const sent: Sent[] = [];
  let intercept: ((s: Sent, go: () => Promise<unknown>) => Promise<unknown> | undefined) | undefined;
  (client as unknown as { send: typeof send }).send = (command: unknown, options?: unknown) => {
    const s = { name: (command as { constructor: { name: string } }).constructor.name.replace(/Command$/, ''), input: (command as { input: Record<string, unknown> }).input };
    sent.push(s);
    return intercept?.(s, () => send(command, options)) ?? send(command, options);
  };
  return {
    client: client as S3Client,
    sent,
    set intercept(f: typeof intercept) {
      intercept = f;
    },
    /** Requests by type since `from`. */
    count(from: number): Record<string, number> {
      const counts: Record<string, number> = {};
      for (const s of sent.slice(from)) counts[s.name] = (counts[s.name] ?? 0) + 1;
      return counts;
    },
  };
}

async function serve(client: S3Client, prefix: string, options: { expiration?: number } = {}) {
  const completed: { key: string; sha256?: string; body: string }[] = [];
  const middleware: Resumable = resumable({
    store: s3ResumableStore({ client, bucket, prefix, partSize: '8MiB' }),
    sweepInterval: 0,
    sha256: true,
    limits: { fileSize: '1GiB' },
    ...options,
    onComplete: async (file) => {
      const chunks: Buffer[] = [];
      for await (const chunk of file.stream()) chunks.push(chunk as Buffer);
      completed.push({ key: (file as unknown as { key: string }).key, sha256: file.sha256, body: sha(Buffer.concat(chunks)) });
    },
  });
  const app = express();
  app.use('/files', middleware);
  const server = await new Promise<http.Server>((done) => {
    const s = app.listen(0, '127.0.0.1', () => done(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    completed,
    async create(length: number): Promise<string> {
      const res = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': length });
      expect(res.status).toBe(201);
      return `${url}${res.headers.location}`;
    },
    async close() {
      middleware.close();
      await close(server);
    },
  };
}

describe('s3ResumableStore: S3 requests per PATCH', () => {
  test.each([86_400_000, 0])('8 MiB PATCHes (expiration %i): no ListObjectsV2, no GetObject; one UploadPart, one state PUT, two HEADs each', async (expiration) => {
    const s3 = countingClient();
    const srv = await serve(s3.client, `req-${expiration}-${randomBytes(3).toString('hex')}/`, { expiration });
    try {
      const data = randomBytes(32 * MiB);
      const location = await srv.create(data.length);
      const perPatch: Record<string, number>[] = [];
      for (let offset = 0; offset < data.length; offset += 8 * MiB) {
        const from = s3.sent.length;
        const res = await request(location, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset, offset + 8 * MiB));
        expect(res.status).toBe(204);
        expect(Number(res.headers['upload-offset'])).toBe(offset + 8 * MiB);
        perPatch.push(s3.count(from));
      }
      // The first PATCH creates the multipart upload; the last completes the upload (its own requests).
      expect(perPatch[0].CreateMultipartUpload).toBe(1);
      for (const counts of perPatch.slice(1, -1)) {
        // get() before an append answers from the state the store committed last (no request); the part goes
        // under the number the previous PATCH's last state claimed for it (no claim commit); the last commit
        // is checked with two HEADs: the upload's key, then the state the append started from.
        expect(counts).toEqual({ HeadObject: 2, PutObject: 1, UploadPart: 1 });
      }
      for (const counts of perPatch.slice(0, -1)) {
        expect(counts.ListObjectsV2).toBeUndefined();
        expect(counts.GetObject).toBeUndefined();
      }
      expect(srv.completed).toHaveLength(1);
      expect(srv.completed[0].sha256).toBe(sha(data));
      expect(srv.completed[0].body).toBe(sha(data));
    } finally {
      await srv.close();
      s3.client.destroy();
    }
  }, 120_000);

  test('a state another instance committed is seen at once (HEAD finds state n + 1), and the expiry renewed by the append is stored', async () => {
    const a = countingClient();
    const b = countingClient();
    const prefix = `req-two-${randomBytes(3).toString('hex')}/`;
    const srvA = await serve(a.client, prefix);
    const srvB = await serve(b.client, prefix);
    try {
      const data = randomBytes(24 * MiB);
      const location = await srvA.create(data.length);
      const path = new URL(location).pathname;
      let res = await request(location, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data.subarray(0, 8 * MiB));
      expect(res.status).toBe(204);
      const expires = res.headers['upload-expires'];
      // B appends (A is not asked); A's next request must see B's offset, not the state it committed itself.
      res = await request(`${srvB.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 8 * MiB }, data.subarray(8 * MiB, 16 * MiB));
      expect(res.status).toBe(204);
      const head = await request(location, 'HEAD', TUS);
      expect(head.headers['upload-offset']).toBe(String(16 * MiB));
      expect(head.headers['upload-expires']).toBeDefined();
      expect(Date.parse(String(head.headers['upload-expires']))).toBeGreaterThanOrEqual(Date.parse(String(expires)));
      res = await request(location, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 16 * MiB }, data.subarray(16 * MiB));
      expect(res.status).toBe(204);
      expect(srvA.completed.map((c) => c.body)).toEqual([sha(data)]);
    } finally {
      await srvA.close();
      await srvB.close();
      a.client.destroy();
      b.client.destroy();
    }
  }, 120_000);
});

describe('s3ResumableStore: pooled part buffers', () => {
  test('a buffer whose UploadPart was aborted is not reused while that send is pending; byte-exact after', async () => {
    const s3 = countingClient();
    const srv = await serve(s3.client, `pool-${randomBytes(3).toString('hex')}/`);
    try {
      const first = randomBytes(24 * MiB);
      const other = randomBytes(32 * MiB);
      const a = await srv.create(first.length);
      const b = await srv.create(other.length);
      const aKey = new URL(a).pathname.split('/').pop()!;
      // A's part 1 is held past its abort (the send stays pending, its body still readable by the SDK);
      // A's part 2 fails, which aborts part 1.
      let openGate!: () => void;
      const gate = new Promise<void>((r) => (openGate = r));
      let held: ArrayBufferLike | undefined;
      let failed = false;
      const reused: boolean[] = [];
      let pending = false;
      s3.intercept = (s, go) => {
        if (s.name !== 'UploadPart') return undefined;
        const body = s.input.Body as Buffer;
        const ofA = String(s.input.Key).endsWith(aKey);
        if (ofA && held === undefined) {
          held = body.buffer;
          pending = true;
          return gate.then(go).finally(() => (pending = false));
        }
        if (ofA && !failed) {
          failed = true;
          return Promise.reject(Object.assign(new Error('injected UploadPart failure'), { name: 'InternalError', $metadata: { httpStatusCode: 500 } }));
        }
        if (pending) reused.push(body.buffer === held);
        return undefined;
      };
      const patchA = request(a, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, first.subarray(0, 16 * MiB + 3));
      // While A's first part is held: B uploads its parts through the same store (and pool).
      await new Promise<void>((resolve) => {
        const wait = () => (failed ? resolve() : setTimeout(wait, 10));
        wait();
      });
      let res = await request(b, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, other.subarray(0, 16 * MiB));
      expect(res.status).toBe(204);
      res = await request(b, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 16 * MiB }, other.subarray(16 * MiB));
      expect(res.status).toBe(204);
      expect(pending).toBe(true); // B ran entirely while A's send was pending
      expect(reused.length).toBeGreaterThanOrEqual(4);
      expect(reused.every((same) => !same)).toBe(true);
      openGate();
      const answer = await patchA;
      expect(answer.status).toBeGreaterThanOrEqual(400);
      s3.intercept = undefined;
      // A resumes from what was recorded, and both are byte-exact.
      const head = await request(a, 'HEAD', TUS);
      const offset = Number(head.headers['upload-offset']);
      expect(offset).toBeLessThanOrEqual(16 * MiB + 3);
      res = await request(a, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, first.subarray(offset));
      expect(res.status).toBe(204);
      expect(srv.completed.map((c) => c.body).sort()).toEqual([sha(first), sha(other)].sort());
      expect(srv.completed.every((c) => c.sha256 === c.body)).toBe(true);
    } finally {
      await srv.close();
      s3.client.destroy();
    }
  }, 120_000);
});
