/**
 * The prefix is shared with the app's own objects: a sidecar beside an upload's object (`<prefix><id>.json`)
 * stays when the store removes the upload (DELETE, `file.remove()`, `sweep()`) or cleans up after a
 * completion: the store deletes only keys it names (`<id>.state.<n>`, `<id>.tail.<hex>`), as the README says.
 * Found by a review: it deleted every key under `<prefix><id>.`.
 */
import { randomBytes } from 'node:crypto';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { resumable, s3ResumableStore } from '../lib/index';
import { OCTETS, request, serveAtFiles, TUS } from './helpers/resumable';
import { objectExists, useTestBucket } from './setup/s3-env';

let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

async function serve(prefix: string) {
  const middleware = resumable({ store: s3ResumableStore({ client, bucket, prefix }), sweepInterval: 0, expiration: 1500 });
  const served = await serveAtFiles(middleware);
  const base = served.url;
  return { middleware, base, close: served.close };
}

const putSidecar = (key: string) => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: '{"app":"own"}' }));

test('sweep() of an expired upload leaves the app’s object beside it', async () => {
  const prefix = `shared-${randomBytes(3).toString('hex')}/`;
  const srv = await serve(prefix);
  try {
    const res = await request(`${srv.base}/files`, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': 10 }, Buffer.from('abc'));
    const id = res.headers.location!.split('/').pop()!;
    await putSidecar(`${prefix}${id}.json`);
    await new Promise((r) => setTimeout(r, 1600));
    expect(await srv.middleware.sweep()).toBe(1);
    expect(await objectExists(client, bucket, `${prefix}${id}.json`)).toBe(true);
  } finally {
    await srv.close();
  }
});

test('DELETE of a completed upload (terminateCompleted, the default) leaves the app’s object beside it', async () => {
  const prefix = `shared-${randomBytes(3).toString('hex')}/`;
  const srv = await serve(prefix);
  try {
    const res = await request(`${srv.base}/files`, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': 3 }, Buffer.from('abc'));
    const id = res.headers.location!.split('/').pop()!;
    await putSidecar(`${prefix}${id}.thumb.jpg`);
    expect((await request(`${srv.base}${res.headers.location}`, 'DELETE', TUS)).status).toBe(204);
    expect(await objectExists(client, bucket, `${prefix}${id}.thumb.jpg`)).toBe(true);
  } finally {
    await srv.close();
  }
});
