/**
 * On a versioned bucket an upload creates exactly one version, whatever the size and wherever the digest
 * is recorded, and `remove()` (the app's, or the core's cleanup after a failure) deletes exactly that
 * version: no second version, no delete marker, an older version of the same key untouched.
 */
import type { Server } from 'node:http';
import {
  GetObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { RequestHandler } from 'express';
import { s3Engine, spool, type S3EngineOptions, type UploadedFile } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { postMultipart, randomData, sha256 } from './helpers/multipart';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));
beforeAll(async () => {
  await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
});

/** Every version and delete marker of `key`. */
async function versionsOf(key: string) {
  const res = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
  const exact = <T extends { Key?: string }>(list: T[] | undefined) => (list ?? []).filter((v) => v.Key === key);
  return { versions: exact(res.Versions), markers: exact(res.DeleteMarkers) };
}

async function bytesOf(res: { Body?: unknown }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res.Body as AsyncIterable<Buffer>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

/** Serves one upload route and hands the test the stored file objects (which outlive the response). */
async function uploadWith(options: Partial<S3EngineOptions>, files: Parameters<typeof postMultipart>[2]) {
  const upload = spool({ sha256: true, storage: s3Engine({ client, bucket, partSize: PART, queueSize: 2, ...options }) });
  let stored: UploadedFile[] = [];
  const capture: RequestHandler = (req, _res, next) => {
    stored = (req.files as UploadedFile[]) ?? [];
    next();
  };
  const server: Server = await listen(echoApp(upload.any(), capture));
  try {
    const res = await postMultipart(server, '/upload', files);
    return { res, stored };
  } finally {
    await close(server);
  }
}

describe('S3 on a versioned bucket', () => {
  test.each([
    ['small (single PUT)', 'tag', 1000],
    ['small (single PUT)', 'metadata', 1000],
    ['multipart', 'tag', PART + 7],
    ['multipart', 'metadata', PART + 7],
  ] as const)('%s, integrity "%s": one version with the digest; remove() leaves zero versions and no delete marker', async (_label, integrity, size) => {
    const data = randomData(size);
    const { res, stored } = await uploadWith({ prefix: `v-${integrity}-${size}/`, integrity }, [{ name: 'f', filename: 'x', data }]);
    expect(res.status).toBe(200);
    const [file] = stored;
    const { key, versionId, etag } = file as unknown as { key: string; versionId: string; etag: string };
    expect(versionId).toBeTruthy();

    const before = await versionsOf(key);
    expect(before.versions.map((v) => [v.VersionId, v.ETag, v.Size])).toEqual([[versionId, etag, size]]);
    expect(before.markers).toEqual([]);
    // The digest is on that very version (not on a copy of it).
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
    const tags = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key, VersionId: versionId }));
    const tagged = tags.TagSet?.find((t) => t.Key === 'sha256')?.Value;
    if (integrity === 'metadata' && size < PART) {
      expect(head.Metadata?.sha256).toBe(sha256(data));
      expect(tagged).toBeUndefined();
    } else {
      expect(tagged).toBe(sha256(data));
      expect(head.Metadata?.sha256).toBeUndefined();
    }

    await file.remove();
    await file.remove(); // idempotent
    expect(await versionsOf(key)).toEqual({ versions: [], markers: [] });
  });

  test('remove() deletes only the version it wrote: an older object under the same key stays', async () => {
    const key = 'same-key/doc';
    const older = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'older' }));
    const { res, stored } = await uploadWith({ key: () => key }, [{ name: 'f', filename: 'x', data: randomData(PART + 3) }]);
    expect(res.status).toBe(200);
    expect((await versionsOf(key)).versions).toHaveLength(2);
    await stored[0].remove();
    const after = await versionsOf(key);
    expect(after.versions.map((v) => v.VersionId)).toEqual([older.VersionId]);
    expect(after.markers).toEqual([]);
  });

  test.each([
    ['single PUT', 1000],
    ['multipart', PART + 5],
  ])('%s: after the key is overwritten, file.stream() still reads exactly the version it wrote', async (_label, size) => {
    const key = `reread/${size}`;
    const data = randomData(size);
    const { res, stored } = await uploadWith({ key: () => key }, [{ name: 'f', filename: 'x', data }]);
    expect(res.status).toBe(200);
    const [file] = stored;
    const later = randomData(size);
    const overwrite = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: later }));
    expect(overwrite.VersionId).not.toBe((file as unknown as { versionId: string }).versionId);
    // The key's current object is the later one; the file reads its own version back.
    expect(sha256(await bytesOf(await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))))).toBe(sha256(later));
    expect(sha256(await bytesOf({ Body: file.stream() }))).toBe(sha256(data));
    await file.remove();
    const after = await versionsOf(key);
    expect(after.versions.map((v) => v.VersionId)).toEqual([overwrite.VersionId]);
  });

  test('a request that fails after an object was stored leaves zero versions of it', async () => {
    const prefix = 'failed/';
    const upload = spool({
      sha256: true,
      storage: s3Engine({ client, bucket, prefix, partSize: PART, queueSize: 2 }),
      fileFilter: (_req, file) => {
        if (file.originalname === 'evil') throw Object.assign(new Error('no'), { status: 415 });
        return true;
      },
    });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await postMultipart(server, '/upload', [
        { name: 'f', filename: 'ok-small', data: randomData(100) },
        { name: 'f', filename: 'ok-big', data: randomData(PART + 11) },
        { name: 'f', filename: 'evil', data: randomData(100) },
      ]);
      expect(res.status).toBe(415);
    } finally {
      await close(server);
    }
    const left = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
    expect([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])]).toEqual([]);
    expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
  });
});
