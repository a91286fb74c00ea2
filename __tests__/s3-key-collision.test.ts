/**
 * An app-chosen key written by two requests, on an unversioned bucket: removing one request's file (its
 * failure cleanup, or the app's `remove()`) never deletes the other request's object that replaced it at
 * that key. Against the local S3 server; the objects are compared byte for byte.
 */
import type { Server } from 'node:http';
import { DeleteBucketPolicyCommand, GetObjectCommand, HeadObjectCommand, PutBucketPolicyCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { RequestHandler } from 'express';
import { s3Engine, spool, type UploadedFile } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { postMultipart, randomData, sha256 } from './helpers/multipart';
import { listOpenMultipartUploads, objectExists, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

async function objectSha(key: string): Promise<string | undefined> {
  try {
    const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return sha256(Buffer.from(await res.Body!.transformToByteArray()));
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchKey') return undefined;
    throw err;
  }
}

const exists = (key: string) => objectExists(client, bucket, key);

/** Serves one route storing every file at `key`, with `fileFilter`; hands back the stored files. */
async function upload(key: string, files: Parameters<typeof postMultipart>[2], fileFilter?: (req: unknown, file: { fieldname: string }) => Promise<boolean>) {
  const middleware = spool({ storage: s3Engine({ client, bucket, partSize: PART, key: () => key }), ...(fileFilter ? { fileFilter } : {}) });
  let stored: UploadedFile[] = [];
  const capture: RequestHandler = (req, _res, next) => {
    stored = (req.files as UploadedFile[]) ?? [];
    next();
  };
  const server: Server = await listen(echoApp(middleware.any(), capture));
  try {
    return { res: await postMultipart(server, '/upload', files), stored };
  } finally {
    await close(server);
  }
}

describe('S3 engine, one app-chosen key, two writers (unversioned bucket)', () => {
  test.each([
    ['single PUT', 1000],
    ['multipart', PART + 7],
  ])('%s: a request that fails after storing its file leaves the object another request wrote at that key since', async (_label, size) => {
    const key = `collide-fail-${size}/avatar`;
    const mine = randomData(size);
    const theirs = randomData(3000);
    // The second file's filter runs once the first is stored: another request replaces the object, then
    // this request fails (the filter throws) and its cleanup removes what it stored.
    const fileFilter = async (_req: unknown, file: { fieldname: string }) => {
      if (file.fieldname !== 'second') return true;
      for (let i = 0; i < 200 && !(await exists(key)); i++) await new Promise((r) => setTimeout(r, 25));
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: theirs }));
      throw new Error('refused after the first file');
    };
    const { res } = await upload(key, [
      { name: 'first', filename: 'a.bin', data: mine },
      { name: 'second', filename: 'b.bin', data: randomData(10) },
    ], fileFilter);
    expect(res.status).toBe(500);
    expect(await objectSha(key)).toBe(sha256(theirs));
    expect((await listOpenMultipartUploads(client, bucket)).filter((u) => u.Key === key)).toEqual([]);
  }, 60_000);

  test.each([
    ['single PUT', 1000],
    ['multipart', PART + 7],
  ])('%s: remove() after another writer replaced the object leaves theirs; without one it removes ours', async (_label, size) => {
    const key = `collide-remove-${size}/avatar`;
    const mine = randomData(size);
    const first = await upload(key, [{ name: 'f', filename: 'a.bin', data: mine }]);
    expect(first.res.status).toBe(200);
    expect(await objectSha(key)).toBe(sha256(mine));
    const theirs = randomData(2000);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: theirs }));
    await first.stored[0].remove();
    expect(await objectSha(key)).toBe(sha256(theirs));

    // Nobody else wrote: remove() deletes the object, and a second remove() is harmless.
    const again = await upload(key, [{ name: 'f', filename: 'a.bin', data: mine }]);
    expect(await objectSha(key)).toBe(sha256(mine));
    await again.stored[0].remove();
    expect(await exists(key)).toBe(false);
    await again.stored[0].remove();
    expect(await exists(key)).toBe(false);
  }, 60_000);

  test('credentials that may delete but not read (the HEAD denied, 403): remove() cannot tell whose object is at the key, so it leaves it and says so', async () => {
    const key = 'collide-no-get/avatar';
    const mine = randomData(1000);
    const first = await upload(key, [{ name: 'f', filename: 'a.bin', data: mine }]);
    expect(first.res.status).toBe(200);
    const theirs = randomData(2000);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: theirs })); // another request, same key
    const deny = { Effect: 'Deny', Principal: '*', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/*`] };
    await client.send(new PutBucketPolicyCommand({ Bucket: bucket, Policy: JSON.stringify({ Version: '2012-10-17', Statement: [deny] }) }));
    try {
      await expect(client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
      // (radosgw 16 ignores If-Match on DeleteObject: a conditional delete alone would remove theirs.)
      await expect(first.stored[0].remove()).rejects.toMatchObject({ code: 'STORAGE_FAILED', status: 502 });
    } finally {
      await client.send(new DeleteBucketPolicyCommand({ Bucket: bucket }));
    }
    expect(await objectSha(key)).toBe(sha256(theirs));
  }, 60_000);
});
