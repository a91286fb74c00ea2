import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { GetObjectTaggingCommand, HeadObjectCommand, ListObjectsV2Command, ListObjectVersionsCommand, S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool, type SpoolOptions } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';
import { BOUNDARY, multipartChunks, patternChunks, patternSha256, postChunks, postMultipart, randomData, sha256, type Part } from './helpers/multipart';
import { startTcpProxy } from './helpers/tcp-proxy';
import { listOpenMultipartUploads, s3TestClient, s3TestEnv, useTestBucket, storedSha256 } from './setup/s3-env';

const MiB = 1024 * 1024;
const PART = 5 * MiB;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

const objectSha256 = (key: string) => storedSha256(client, bucket, key);

/** The object's tags as a plain object (stores may list them in any order). */
async function tagsOf(key: string): Promise<Record<string, string>> {
  const res = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
  return Object.fromEntries((res.TagSet ?? []).map((t) => [t.Key, t.Value]));
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function keysIn(prefix: string): Promise<string[]> {
  const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key as string);
}

/** A server with the spool's `sha256` on (the engine records the digest only when the core computes one). */
async function withServer<T>(options: SpoolOptions, fn: (server: Server) => Promise<T>, route = 'any'): Promise<T> {
  const upload = spool({ sha256: true, ...options });
  const server = await listen(echoApp(route === 'any' ? upload.any() : upload.single(route)));
  try {
    return await fn(server);
  } finally {
    await close(server);
  }
}

const engine = (prefix: string, extra: Partial<Parameters<typeof s3Engine>[0]> = {}) =>
  s3Engine({ client, bucket, prefix, partSize: PART, queueSize: 2, ...extra });

async function expectNothingLeft(prefix: string) {
  await eventually(async () => {
    expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
    expect(await keysIn(prefix)).toEqual([]);
  }, 10_000);
}

