/**
 * CompleteMultipartUpload whose answer never arrives (the connection dropped after the request went out),
 * against the local S3 server: the engine cannot tell whether the object landed. It aborts the upload; an
 * upload that is gone was completed, so the object is its own to remove — at once when the abort answers
 * NoSuchUpload, or later when an abort retried in the background finds it so. Either way the request fails
 * with a typed error and nothing is left: no object at the key, no open multipart upload.
 */
import type { Server } from 'node:http';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';
import { postMultipart, randomData } from './helpers/multipart';
import { listOpenMultipartUploads, objectExists, s3TestClient, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

const exists = (key: string) => objectExists(client, bucket, key);

const dropped = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }); // no $metadata: no answer

/**
 * A client whose CompleteMultipartUpload answer is lost (`landed`: after the store did it, or before it
 * reached the store) and whose first `silentAborts` AbortMultipartUploads get no answer in time.
 */
function losingClient(landed: boolean, silentAborts: number) {
  const lossy = s3TestClient();
  let aborts = 0;
  lossy.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'CompleteMultipartUploadCommand') {
      if (landed) await next(args);
      throw dropped();
    }
    if (context.commandName === 'AbortMultipartUploadCommand' && aborts++ < silentAborts) {
      throw Object.assign(new Error('The operation was aborted'), { name: 'AbortError' });
    }
    return next(args);
  }, { step: 'initialize', name: 'loseCompletion' });
  return lossy;
}

async function upload(key: string, lossy: S3Client) {
  const server: Server = await listen(echoApp(spool({ storage: s3Engine({ client: lossy, bucket, partSize: PART, key: () => key, abortTimeout: 200 }) }).single('f')));
  try {
    return await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: randomData(PART + 7) }]);
  } finally {
    await close(server);
  }
}

test.each([
  ['it landed; the abort answers NoSuchUpload: the object is removed before the answer', true, 0],
  ['it landed; the abort gets no answer in time: the retry in the background finds the upload gone and removes the object', true, 1],
  ['it never reached the store: the abort closes the upload, no object', false, 0],
])('CompleteMultipartUpload without an answer, %s', async (_label, landed, silentAborts) => {
  const key = `lost-completion/${landed}-${silentAborts}`;
  const res = await upload(key, losingClient(landed, silentAborts));
  expect(res.status).toBeGreaterThanOrEqual(500);
  expect(res.json.error.code).toMatch(/^STORAGE_/);
  if (silentAborts === 0) expect(await exists(key)).toBe(false);
  else await eventually(async () => expect(await exists(key)).toBe(false), 5000); // first retry after 500 ms
  expect((await listOpenMultipartUploads(client, bucket)).filter((u) => u.Key === key)).toEqual([]);
}, 60_000);

test('abortTimeout: 0 puts no bound of its own on the abort: a slow AbortMultipartUpload finishes before the failure is answered', async () => {
  const key = 'lost-completion/abort-unbounded';
  const slow = s3TestClient();
  slow.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'CompleteMultipartUploadCommand') {
      throw Object.assign(new Error('We encountered an internal error'), { name: 'InternalError', $metadata: { httpStatusCode: 500 } });
    }
    if (context.commandName === 'AbortMultipartUploadCommand') await new Promise((r) => setTimeout(r, 300));
    return next(args);
  }, { step: 'initialize', name: 'slowAbort' });
  const server: Server = await listen(echoApp(spool({ storage: s3Engine({ client: slow, bucket, partSize: PART, key: () => key, abortTimeout: 0 }) }).single('f')));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: randomData(PART + 7) }]);
    expect(res.status).toBe(502);
    // At the answer, not later: the abort was waited for (a 0 ms bound would have cut it off and left it to a retry).
    expect((await listOpenMultipartUploads(client, bucket)).filter((u) => u.Key === key)).toEqual([]);
    expect(await exists(key)).toBe(false);
  } finally {
    await close(server);
    slow.destroy();
  }
}, 60_000);
