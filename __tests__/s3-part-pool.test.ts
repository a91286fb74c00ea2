/**
 * The S3 engine's part buffers come from the process's buffer pool and go back once their request has
 * succeeded: a large upload reuses `queueSize + 1` buffers instead of allocating one per part, the next
 * upload reuses them too, a reused buffer's old bytes never reach an object, and the buffer of a part whose
 * request failed is never handed out again.
 */
import { createHash } from 'node:crypto';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { patternSha256, postMultipart, type PatternSource } from './helpers/multipart';
import { listOpenMultipartUploads, s3TestClient, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;
// A part size of this file's own, so that no other test's parts share its pool.
const PART = 5 * MiB + 4096;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

async function objectBytes(key: string): Promise<{ size: number; sha256: string }> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res.Body as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest('hex') };
}

/**
 * A client that records the memory behind each full-size UploadPart body and each PutObject body, and can
 * fail one part.
 */
function recordingClient(failPart?: { upload: number; part: number }) {
  const recorder = s3TestClient();
  const seen = { uploads: 0, bodies: [] as { upload: number; part: number; memory: ArrayBufferLike }[], puts: [] as ArrayBufferLike[] };
  recorder.middlewareStack.add(
    (next, context) => async (args) => {
      const input = args.input as { Body?: unknown; PartNumber?: number };
      if (context.commandName === 'CreateMultipartUploadCommand') seen.uploads++;
      if (context.commandName === 'PutObjectCommand' && Buffer.isBuffer(input.Body)) seen.puts.push(input.Body.buffer);
      if (context.commandName === 'UploadPartCommand' && Buffer.isBuffer(input.Body) && input.Body.length === PART) {
        const part = { upload: seen.uploads, part: input.PartNumber!, memory: input.Body.buffer };
        seen.bodies.push(part);
        if (failPart && failPart.upload === part.upload && failPart.part === part.part) throw new Error('injected UploadPart failure');
      }
      return next(args);
    },
    { step: 'initialize', name: 'recordPartMemory' },
  );
  return { recorder, seen };
}

async function upload(server: import('node:http').Server, source: PatternSource) {
  return postMultipart(server, '/upload', [{ name: 'f', filename: 'x.bin', data: source }]);
}

describe('S3 part buffers are pooled', () => {
  test('a 9-part upload reuses queueSize + 1 buffers, the next upload reuses them, and every object is byte-exact', async () => {
    const { recorder, seen } = recordingClient();
    const queueSize = 2;
    const storage = s3Engine({ client: recorder, bucket, prefix: 'pool/', partSize: PART, queueSize });
    const server = await listen(echoApp(spool({ storage, limits: { fileSize: '1GiB' } }).any()));
    try {
      // 8 full parts and a short tail (kept as an exact copy).
      const first = { size: 8 * PART + 1000, seed: 71 };
      const a = await upload(server, first);
      expect(a.status).toBe(200);
      // 3 full parts and a last part longer than half a part: sent as a slice of a reused buffer, whose
      // bytes past the slice belong to the first upload and must not reach the object.
      const second = { size: 3 * PART + Math.floor(PART * 0.7), seed: 72 };
      const b = await upload(server, second);
      expect(b.status).toBe(200);

      expect(await objectBytes(a.json.files[0].key)).toEqual({ size: first.size, sha256: patternSha256(first) });
      expect(await objectBytes(b.json.files[0].key)).toEqual({ size: second.size, sha256: patternSha256(second) });

      const of = (n: number) => seen.bodies.filter((x) => x.upload === n).map((x) => x.memory);
      expect(of(1)).toHaveLength(8);
      expect(new Set(of(1)).size).toBeLessThanOrEqual(queueSize + 1);
      expect(of(2)).toHaveLength(3);
      expect(of(2).some((memory) => of(1).includes(memory))).toBe(true);
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
    } finally {
      await close(server);
      recorder.destroy();
    }
  }, 60_000);

  test('single-part files longer than half a part are sent from a reused buffer, each byte-exact', async () => {
    const { recorder, seen } = recordingClient();
    const storage = s3Engine({ client: recorder, bucket, prefix: 'pool-put/', partSize: PART });
    const server = await listen(echoApp(spool({ storage, limits: { fileSize: '1GiB' } }).any()));
    try {
      // The second file is shorter than the first: the reused buffer still holds the first file's bytes past it.
      const sources = [{ size: PART - 10, seed: 75 }, { size: Math.floor(PART * 0.6), seed: 76 }];
      for (const source of sources) {
        const res = await upload(server, source);
        expect(res.status).toBe(200);
        expect(await objectBytes(res.json.files[0].key)).toEqual({ size: source.size, sha256: patternSha256(source) });
      }
      expect(seen.uploads).toBe(0); // both went as one PutObject
      expect(seen.puts).toHaveLength(2);
      expect(seen.puts[1]).toBe(seen.puts[0]);
    } finally {
      await close(server);
      recorder.destroy();
    }
  }, 60_000);

  test('the buffer of a part whose UploadPart was rejected is not handed out again', async () => {
    const { recorder, seen } = recordingClient({ upload: 1, part: 2 });
    const storage = s3Engine({ client: recorder, bucket, prefix: 'pool-fail/', partSize: PART, queueSize: 1 });
    const server = await listen(echoApp(spool({ storage, limits: { fileSize: '1GiB' } }).any()));
    try {
      const failed = await upload(server, { size: 4 * PART, seed: 73 });
      expect(failed.status).toBeGreaterThanOrEqual(500);
      const failedMemory = seen.bodies.find((x) => x.upload === 1 && x.part === 2)!.memory;

      const source = { size: 6 * PART, seed: 74 };
      const ok = await upload(server, source);
      expect(ok.status).toBe(200);
      expect(await objectBytes(ok.json.files[0].key)).toEqual({ size: source.size, sha256: patternSha256(source) });
      const later = seen.bodies.filter((x) => x.upload === 2).map((x) => x.memory);
      expect(later).toHaveLength(6);
      expect(later).not.toContain(failedMemory);
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
    } finally {
      await close(server);
      recorder.destroy();
    }
  }, 60_000);
});
