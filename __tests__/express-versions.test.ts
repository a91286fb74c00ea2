import express5 from 'express';
import request from 'supertest';
import { spool, SpoolError, diskEngine } from '../lib';
import { tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const express4 = require('express4') as typeof express5;

const dir = tempDir();
afterAll(() => dir.remove());

describe.each([
  ['Express 5', express5, /^5\./],
  ['Express 4', express4, /^4\./],
])('%s', (_label, express, version) => {
  const upload = spool({ threshold: '16KiB', rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }), limits: { fileSize: '1MiB' }, sha256: true });
  const app = express();
  app.use(upload.any()); // app-wide
  app.post('/upload', (req: any, res: any) => res.json({ body: req.body, files: req.files.map((f: any) => ({ sha256: f.sha256, storage: f.storage })) }));
  app.use((err: any, _req: any, res: any, _next: any) => res.status(err.status).json({ code: err.code, isSpoolError: err instanceof SpoolError }));

  test('runs on the installed version', () => {
    const pkg = express === express4 ? require('express4/package.json') : require('express/package.json');
    expect(pkg.version).toMatch(version);
  });

  test('app-wide upload.any(): files and fields arrive', async () => {
    const small = randomData(100);
    const large = randomData(100_000);
    const res = await request(app).post('/upload').field('name', 'x').attach('a', small, 'a').attach('b', large, 'b').expect(200);
    expect(res.body.body).toEqual({ name: 'x' });
    expect(res.body.files).toEqual([
      { sha256: sha256(small), storage: 'memory' },
      { sha256: sha256(large), storage: 'disk' },
    ]);
  });

  test('errors reach the error handler as SpoolError with status', async () => {
    const res = await request(app).post('/upload').attach('a', randomData(2 * 1024 * 1024), 'a');
    expect(res.status).toBe(413);
    expect(res.body).toEqual({ code: 'LIMIT_FILE_SIZE', isSpoolError: true });
  });

  test('JSON bodies pass through untouched', async () => {
    const app2 = express();
    app2.use(express.json(), upload.any());
    app2.post('/j', (req: any, res: any) => res.json(req.body));
    const res = await request(app2).post('/j').send({ a: 1 }).expect(200);
    expect(res.body).toEqual({ a: 1 });
  });
});