describe('S3 engine round trips', () => {
  test.each([
    ['tiny', 1000],
    ['empty', 0],
    ['exactly one part (single PUT)', PART],
    ['one part + 1 byte (multipart)', PART + 1],
  ])('%s: %i bytes byte-exact, sha256 recorded as a tag, stored as a download', async (_label, size) => {
    const data = randomData(size);
    await withServer({ storage: engine('rt/') }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: '../../etc/passwd', type: 'text/plain', data }]);
      expect(res.status).toBe(200);
      const file = res.json.files[0];
      expect(file).toMatchObject({ storage: 's3', size, sha256: sha256(data), bucket, mimetype: 'text/plain' });
      expect(file.key).toMatch(/^rt\/[0-9a-f-]{36}$/); // never the client's filename
      expect(file.etag).toBeTruthy();
      expect(file.location).toContain(`/${bucket}/${file.key}`);
      expect(await objectSha256(file.key)).toBe(sha256(data));
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: file.key }));
      expect(head.ETag).toBe(file.etag); // for multipart too, although Ceph RGW 16 answers the completion with none
      expect(head.Metadata).toEqual({});
      expect(head.ContentType).toBe('application/octet-stream'); // the client's claim is not served back
      expect(head.ContentDisposition).toBe('attachment');
      expect(head.ContentLength).toBe(size);
      expect(await tagsOf(file.key)).toEqual({ sha256: sha256(data) });
    });
  });

  test('file.stream() reads the object back and file.remove() deletes it', async () => {
    const data = randomData(PART * 2 + 17);
    const upload = spool({ storage: engine('rw/') });
    let streamed: Buffer | undefined;
    let keyBeforeRemove: string[] = [];
    const app = echoApp(upload.single('f'), async (req: any, _res, next) => {
      streamed = await readAll(req.file.stream());
      keyBeforeRemove = await keysIn('rw/');
      await req.file.remove();
      await req.file.remove(); // idempotent
      next();
    });
    const server = await listen(app);
    try {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'a', data }]);
      expect(res.status).toBe(200);
      expect(sha256(streamed!)).toBe(sha256(data));
      expect(keyBeforeRemove).toEqual([res.json.file.key]);
    } finally {
      await close(server);
    }
    expect(await keysIn('rw/')).toEqual([]);
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'rw/' }));
    expect([...(versions.Versions ?? []), ...(versions.DeleteMarkers ?? [])]).toEqual([]);
  });

  test('a 256 MiB file streams through (multipart), RSS grows by at most partSize × (queueSize + 1) + slack', async () => {
    const source = { size: 256 * MiB, seed: 11 };
    const expected = patternSha256(source);
    global.gc?.();
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
    try {
      await withServer({ storage: engine('big/', { partSize: 8 * MiB, queueSize: 4 }), limits: { fileSize: '1GiB' } }, async (server) => {
        const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'big', data: source }]);
        expect(res.status).toBe(200);
        expect(res.json.files[0].size).toBe(source.size);
        expect(res.json.files[0].sha256).toBe(expected);
        expect(await objectSha256(res.json.files[0].key)).toBe(expected);
      });
    } finally {
      clearInterval(sampler);
    }
    const grown = peak - before;
    // 8 MiB × 5 = 40 MiB of part buffers. Stated slack, 120 MiB: part buffers already sent but not yet
    // collected (GC lag), the SDK's request buffers, the background hash's queue, and this process's own
    // HTTP client. Measured 52–129 MiB in all; the point is that it does not scale with the 256 MiB file.
    console.log(`256 MiB to S3: RSS grew ${(grown / MiB).toFixed(1)} MiB`);
    expect(grown).toBeLessThan(40 * MiB + 120 * MiB);
  }, 180_000);

  test('spool → S3 rollover in one request, mixed with memory files, order kept', async () => {
    const parts: Part[] = [
      { name: 'small', filename: 's1', data: randomData(1000) },
      { name: 'big', filename: 'b1', data: { size: 12 * MiB, seed: 4 } },
      { name: 'title', value: 'mixed' },
      { name: 'small', filename: 's2', data: randomData(MiB) },
      { name: 'big', filename: 'b2', data: { size: 64 * MiB, seed: 5 } },
    ];
    await withServer({ threshold: '1MiB', rollover: engine('mix/'), limits: { fileSize: '1GiB' } }, async (server) => {
      const res = await postMultipart(server, '/upload', parts);
      expect(res.status).toBe(200);
      expect(res.json.body).toEqual({ title: 'mixed' });
      const files = res.json.files;
      expect(files.map((f: any) => f.originalname)).toEqual(['s1', 'b1', 's2', 'b2']);
      expect(files.map((f: any) => f.storage)).toEqual(['memory', 's3', 'memory', 's3']);
      expect(files[1].sha256).toBe(patternSha256({ size: 12 * MiB, seed: 4 }));
      expect(await objectSha256(files[3].key)).toBe(patternSha256({ size: 64 * MiB, seed: 5 }));
      expect(await keysIn('mix/')).toHaveLength(2);
    });
  }, 120_000);

  test('4 × 64 MiB uploads to S3 at once all complete, intact', async () => {
    const sources = [21, 22, 23, 24].map((seed) => ({ size: 64 * MiB, seed }));
    await withServer({ storage: engine('par/'), limits: { fileSize: '1GiB' } }, async (server) => {
      const results = await Promise.all(sources.map((data) => postMultipart(server, '/upload', [{ name: 'f', filename: 'p', data }])));
      for (const [i, res] of results.entries()) {
        expect(res.status).toBe(200);
        expect(res.json.files[0].sha256).toBe(patternSha256(sources[i]));
        expect(await objectSha256(res.json.files[0].key)).toBe(patternSha256(sources[i]));
      }
    });
  }, 180_000);
});

