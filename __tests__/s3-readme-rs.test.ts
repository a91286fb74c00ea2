/**
 * README claims of s3Engine() against the local S3 server (Ceph radosgw): per-body `params` (ContentMD5,
 * checksums) are dropped, `partSize` has a 5 MiB floor, `queueSize` defaults to 4 parts in flight, a failed
 * sha256 tag removes the object and fails the upload, and a single PutObject whose answer is lost is looked
 * up and removed when it landed. Faults come from AWS SDK middleware on a real client; what is checked is
 * what the bucket holds afterwards and what the request was answered.
 */
import { createHash } from 'node:crypto';
import type { Server } from 'node:http';
import { GetObjectTaggingCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { postMultipart, randomData, sha256 } from './helpers/multipart';
import { listOpenMultipartUploads, objectExists, s3TestClient, useTestBucket, storedSha256 } from './setup/s3-env';

const MiB = 1024 * 1024;
const PART = 5 * MiB;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

const objectSha256 = (key: string) => storedSha256(client, bucket, key);

async function post(storage: ReturnType<typeof s3Engine>, data: Buffer, sha = false) {
  const server: Server = await listen(echoApp(spool({ storage, sha256: sha }).single('f')));
  try {
    return await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data }]);
  } finally {
    await close(server);
  }
}

const dropped = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }); // no $metadata: no answer

/** A test client whose `command` goes through `around` (a real request unless `around` says otherwise). */
function clientAround(command: string, around: (next: () => Promise<unknown>, input: Record<string, unknown>) => Promise<unknown>) {
  const c = s3TestClient();
  c.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName !== command) return next(args);
      return (await around(() => next(args), args.input as Record<string, unknown>)) as never;
    },
    { step: 'initialize', name: `around${command}` },
  );
  return c;
}

describe('params: per-body values are ignored', () => {
  test.each([
    ['single PutObject', 1000],
    ['multipart', PART + 7],
  ])('%s with a wrong ContentMD5 and a wrong ChecksumCRC32C in params: stored byte-exact, the app\'s other params kept', async (_label, size) => {
    const data = randomData(size);
    const storage = s3Engine({
      client,
      bucket,
      prefix: `per-body-${size}/`,
      partSize: PART,
      params: {
        ContentMD5: createHash('md5').update('not these bytes').digest('base64'),
        ChecksumCRC32C: 'AAAAAA==',
        CacheControl: 'max-age=60',
        Metadata: { origin: 'per-body-test' },
      } as never,
    });
    const res = await post(storage, data);
    expect(res.status).toBe(200);
    const key = res.json.file.key as string;
    expect(await objectSha256(key)).toBe(sha256(data));
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.CacheControl).toBe('max-age=60');
    expect(head.Metadata?.origin).toBe('per-body-test');
    expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
  });

  test('the store itself checks Content-MD5 (so the test above would catch a ContentMD5 that went out)', async () => {
    await expect(
      client.send(new PutObjectCommand({ Bucket: bucket, Key: 'md5-check', Body: Buffer.from('abc'), ContentMD5: createHash('md5').update('xyz').digest('base64') })),
    ).rejects.toMatchObject({ name: 'BadDigest' });
    expect(await objectExists(client, bucket, 'md5-check')).toBe(false);
  });
});

