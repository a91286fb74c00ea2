import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { diskEngine, memoryEngine, s3Engine, spool, type Spool, type StorageEngine } from '../lib';
import { close, echoApp, eventually, listen, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody } from './helpers/multipart';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';

// ≥ 200 client disconnects at random byte offsets per engine configuration.
const ABORTS = Number(process.env.ABORT_RUNS ?? 200);
const MiB = 1024 * 1024;

/** A tiny seeded PRNG, so a failing offset can be replayed. */
function prng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
}

function abortAt(server: Server, body: Buffer, offset: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1', () => {
      const head = `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\n\r\n`;
      socket.write(head);
      socket.write(body.subarray(0, offset), () => {
        // Give the server a moment to start on what it got, then vanish.
        setTimeout(() => socket.destroy(), 2);
      });
    });
    socket.on('error', () => undefined).on('close', () => resolve());
  });
}

const warnings: Error[] = [];
const onWarning = (w: Error) => warnings.push(w);
beforeAll(() => process.on('warning', onWarning));
afterAll(() => process.off('warning', onWarning));

async function storm(upload: Spool, body: Buffer, seed: number, check: () => Promise<void>): Promise<void> {
  const server = await listen(echoApp(upload.any()));
  const random = prng(seed);
  try {
    for (let i = 0; i < ABORTS; i += 8) {
      const batch = Array.from({ length: Math.min(8, ABORTS - i) }, () => abortAt(server, body, Math.floor(random() * body.length)));
      await Promise.all(batch);
    }
    await eventually(check, 20_000);
    await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  } finally {
    await close(server);
  }
}

const localConfigs: [string, (dir: string) => StorageEngine | { threshold: number; rollover: StorageEngine }][] = [
  ['memory', () => memoryEngine()],
  ['disk', (dir) => diskEngine({ directory: dir })],
  ['spool → disk', (dir) => ({ threshold: 64 * 1024, rollover: diskEngine({ directory: dir }) })],
];

describe.each(localConfigs)(`%s: ${ABORTS} aborts at random offsets`, (_label, make) => {
  test('0 files left, budget 0, no listener-leak warnings', async () => {
    const dir = tempDir();
    try {
      const engine = make(dir.path);
      const upload = spool({ ...('store' in engine ? { storage: engine } : engine), memoryBudget: '256MiB' });
      const body = multipartBody([
        { name: 'a', value: 'x'.repeat(100) },
        { name: 'f1', filename: 'a', data: Buffer.alloc(200 * 1024, 1) },
        { name: 'f2', filename: 'b', data: Buffer.alloc(30 * 1024, 2) },
        { name: 'f3', filename: 'c', data: Buffer.alloc(3 * 1024 * 1024, 3) },
      ]);
      await storm(upload, body, 42, async () => expect(dir.files()).toEqual([]));
    } finally {
      dir.remove();
    }
  }, 120_000);
});

describe(`spool → S3: ${ABORTS} aborts at random offsets`, () => {
  let client: S3Client;
  let bucket: string;
  useTestBucket((c, b) => ((client = c), (bucket = b)));

  test('0 objects, 0 open multipart uploads, budget 0', async () => {
    const upload = spool({ threshold: MiB, rollover: s3Engine({ client, bucket, prefix: 'storm/', partSize: 5 * MiB, queueSize: 2 }) });
    const body = multipartBody([
      { name: 'small', filename: 's', data: Buffer.alloc(100 * 1024, 1) },
      { name: 'big', filename: 'b', data: Buffer.alloc(12 * MiB, 2) },
    ]);
    await storm(upload, body, 7, async () => {
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'storm/' }));
      expect(listed.KeyCount ?? 0).toBe(0);
    });
  }, 300_000);
});
