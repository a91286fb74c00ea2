/**
 * The answer to an append's claim commit (the state PUT that records a new multipart upload's UploadId and
 * claimed part numbers) is lost after S3 stored it — the connection dropped after the request went out. The
 * append's error path must not abort that multipart upload, which the state on S3 names: it asks S3 first.
 * (Found by a review: it aborted it, and every later append sent its parts to an aborted upload, 502 for ever.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { resumable, s3ResumableStore } from '../lib/index';
import { OCTETS, request, serveAtFiles, TUS } from './helpers/resumable';
import { s3TestClient, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

test('a claim state stored by S3 whose answer was lost does not wedge the upload', async () => {
  const prefix = `lost-claim-${randomBytes(3).toString('hex')}/`;
  // The store's client: the first PutObject after CreateMultipartUpload (the claim commit) lands, its answer is lost.
  const lossy = s3TestClient();
  let created = false;
  let lost = false;
  lossy.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === 'CreateMultipartUploadCommand') created = true;
      const out = await next(args);
      if (created && !lost && context.commandName === 'PutObjectCommand') {
        lost = true;
        throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
      }
      return out;
    },
    { step: 'initialize', priority: 'high', name: 'loseClaimAnswer' },
  );
  const completed: { sha256?: string }[] = [];
  const middleware = resumable({
    store: s3ResumableStore({ client: lossy, bucket, prefix, partSize: '5MiB' }),
    sweepInterval: 0,
    sha256: true,
    onComplete: (file) => void completed.push({ sha256: file.sha256 }),
  });
  const served = await serveAtFiles(middleware);
  const base = served.url;
  try {
    const size = 6 * MiB + 7;
    const data = randomBytes(size);
    const created201 = await request(`${base}/files`, 'POST', { ...TUS, 'Upload-Length': size });
    expect(created201.status).toBe(201);
    const url = base + created201.headers.location!;
    const statuses: number[] = [];
    // A client that resumes from HEAD after every failure, 2 MiB per PATCH, at most 12 PATCHes.
    for (let i = 0; i < 12; i++) {
      const offset = Number((await request(url, 'HEAD', TUS)).headers['upload-offset']);
      if (offset === size) break;
      const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset, Math.min(size, offset + 2 * MiB)));
      statuses.push(res.status);
    }
    expect(lost).toBe(true);
    // One failed PATCH (the lost answer), then the upload goes on: it is not answered 502 for ever.
    expect(statuses.filter((s) => s >= 500).length).toBeLessThanOrEqual(1);
    expect(completed).toHaveLength(1);
    const obj = await client.send(new GetObjectCommand({ Bucket: bucket, Key: prefix + url.split('/').pop() }));
    expect(sha(Buffer.from(await obj.Body!.transformToByteArray()))).toBe(sha(data));
  } finally {
    await served.close();
    lossy.destroy();
  }
});