describe('S3 engine options', () => {
  test.each([
    ['small (single PUT)', 1000],
    ['multipart', PART + 7],
  ])('key(file, req), params and contentType "client": %s keeps the app\'s metadata, headers and the client\'s type', async (_label, size) => {
    const data = randomData(size);
    const options: SpoolOptions = {
      storage: engine('unused/', {
        key: (file, req) => `tenants/${req.headers['x-tenant']}/${file.fieldname}-${size}`,
        params: { Metadata: { owner: 'ann' }, CacheControl: 'max-age=60' },
        contentType: 'client',
        integrity: 'none',
      }),
    };
    await withServer(options, async (server) => {
      const res = await postChunks(server, '/upload', multipartChunks([{ name: 'doc', filename: 'x', type: 'text/csv', data }]), {
        'content-type': `multipart/form-data; boundary=${BOUNDARY}`,
        'x-tenant': 'acme',
      });
      expect(res.status).toBe(200);
      const key = `tenants/acme/doc-${size}`;
      expect(res.json.files[0].key).toBe(key);
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect(head.Metadata).toEqual({ owner: 'ann' });
      expect(head.CacheControl).toBe('max-age=60');
      expect(head.ContentType).toBe('text/csv');
      expect(head.ContentDisposition).toBeUndefined();
      expect(await objectSha256(key)).toBe(sha256(data));
      expect(await tagsOf(key)).toEqual({});
    });
  });

  test.each([
    ['small (single PUT): in x-amz-meta-sha256', 1000, 'metadata'],
    ['multipart: as the sha256 tag (metadata is fixed before the digest is known)', PART + 7, 'tag'],
  ])('integrity "metadata", %s, next to the app\'s metadata and tags', async (_label, size, where) => {
    const data = randomData(size);
    const options = { integrity: 'metadata' as const, params: { Metadata: { owner: 'ann' }, Tagging: 'team=blue' } };
    await withServer({ storage: engine('meta/', options) }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data }]);
      expect(res.status).toBe(200);
      const { key } = res.json.files[0];
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      if (where === 'metadata') {
        expect(head.Metadata).toEqual({ owner: 'ann', sha256: sha256(data) });
        expect(await tagsOf(key)).toEqual({ team: 'blue' });
      } else {
        expect(head.Metadata).toEqual({ owner: 'ann' });
        expect(await tagsOf(key)).toEqual({ team: 'blue', sha256: sha256(data) });
      }
      expect(await objectSha256(key)).toBe(sha256(data));
    });
  });

  test.each([
    ['small (single PUT)', 1000],
    ['multipart', PART + 7],
  ])('integrity "tag" (the default): %s carries the sha256 tag next to the app\'s tags, no metadata', async (_label, size) => {
    const data = randomData(size);
    await withServer({ storage: engine('tagged/', { params: { Tagging: 'team=blue' } }) }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data }]);
      expect(res.status).toBe(200);
      const { key } = res.json.files[0];
      expect(await tagsOf(key)).toEqual({ team: 'blue', sha256: sha256(data) });
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect(head.Metadata?.sha256).toBeUndefined();
    });
  });

  test.each([
    ['small (single PUT)', 1000],
    ['multipart', PART + 7],
  ])('sha256 off in the spool: %s is stored without a digest anywhere', async (_label, size) => {
    await withServer({ sha256: false, storage: engine('nohash/', { integrity: 'metadata' }) }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: randomData(size) }]);
      expect(res.status).toBe(200);
      const { key, sha256: digest } = res.json.files[0];
      expect(digest).toBeUndefined();
      expect((await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata).toEqual({});
      expect(await tagsOf(key)).toEqual({});
    });
  });
  test.each([
    ['single PUT', 1000],
    ['multipart', 2 * PART + 1],
  ])('a client with the SDK\'s default checksum settings works (every body is a buffer): %s, read back intact', async (_label, size) => {
    const env = s3TestEnv();
    const defaults = new S3Client({
      endpoint: env.endpoint,
      region: env.region,
      forcePathStyle: true,
      credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
    });
    const data = randomData(size);
    let streamed: Buffer | undefined;
    const upload = spool({ storage: s3Engine({ client: defaults, bucket, prefix: 'defaults/', partSize: PART }) });
    const server = await listen(echoApp(upload.any(), async (req: any, _res, next) => {
      streamed = await readAll(req.files[0].stream());
      next();
    }));
    try {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data }]);
      expect(res.status).toBe(200);
      expect(sha256(streamed!)).toBe(sha256(data));
      expect(await objectSha256(res.json.files[0].key)).toBe(sha256(data));
    } finally {
      await close(server);
      defaults.destroy();
    }
  });
});

