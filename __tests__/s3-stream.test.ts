/**
 * `file.stream()` on an S3 file: a reader that gives up early (a download the browser aborted) must give the
 * SDK's connection back. With a client allowed one socket, a leaked connection blocks every later request.
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import type { RequestHandler } from 'express';
import type { S3Client } from '@aws-sdk/client-s3';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { s3Engine, spool, type UploadedFile } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { postMultipart, randomData, sha256 } from './helpers/multipart';
import { s3TestClient, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

let oneSocket: S3Client;
let agent: http.Agent;
let file: UploadedFile;
const data = randomData(3 * PART + 5); // far more than socket buffers hold: an unread body keeps its socket busy

beforeAll(async () => {
  agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  oneSocket = s3TestClient({ requestHandler: { httpAgent: agent } as never });
  const upload = spool({ storage: s3Engine({ client: oneSocket, bucket, prefix: 'dl/', partSize: PART, queueSize: 1 }) });
  const capture: RequestHandler = (req, _res, next) => {
    file = req.file as UploadedFile;
    next();
  };
  const server = await listen(echoApp(upload.single('f'), capture));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data }]);
    expect(res.status).toBe(200);
  } finally {
    await close(server);
  }
}, 60_000);

afterAll(() => {
  oneSocket?.destroy();
  agent?.destroy();
});

function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('S3 file.stream()', () => {
  test('reads the whole object back, byte-exact', async () => {
    expect(sha256(await within(10_000, readAll(file.stream()), 'read'))).toBe(sha256(data));
  });

  test('destroyed after the first chunk: its connection is freed (a one-socket client can still read and HEAD)', async () => {
    const first = file.stream();
    await within(10_000, new Promise((resolve) => first.once('data', resolve)), 'first chunk');
    first.destroy();
    expect(sha256(await within(10_000, readAll(file.stream()), 'second read'))).toBe(sha256(data));
    const head = await within(5_000, oneSocket.send(new HeadObjectCommand({ Bucket: bucket, Key: (file as any).key })), 'HeadObject');
    expect(head.ContentLength).toBe(data.length);
  });

  test('destroyed before GetObject answered: the request is cancelled and the socket freed', async () => {
    for (let i = 0; i < 3; i++) file.stream().destroy();
    expect(sha256(await within(10_000, readAll(file.stream()), 'read after cancels'))).toBe(sha256(data));
  });

  test('an object that is gone: the stream errors with STORAGE_FAILED (502) naming NoSuchKey', async () => {
    const upload = spool({ storage: s3Engine({ client, bucket, prefix: 'gone/', partSize: PART }) });
    let gone: UploadedFile | undefined;
    const capture: RequestHandler = (req, _res, next) => {
      gone = req.file as UploadedFile;
      next();
    };
    const server = await listen(echoApp(upload.single('f'), capture));
    try {
      await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: randomData(100) }]);
    } finally {
      await close(server);
    }
    await gone!.remove();
    const err = await readAll(gone!.stream()).then(
      () => undefined,
      (e: unknown) => e as { code?: string; status?: number; cause?: { name?: string } },
    );
    expect(err).toMatchObject({ code: 'STORAGE_FAILED', status: 502 });
    expect(err?.cause?.name).toBe('NoSuchKey');
  });
});
