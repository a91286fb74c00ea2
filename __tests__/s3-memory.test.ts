/**
 * The S3 engine holds memory only through the budget: every part buffer (a small file's single PUT body
 * too) is reserved before a byte of it is read, uploads wait while the budget is full, and each part is
 * given back as soon as its request settles.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { MemoryBudget, s3Engine, spool } from '../lib';
import { REQUEST_SHARE } from '../lib/multipart/options';
import { close, echoApp, eventually, listen } from './helpers/app';
import { patternSha256, postMultipart } from './helpers/multipart';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { startTcpProxy } from './helpers/tcp-proxy';
import { listOpenMultipartUploads, s3TestClient, s3TestEnv, useTestBucket, storedSha256 } from './setup/s3-env';

const MiB = 1024 * 1024;
const PART = 5 * MiB;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

const objectSha256 = (key: string) => storedSha256(client, bucket, key);

/**
 * A client that watches the bodies it sends: PutObject and UploadPart bodies in flight must always be
 * covered by what the budget counts as used.
 */
function watchedClient(budget: MemoryBudget, watched = s3TestClient()) {
  const seen = { inFlight: 0, peakInFlight: 0, uncovered: [] as string[], bodies: 0 };
  watched.middlewareStack.add(
    (next, context) => async (args) => {
      const body = (args.input as { Body?: unknown }).Body;
      if (!Buffer.isBuffer(body)) return next(args);
      seen.bodies++;
      seen.inFlight += body.length;
      seen.peakInFlight = Math.max(seen.peakInFlight, seen.inFlight);
      if (seen.inFlight > budget.used) seen.uncovered.push(`${context.commandName}: ${seen.inFlight} in flight, ${budget.used} counted`);
      try {
        return await next(args);
      } finally {
        seen.inFlight -= body.length;
      }
    },
    { step: 'initialize', name: 'watchBodies' },
  );
  return { watched, seen };
}

/** Samples the budget every millisecond while `fn` runs. */
async function sampling<T>(budget: MemoryBudget, fn: () => Promise<T>) {
  const samples = { peakUsed: 0, sawWaiting: false, over: [] as number[] };
  const timer = setInterval(() => {
    samples.peakUsed = Math.max(samples.peakUsed, budget.used);
    if (budget.used > budget.limit) samples.over.push(budget.used);
    if (budget.waiting > 0) samples.sawWaiting = true;
  }, 1);
  try {
    return { result: await fn(), samples };
  } finally {
    clearInterval(timer);
  }
}

