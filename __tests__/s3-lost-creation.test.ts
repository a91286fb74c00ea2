/**
 * A CreateMultipartUpload that landed but whose answer was lost (the connection dropped after the store
 * created it), against the local S3 server. The request fails 503; what landed is an open multipart upload,
 * with no object and no ETag to look up. At the engine's own random key every upload open there is this
 * request's, so the engine finds and aborts it. At an app-chosen key another request's upload may be open
 * there too: the engine leaves the key alone (the bucket's lifecycle rule is the backstop; README).
 */
import type { Server } from 'node:http';
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';
import { postMultipart, randomData } from './helpers/multipart';
import { listOpenMultipartUploads, s3TestClient, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

/** A client whose CreateMultipartUpload reaches the store, and whose answer is then lost. */
function losingCreations() {
  const lossy = s3TestClient();
  const seen = { created: 0, commands: [] as string[] };
  lossy.middlewareStack.add((next, context) => async (args) => {
    seen.commands.push(context.commandName ?? '');
    if (context.commandName !== 'CreateMultipartUploadCommand') return next(args);
    seen.created++;
    await next(args);
    throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }); // no $metadata: no answer
  }, { step: 'initialize', name: 'loseCreate' });
  return { lossy, seen };
}

const answered = (status: number, name: string) =>
  Object.assign(new Error(name), { name, $fault: 'server', $metadata: { httpStatusCode: status, attempts: 1 } });

/**
 * A client whose CreateMultipartUpload attempts (below the SDK's retries: each attempt passes here) reach the
 * store and then hear `answer(n)` instead of its answer: a lost answer, or a gateway's 5xx.
 */
function retriedCreations(answer: (attempt: number) => Error | 'skip') {
  const lossy = s3TestClient({ maxAttempts: 3 });
  const seen = { attempts: 0, sent: 0 };
  lossy.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName !== 'CreateMultipartUploadCommand') return next(args);
    const outcome = answer(++seen.attempts);
    if (outcome === 'skip') return next(args);
    if (!(outcome as { name?: string }).name?.startsWith('Slow')) {
      seen.sent++;
      await next(args); // the store creates it
    }
    throw outcome;
  }, { step: 'deserialize', name: 'answerCreate', priority: 'high' });
  return { lossy, seen };
}

const openUnder = async (prefix: string) => (await listOpenMultipartUploads(client, bucket)).filter((u) => u.Key!.startsWith(prefix));

test('at the engine\'s own key: the request fails 503 STORAGE_UNAVAILABLE, and the upload that landed is aborted', async () => {
  const { lossy, seen } = losingCreations();
  const server: Server = await listen(echoApp(spool({ storage: s3Engine({ client: lossy, bucket, prefix: 'lost-create-own/', partSize: PART }) }).single('f')));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: randomData(PART + 7) }]);
    expect(seen.created).toBe(1);
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('STORAGE_UNAVAILABLE');
    await eventually(async () => expect(await openUnder('lost-create-own/')).toEqual([]), 5000);
  } finally {
    await close(server);
    lossy.destroy();
  }
}, 60_000);

test('at an app-chosen key: another request\'s upload open at that key is not aborted', async () => {
  const key = 'lost-create-app/shared';
  const other = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const { lossy, seen } = losingCreations();
  const server: Server = await listen(echoApp(spool({ storage: s3Engine({ client: lossy, bucket, partSize: PART, key: () => key }) }).single('f')));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: randomData(PART + 7) }]);
    expect(seen.created).toBe(1);
    expect(res.status).toBe(503);
    await new Promise((r) => setTimeout(r, 1000)); // past the engine's first two looks (at once, after 500 ms)
    const open = (await openUnder(key)).map((u) => u.UploadId);
    expect(open).toContain(other.UploadId);
    // It never looked (a look starts at once, before the answer goes out, whatever the S3 server's speed).
    expect(seen.commands.filter((c) => c !== 'CreateMultipartUploadCommand')).toEqual([]);
  } finally {
    await close(server);
    lossy.destroy();
    for (const upload of await openUnder('lost-create-app/')) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key!, UploadId: upload.UploadId! }));
    }
  }
}, 60_000);

test.each([
  ['the first attempt landed without an answer, the SDK\'s retries were answered 503 SlowDown', 'retried-503/', (n: number) =>
    n === 1 ? Object.assign(new Error('socket hang up'), { code: 'ECONNRESET', $metadata: {} }) : answered(503, 'SlowDown')],
  ['a gateway answered 504 to every attempt after the store behind it created the upload', 'gateway-504/', () => answered(504, 'GatewayTimeout')],
])('at the engine\'s own key, %s: every upload that landed is aborted', async (_label, prefix, answer) => {
  const { lossy, seen } = retriedCreations(answer);
  const server: Server = await listen(echoApp(spool({ storage: s3Engine({ client: lossy, bucket, prefix, partSize: PART }) }).single('f')));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: randomData(PART + 7) }]);
    expect(res.status).toBe(503);
    expect(seen.sent).toBeGreaterThanOrEqual(1);
    await eventually(async () => expect(await openUnder(prefix)).toEqual([]), 8000);
  } finally {
    await close(server);
    lossy.destroy();
  }
}, 60_000);
