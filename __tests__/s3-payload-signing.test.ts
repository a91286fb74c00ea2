import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { resumable, s3Engine, s3ResumableStore, spool } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';
import { postMultipart } from './helpers/multipart';
import { tusUpload } from './helpers/resumable';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy';
import { s3TestClient, s3TestEnv, useTestBucket } from './setup/s3-env';

// SigV4 signs a Buffer body by hashing it (x-amz-content-sha256): over HTTPS the engines send file bytes
// unsigned (TLS protects them), over plain HTTP signed. Seen from a proxy in front of the real S3 server,
// which ends TLS with a test-only self-signed certificate (fixtures/tls, for 127.0.0.1) and reads every
// request head in clear.

const MiB = 1024 * 1024;
const key = readFileSync(join(__dirname, 'fixtures', 'tls', 'key.pem'));
const cert = readFileSync(join(__dirname, 'fixtures', 'tls', 'cert.pem'));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let plainClient: S3Client;
let bucket: string;
useTestBucket((c, b) => ((plainClient = c), (bucket = b)));

interface SeenRequest {
  method: string;
  path: string;
  length: number;
  contentSha256: string | undefined;
}

/** Every request head in one connection's bytes (HTTP/1.1; bodies skipped by their Content-Length). */
function requestsIn(bytes: Buffer): SeenRequest[] {
  const text = bytes.toString('latin1');
  const seen: SeenRequest[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const [line, ...headers] = text.slice(at, end).split('\r\n');
    const header = (name: string) => headers.find((h) => h.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
    const [method, path] = line.split(' ');
    const length = Number(header('content-length') ?? 0);
    seen.push({ method, path, length, contentSha256: header('x-amz-content-sha256') });
    at = end + 4 + length;
  }
  return seen;
}

/** A proxy to the S3 server, TLS-ending or plain, that keeps what the client sent through it. */
const recordingProxy = (secure: boolean): Promise<TcpProxy> => startTcpProxy(s3TestEnv().endpoint, 0, { record: true, tls: secure ? { key, cert } : undefined });

/** Requests that carried at least 1 MiB: file bytes (the state objects of the resumable store are small). */
const fileBytes = (proxy: TcpProxy) => proxy.sent().flatMap(requestsIn).filter((r) => r.method === 'PUT' && r.length >= MiB);

async function objectSha(objectKey: string): Promise<string> {
  const res = await plainClient.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey }));
  return sha(Buffer.from(await res.Body!.transformToByteArray()));
}

/** Uploads through express-spool with `client`: a 12 MiB file (multipart, 5 MiB parts), a 2 MiB one (one PutObject), and a resumable 11 MiB upload (an 8 MiB part and a tail). */
async function uploadAll(client: S3Client, prefix: string): Promise<void> {
  const upload = spool({ rollover: s3Engine({ client, bucket, prefix: `${prefix}m/`, partSize: 5 * MiB }) });
  let server: Server = await listen(echoApp(upload.any()));
  try {
    for (const size of [12 * MiB + 7, 2 * MiB + 3]) {
      const data = randomBytes(size);
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'f.bin', data }]);
      expect(res.status).toBe(200);
      expect(res.json.files[0]).toMatchObject({ storage: 's3', size });
      expect(await objectSha(res.json.files[0].key)).toBe(sha(data));
    }
  } finally {
    await close(server);
  }
  const completed: string[] = [];
  const app = express();
  app.use('/files', resumable({ store: s3ResumableStore({ client, bucket, prefix: `${prefix}r/` }), onComplete: (file) => void completed.push((file as { key: string }).key) }));
  server = await listen(app);
  try {
    const data = randomBytes(11 * MiB + 5);
    await tusUpload(data, { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`, chunkSize: 11 * MiB + 5 });
    await eventually(() => expect(completed.length).toBe(1));
    expect(await objectSha(completed[0])).toBe(sha(data));
  } finally {
    await close(server);
  }
}

test('over HTTPS, file bytes go to S3 unsigned (UNSIGNED-PAYLOAD): multipart parts, a single PutObject, resumable parts and tails; byte-exact', async () => {
  const proxy = await recordingProxy(true);
  try {
    const client = s3TestClient({ endpoint: proxy.url, requestHandler: { httpsAgent: new https.Agent({ ca: cert, keepAlive: true }) } });
    await uploadAll(client, 'tls/');
    client.destroy();
    const bytes = fileBytes(proxy);
    // The 12 MiB file's 3 parts, the 2 MiB file's PutObject, the resumable upload's 8 MiB part and 3 MiB tail.
    expect(bytes.length).toBeGreaterThanOrEqual(6);
    for (const r of bytes) expect(r.contentSha256).toBe('UNSIGNED-PAYLOAD');
  } finally {
    await proxy.cut();
  }
});

test('over plain HTTP, file bytes stay signed (their sha256 in x-amz-content-sha256); byte-exact', async () => {
  const proxy = await recordingProxy(false);
  try {
    const client = s3TestClient({ endpoint: proxy.url });
    await uploadAll(client, 'plain/');
    client.destroy();
    const bytes = fileBytes(proxy);
    expect(bytes.length).toBeGreaterThanOrEqual(6);
    for (const r of bytes) expect(r.contentSha256).toMatch(/^[0-9a-f]{64}$/);
  } finally {
    await proxy.cut();
  }
});