describe('S3 engine failures leave nothing behind', () => {
  /** Sends headers and `bytes` of a file to the server over a raw socket, then disconnects. */
  async function disconnectAfter(server: Server, bytes: number, waitFor: () => Promise<boolean>) {
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(
      `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${1024 * MiB}\r\n\r\n` +
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n`,
    );
    for (const chunk of patternChunks({ size: bytes, seed: 1 })) {
      if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
    }
    await eventually(async () => expect(await waitFor()).toBe(true), 10_000);
    socket.destroy();
  }

  test.each([3 * MiB, 7 * MiB, 13 * MiB, 26 * MiB])('client disconnects after %i bytes: no open upload, no object', async (bytes) => {
    const prefix = `abort-${bytes}/`;
    const upload = spool({ storage: engine(prefix) });
    const server = await listen(echoApp(upload.any()));
    try {
      await disconnectAfter(server, bytes, async () => bytes < PART || (await listOpenMultipartUploads(client, bucket)).length > 0);
      await expectNothingLeft(prefix);
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
    }
  }, 60_000);

  test('a limit hit mid-file aborts the multipart upload → 413', async () => {
    await withServer({ storage: engine('limit/'), limits: { fileSize: 12 * MiB } }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: { size: 30 * MiB, seed: 2 } }]);
      expect(res.status).toBe(413);
      expect(res.json.error.code).toBe('LIMIT_FILE_SIZE');
    });
    await expectNothingLeft('limit/');
  }, 60_000);

  test('a later file rejected: objects already completed for the request are deleted', async () => {
    const options: SpoolOptions = {
      storage: engine('later/'),
      fileFilter: (_req, file) => {
        if (file.originalname === 'evil') throw Object.assign(new Error('no'), { status: 415 });
        return true;
      },
    };
    await withServer(options, async (server) => {
      const res = await postMultipart(server, '/upload', [
        { name: 'f', filename: 'ok-small', data: randomData(100) },
        { name: 'f', filename: 'ok-big', data: { size: 11 * MiB, seed: 3 } },
        { name: 'f', filename: 'evil', data: randomData(100) },
      ]);
      expect(res.status).toBe(415);
    });
    await expectNothingLeft('later/');
  }, 60_000);

  test('wrong credentials → 502 STORAGE_FAILED (cause named by S3)', async () => {
    const bad = s3TestClient({ secretAccessKey: 'wrong-secret' });
    await withServer({ storage: s3Engine({ client: bad, bucket, prefix: 'creds/' }) }, async (server) => {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: randomData(1000) }]);
      expect(res.status).toBe(502);
      expect(res.json.error.code).toBe('STORAGE_FAILED');
      expect(res.json.error.message).toMatch(/SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId/);
    });
    bad.destroy();
  });

  test('missing bucket → 502 STORAGE_FAILED (NoSuchBucket), multipart too', async () => {
    for (const size of [1000, 12 * MiB]) {
      await withServer({ storage: s3Engine({ client, bucket: `${bucket}-missing`, partSize: PART }) }, async (server) => {
        const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: { size, seed: 1 } }]);
        expect(res.status).toBe(502);
        expect(res.json.error.code).toBe('STORAGE_FAILED');
        expect(res.json.error.message).toMatch(/NoSuchBucket/);
      });
    }
  });

  test('server gone mid-upload → 503 STORAGE_UNAVAILABLE; a concurrent request elsewhere is unaffected', async () => {
    const proxy = await startTcpProxy(process.env.S3_ENDPOINT!);
    const viaProxy = s3TestClient({ endpoint: proxy.url, maxAttempts: 1 });
    const closeLater = viaProxy.destroy.bind(viaProxy);
    const failing = spool({ storage: s3Engine({ client: viaProxy, bucket, prefix: 'gone/', partSize: PART, queueSize: 2 }) });
    const healthy = spool({ storage: engine('healthy/') });
    const server = await listen(echoApp(failing.any()));
    const other = await listen(echoApp(healthy.any()));
    try {
      const healthyData = { size: 40 * MiB, seed: 8 };
      const [failed, ok] = await Promise.all([
        (async () => {
          const pending = postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: { size: 200 * MiB, seed: 7 } }]);
          await eventually(() => expect(proxy.forwarded).toBeGreaterThan(12 * MiB), 20_000);
          await proxy.cut();
          return pending;
        })(),
        postMultipart(other, '/upload', [{ name: 'f', filename: 'y', data: healthyData }]),
      ]);
      expect(failed.status).toBe(503);
      expect(failed.json.error.code).toBe('STORAGE_UNAVAILABLE');
      expect(ok.status).toBe(200);
      expect(await objectSha256(ok.json.files[0].key)).toBe(patternSha256(healthyData));
      await eventually(() => expect(failing.memoryBudget.used).toBe(0));
    } finally {
      await close(server);
      await close(other);
    }
    // The store comes back on the same address: the engine's retried AbortMultipartUpload gets through.
    const back = await startTcpProxy(process.env.S3_ENDPOINT!, Number(new URL(proxy.url).port));
    try {
      await expectNothingLeft('gone/');
    } finally {
      await back.cut();
      closeLater();
    }
  }, 120_000);
});

test('memory files stay out of S3 entirely', async () => {
  await withServer({ threshold: '1MiB', rollover: engine('never/') }, async (server) => {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: randomData(5000) }]);
    expect(res.json.files[0].storage).toBe('memory');
  });
  expect(await keysIn('never/')).toEqual([]);
});
