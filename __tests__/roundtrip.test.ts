import type { Server } from 'node:http';
import { readFileSync } from 'node:fs';
import request from 'supertest';
import { diskEngine, memoryEngine, spool, spoolEngine, type StorageEngine } from '../lib';
import { close, echoApp, listen, tempDir } from './helpers/app';
import { patternSha256, postMultipart, randomData, sha256 } from './helpers/multipart';

const THRESHOLD = 64 * 1024;
const SIZES = [0, 1, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1];

describe.each([
  ['memory', (dir: string): StorageEngine => memoryEngine(), () => 'memory'],
  ['disk', (dir: string): StorageEngine => diskEngine({ directory: dir }), () => 'disk'],
  [
    'spool',
    (dir: string): StorageEngine => spoolEngine({ threshold: THRESHOLD, rollover: diskEngine({ directory: dir }) }),
    (size: number) => (size > THRESHOLD ? 'disk' : 'memory'),
  ],
] as const)('%s engine round trip', (_name, makeEngine, expectedStorage) => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  test.each(SIZES)('%i bytes arrive byte-exact', async (size) => {
    const data = randomData(size);
    const upload = spool({ storage: makeEngine(dir.path), memoryBudget: '256MiB', sha256: true });
    let stored: Buffer | undefined;
    const app = echoApp(upload.single('file'), async (req: any, _res, next) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req.file.stream()) chunks.push(chunk);
      stored = Buffer.concat(chunks);
      next();
    });
    const res = await request(app).post('/upload').attach('file', data, 'data.bin').expect(200);
    expect(res.body.file.size).toBe(size);
    expect(res.body.file.sha256).toBe(sha256(data));
    expect(res.body.file.storage).toBe(expectedStorage(size));
    expect(res.body.file.originalname).toBe('data.bin');
    expect(sha256(stored!)).toBe(sha256(data));
    if (res.body.file.storage === 'disk') {
      expect(sha256(readFileSync(res.body.file.path))).toBe(sha256(data));
      expect(res.body.file.filename).toMatch(/^[0-9a-f-]{36}$/);
    } else {
      expect(res.body.file.bufferLength).toBe(size);
    }
  });

  test('a 64 MiB file streamed from a generator', async () => {
    const source = { size: 64 * 1024 * 1024, seed: 3 };
    const upload = spool({ storage: makeEngine(dir.path), memoryBudget: '256MiB', sha256: true, limits: { fileSize: '1GiB' } });
    const server: Server = await listen(echoApp(upload.single('big')));
    try {
      const res = await postMultipart(server, '/upload', [{ name: 'big', filename: 'big.bin', data: source }]);
      expect(res.status).toBe(200);
      expect(res.json.file.size).toBe(source.size);
      expect(res.json.file.sha256).toBe(patternSha256(source));
      expect(res.json.file.storage).toBe(expectedStorage(source.size));
    } finally {
      await close(server);
    }
  });
});