describe('partSize and queueSize', () => {
  test('partSize below 5 MiB is a TypeError at construction; 5 MiB is accepted', () => {
    const any = new S3Client({ region: 'us-east-1' });
    try {
      expect(() => s3Engine({ client: any, bucket: 'b', partSize: PART - 1 })).toThrow(new TypeError(`Expected \`partSize\` to be at least 5 MiB, got ${PART - 1}`));
      expect(() => s3Engine({ client: any, bucket: 'b', partSize: '4MiB' })).toThrow(TypeError);
      expect(() => s3Engine({ client: any, bucket: 'b', partSize: '5MiB' })).not.toThrow();
      expect(() => s3Engine({ client: any, bucket: 'b', partSize: PART })).not.toThrow();
    } finally {
      any.destroy();
    }
  });

  test('queueSize default 4: at most 4 UploadParts in flight at once, and 4 are reached', async () => {
    let inFlight = 0;
    let most = 0;
    const slow = clientAround('UploadPartCommand', async (next) => {
      most = Math.max(most, ++inFlight);
      try {
        // The first parts wait until four are in flight (or 20 s pass), however slow the machine: a fifth would show.
        for (const deadline = Date.now() + 20_000; inFlight < 4 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
        return await next();
      } finally {
        inFlight--;
      }
    });
    const data = randomData(7 * PART + 3);
    try {
      const res = await post(s3Engine({ client: slow, bucket, prefix: 'queue/', partSize: PART }), data);
      expect(res.status).toBe(200);
      expect(await objectSha256(res.json.file.key)).toBe(sha256(data));
      expect(most).toBe(4);
    } finally {
      slow.destroy();
    }
  });
});

describe('integrity: recording the sha256 fails', () => {
  test.each([
    ['the store refuses the PutObjectTagging (a tag set it rejects): 502 STORAGE_FAILED', 'refused', 502, 'STORAGE_FAILED'],
    ['the PutObjectTagging gets no answer: 503 STORAGE_UNAVAILABLE', 'dropped', 503, 'STORAGE_UNAVAILABLE'],
  ] as const)('multipart, %s; the object is deleted', async (_label, how, status, code) => {
    let tagged = 0;
    const failing = clientAround('PutObjectTaggingCommand', async (next, input) => {
      tagged++;
      if (how === 'dropped') throw dropped();
      // Eleven tags: S3 allows ten per object; the real store answers InvalidTag.
      const tagging = input.Tagging as { TagSet: { Key: string; Value: string }[] };
      tagging.TagSet = [...tagging.TagSet, ...Array.from({ length: 10 }, (_, i) => ({ Key: `extra${i}`, Value: 'x' }))];
      return next();
    });
    const key = `tag-fails/${how}`;
    try {
      const res = await post(s3Engine({ client: failing, bucket, partSize: PART, key: () => key }), randomData(PART + 11), true);
      expect(tagged).toBe(1);
      expect(res.status).toBe(status);
      expect(res.json.error.code).toBe(code);
      expect(await objectExists(client, bucket, key)).toBe(false);
      expect((await listOpenMultipartUploads(client, bucket)).filter((u) => u.Key === key)).toEqual([]);
    } finally {
      failing.destroy();
    }
  });

  test('control: the same upload with the tag recorded keeps the object, tagged with its sha256', async () => {
    const key = 'tag-fails/none';
    const data = randomData(PART + 11);
    const res = await post(s3Engine({ client, bucket, partSize: PART, key: () => key }), data, true);
    expect(res.status).toBe(200);
    const tags = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
    expect(tags.TagSet?.find((t) => t.Key === 'sha256')?.Value).toBe(sha256(data));
  });
});

describe('a single PutObject whose answer is lost', () => {
  test.each([
    ['it landed: the engine finds it by its ETag and deletes it', true],
    ['it never reached the store: nothing is there', false],
  ])('%s; the request fails 503 STORAGE_UNAVAILABLE', async (_label, landed) => {
    const key = `lost-put/${landed}`;
    let sent = 0;
    const lossy = clientAround('PutObjectCommand', async (next) => {
      sent++;
      if (landed) await next();
      throw dropped();
    });
    try {
      const res = await post(s3Engine({ client: lossy, bucket, partSize: PART, key: () => key }), randomData(1000));
      expect(sent).toBe(1);
      expect(res.status).toBe(503);
      expect(res.json.error.code).toBe('STORAGE_UNAVAILABLE');
      expect(await objectExists(client, bucket, key)).toBe(false);
    } finally {
      lossy.destroy();
    }
  });

  test('another object already at the key (another ETag) is not touched', async () => {
    const key = 'lost-put/other';
    const lossy = clientAround('PutObjectCommand', async () => {
      // Our PUT never reached the store; someone else's object sits at the key.
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from('someone else') }));
      throw dropped();
    });
    try {
      const res = await post(s3Engine({ client: lossy, bucket, partSize: PART, key: () => key }), randomData(1000));
      expect(res.status).toBe(503);
      expect(await objectSha256(key)).toBe(sha256('someone else'));
    } finally {
      lossy.destroy();
    }
  });
});
