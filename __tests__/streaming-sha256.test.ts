import { createHash, randomBytes } from 'node:crypto';
import request from 'supertest';
import express from 'express';
import { StreamingSha256 } from '../lib/core/streaming-sha256';
import { spool, memoryEngine, type UploadedFile } from '../lib';

const KiB = 1024;
const expected = (chunks: Buffer[]) => {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
};
const digestOf = (Hasher: typeof StreamingSha256, chunks: Buffer[]) => {
  const h = new Hasher();
  for (const c of chunks) h.update(c);
  return h.hex();
};
/** 0, 1, 2 and many chunks of random sizes (some empty). */
const cases = (): Buffer[][] => [
  [],
  [Buffer.alloc(0)],
  [randomBytes(1)],
  [randomBytes(16 * KiB)],
  [randomBytes(7), randomBytes(64 * KiB)],
  [Buffer.alloc(0), randomBytes(3)],
  Array.from({ length: 100 }, (_, i) => randomBytes((i * 7919) % (9 * KiB))),
];

test('the hex digest equals createHash over the same chunks: no chunk, one chunk (the one-shot path), two, many', () => {
  for (const chunks of cases()) expect(digestOf(StreamingSha256, chunks)).toBe(expected(chunks));
});

test('a file in one chunk is hashed without a Hash object (one crypto.hash call); a second chunk starts one', () => {
  const actual = jest.requireActual('node:crypto') as typeof import('node:crypto');
  const createHash = jest.fn(actual.createHash);
  const oneShot = jest.fn(actual.hash);
  jest.isolateModules(() => {
    jest.doMock('node:crypto', () => ({ ...actual, createHash, hash: oneShot }));
    const { StreamingSha256: Counted } = require('../lib/core/streaming-sha256') as typeof import('../lib/core/streaming-sha256');
    const one = [randomBytes(16 * KiB)];
    expect(digestOf(Counted, one)).toBe(expected(one));
    expect([createHash.mock.calls.length, oneShot.mock.calls.length]).toEqual([0, 1]);
    const two = [randomBytes(5), randomBytes(9)];
    expect(digestOf(Counted, two)).toBe(expected(two));
    expect([createHash.mock.calls.length, oneShot.mock.calls.length]).toEqual([1, 1]);
  });
  jest.dontMock('node:crypto');
});

test('without crypto.hash (Node before 20.12) every file goes through a Hash object, with the same digests', () => {
  jest.isolateModules(() => {
    jest.doMock('node:crypto', () => ({ ...jest.requireActual('node:crypto'), hash: undefined }));
    const { StreamingSha256: Fallback } = require('../lib/core/streaming-sha256') as typeof import('../lib/core/streaming-sha256');
    for (const chunks of cases()) expect(digestOf(Fallback, chunks)).toBe(expected(chunks));
  });
  jest.dontMock('node:crypto');
});

test('over HTTP with sha256: true, file.sha256 is byte-exact for an empty, a one-chunk and a many-chunk file', async () => {
  const app = express();
  app.post('/', spool({ storage: memoryEngine(), sha256: true }).array('f'), (req, res) => {
    res.json((req.files as unknown as UploadedFile[]).map((f) => ({ size: f.size, sha256: f.sha256 })));
  });
  const files = [Buffer.alloc(0), randomBytes(16 * KiB), randomBytes(3 * 1024 * KiB + 5)];
  let r = request(app).post('/');
  files.forEach((b, i) => (r = r.attach('f', b, `f${i}.bin`)));
  const res = await r;
  expect(res.status).toBe(200);
  expect(res.body).toEqual(files.map((b) => ({ size: b.length, sha256: createHash('sha256').update(b).digest('hex') })));
});