describe('S3 engine memory is a real bound', () => {
  test.each([
    ['one part', 1],
    ['two parts', 2],
  ])(
    'budget of %s (plus the requests\' shares): 5 concurrent spool → S3 uploads wait their turn, never pass the limit, all byte-exact, budget back to 0',
    async (_label, parts) => {
      const sources = [
        { size: 3 * PART + 123, seed: 31 },
        { size: 2 * PART, seed: 32 },
        { size: PART - 1, seed: 33 }, // single PUT, after the spool's threshold
        { size: 4 * PART + 5, seed: 34 },
        { size: PART + 1, seed: 35 },
      ];
      const budget = new MemoryBudget(parts * PART + sources.length * REQUEST_SHARE);
      const { watched, seen } = watchedClient(budget);
      const rollover = s3Engine({ client: watched, bucket, prefix: `mem-${parts}/`, partSize: PART, queueSize: 4 });
      const upload = spool({ threshold: '1MiB', rollover, memoryBudget: budget, sha256: true, limits: { fileSize: '1GiB' } });
      const server = await listen(echoApp(upload.any()));
      try {
        const { result, samples } = await sampling(budget, () =>
          Promise.all(sources.map((data) => postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data }]))),
        );
        for (const [i, res] of result.entries()) {
          expect(res.status).toBe(200);
          expect(res.json.files[0]).toMatchObject({ storage: 's3', size: sources[i].size, sha256: patternSha256(sources[i]) });
          expect(await objectSha256(res.json.files[0].key)).toBe(patternSha256(sources[i]));
        }
        expect(samples.over).toEqual([]);
        expect(samples.sawWaiting).toBe(true); // uploads really waited for memory (backpressure), none failed
        expect(seen.uncovered).toEqual([]); // every body handed to the SDK was counted
        // Bodies in flight stay within the limit (a short last part may go next to a full one when a finished
        // request gave its share back, so not within `parts × PART` exactly).
        expect(seen.peakInFlight).toBeLessThanOrEqual(budget.limit);
        expect(seen.peakInFlight).toBeGreaterThan((parts - 1) * PART);
        expect(seen.bodies).toBeGreaterThanOrEqual(12);
        await eventually(() => expect(budget.used).toBe(0));
        expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      } finally {
        await close(server);
        watched.destroy();
      }
    },
    60_000,
  );

  test('one upload in a roomy budget holds at most partSize × (queueSize + 1)', async () => {
    const budget = new MemoryBudget('256MiB');
    const { watched, seen } = watchedClient(budget);
    const upload = spool({ storage: s3Engine({ client: watched, bucket, prefix: 'roomy/', partSize: PART, queueSize: 2 }), memoryBudget: budget });
    const server = await listen(echoApp(upload.any()));
    try {
      const source = { size: 12 * PART + 3, seed: 36 };
      const { result, samples } = await sampling(budget, () => postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: source }]));
      expect(result.status).toBe(200);
      expect(await objectSha256(result.json.files[0].key)).toBe(patternSha256(source));
      expect(samples.peakUsed).toBeLessThanOrEqual(PART * 3 + REQUEST_SHARE);
      expect(samples.peakUsed).toBeGreaterThanOrEqual(PART * 2); // it did use its queue
      expect(seen.uncovered).toEqual([]);
      await eventually(() => expect(budget.used).toBe(0));
    } finally {
      await close(server);
      watched.destroy();
    }
  });

  test('a small file reserves only its own size while its PutObject runs', async () => {
    const budget = new MemoryBudget('64MiB');
    const { watched, seen } = watchedClient(budget);
    let usedDuringPut = -1;
    watched.middlewareStack.add((next) => async (args) => {
      usedDuringPut = budget.used;
      return next(args);
    }, { step: 'initialize', name: 'usedDuringPut' });
    const upload = spool({ storage: s3Engine({ client: watched, bucket, prefix: 'small/', partSize: PART }), memoryBudget: budget });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: { size: 100_000, seed: 37 } }]);
      expect(res.status).toBe(200);
      expect(seen.bodies).toBe(1);
      expect(usedDuringPut).toBeGreaterThanOrEqual(100_000);
      expect(usedDuringPut).toBeLessThanOrEqual(100_000 + REQUEST_SHARE);
    } finally {
      await close(server);
      watched.destroy();
    }
  });

  test('a budget smaller than one part refuses the upload with 503 MEMORY_BUDGET_EXCEEDED; nothing is left', async () => {
    const upload = spool({ storage: s3Engine({ client, bucket, prefix: 'tiny-budget/', partSize: PART }), memoryBudget: 2 * MiB });
    const server = await listen(echoApp(upload.any()));
    try {
      const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x', data: { size: 1000, seed: 38 } }]);
      expect(res.status).toBe(503);
      expect(res.json.error.code).toBe('MEMORY_BUDGET_EXCEEDED');
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'tiny-budget/' }));
      expect(listed.Contents ?? []).toEqual([]);
    } finally {
      await close(server);
    }
  });
  test.each([
    ['', undefined],
    [', past settleTimeout', 100],
  ])('a client that leaves while its file\'s PutObject is held up%s: the body stays counted until the PutObject settles, then the budget is back to 0 and nothing is left', async (_label, settleTimeout) => {
    const budget = new MemoryBudget('16MiB');
    const proxy = await startTcpProxy(s3TestEnv().endpoint);
    const { watched, seen } = watchedClient(budget, s3TestClient({ endpoint: proxy.url }));
    const upload = spool({ storage: s3Engine({ client: watched, bucket, prefix: 'left-mid-put/', partSize: PART }), memoryBudget: budget, settleTimeout });
    const server = await listen(echoApp(upload.any()));
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    socket.on('error', () => undefined);
    try {
      const B = 'bnd';
      const head = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n`);
      const tail = Buffer.from(`\r\n--${B}--\r\n`);
      const data = Buffer.alloc(4 * MiB, 7); // under one part: a single PutObject of the whole file
      proxy.stall(); // S3 goes quiet before the PutObject (the engine's first S3 call): it stays under way, its body held by the SDK
      socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${head.length + data.length + tail.length}\r\n\r\n`);
      socket.write(Buffer.concat([head, data, tail]));
      await eventually(() => expect(seen.inFlight).toBe(data.length), 10_000);
      socket.destroy();
      const during: number[] = [];
      for (let i = 0; i < 40; i++) {
        await new Promise((r) => setTimeout(r, 10));
        during.push(budget.used);
      }
      expect(seen.inFlight).toBe(data.length);
      expect(Math.min(...during)).toBeGreaterThanOrEqual(data.length);
      proxy.resume();
      await eventually(() => {
        expect(seen.inFlight).toBe(0);
        expect(budget.used).toBe(0);
      }, 15_000);
      await eventually(async () => {
        const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'left-mid-put/' }));
        expect(listed.Contents ?? []).toEqual([]);
      }, 15_000);
      expect(seen.uncovered).toEqual([]);
    } finally {
      socket.destroy();
      proxy.resume();
      await close(server);
      await proxy.cut();
      watched.destroy();
    }
  });
});
