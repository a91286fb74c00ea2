import http from 'node:http';
import { readFileSync } from 'node:fs';
import express from 'express';
import request from 'supertest';
import { GetObjectTaggingCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import {
  diskEngine, ERROR_CODES, fromMulterStorage, MemoryBudget, memoryEngine, s3Engine, spool, spoolEngine, toMulterStorage, SpoolError,
  type SpoolErrorCode, type StorageEngine,
} from '../lib';
import { MULTER_CODES } from '../lib/core/errors';
import { close, describeFiles, eventually, jsonErrors, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody, postMultipart, randomData, sha256, type Part } from './helpers/multipart';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';
/* eslint-disable @typescript-eslint/no-require-imports */
const multer = require('multer');
const multerS3 = require('multer-s3');

const MiB = 1024 * 1024;
const dir = tempDir();
afterAll(() => dir.remove());
afterEach(() => expect(dir.files()).toEqual([]));

let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));
const keysIn = async (prefix: string) =>
  ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map((o) => o.Key);

function multerApp(middleware: express.RequestHandler, keep = false) {
  const app = express();
  app.post('/upload', middleware, async (req: any, res) => {
    const files = req.files as any[];
    const result = { files: describeFiles(files), bytes: files.map((f) => (f.buffer ? sha256(f.buffer) : f.path ? sha256(readFileSync(f.path)) : null)) };
    if (!keep) await Promise.all(files.map((f) => new Promise((r) => (f.path ? require('node:fs').rm(f.path, r) : r(null)))));
    res.json(result);
  });
  app.use(jsonErrors);
  return app;
}

describe('toMulterStorage: express-spool engines inside an unchanged multer app', () => {
  test('spool engine: small files in memory, large on disk, sha256 and multer fields', async () => {
    const storage = toMulterStorage(spoolEngine({ threshold: '64KiB', rollover: diskEngine({ directory: dir.path }) }), { sha256: true });
    const small = randomData(1000);
    const large = randomData(300 * 1024);
    const res = await request(multerApp(multer({ storage }).array('f')))
      .post('/upload').attach('f', small, 's.txt').attach('f', large, 'l.bin').expect(200);
    const [s, l] = res.body.files;
    expect(s).toMatchObject({ fieldname: 'f', originalname: 's.txt', storage: 'memory', size: 1000, sha256: sha256(small), bufferLength: 1000 });
    expect(l).toMatchObject({ originalname: 'l.bin', storage: 'disk', size: large.length, sha256: sha256(large), destination: dir.path });
    expect(res.body.bytes).toEqual([sha256(small), sha256(large)]);
  });

  test.each([
    ['memory', () => memoryEngine(), 'memory'],
    ['disk', () => diskEngine({ directory: dir.path }), 'disk'],
  ])('%s engine', async (_label, make, storageName) => {
    const data = randomData(200 * 1024);
    const res = await request(multerApp(multer({ storage: toMulterStorage(make()) }).array('f'))).post('/upload').attach('f', data, 'x').expect(200);
    expect(res.body.files[0].storage).toBe(storageName);
    expect(res.body.bytes[0]).toBe(sha256(data));
  });

  test('S3 engine: the object is in the bucket with its sha256', async () => {
    const data = randomData(6 * MiB);
    const storage = toMulterStorage(s3Engine({ client, bucket, prefix: 'to-multer/', partSize: 5 * MiB }), { sha256: true });
    const app = express();
    app.post('/upload', multer({ storage }).single('f'), (req: any, res) => res.json(describeFiles(req.file)));
    const res = await request(app).post('/upload').attach('f', data, 'x').expect(200);
    expect(res.body).toMatchObject({ storage: 's3', bucket, sha256: sha256(data), size: data.length });
    // A multipart object carries its digest as the `sha256` tag (the S3 engine's default integrity).
    const tags = await client.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: res.body.key }));
    expect(tags.TagSet).toContainEqual({ Key: 'sha256', Value: sha256(data) });
    await client.send(new (require('@aws-sdk/client-s3').DeleteObjectCommand)({ Bucket: bucket, Key: res.body.key }));
  });

  test('errors and cleanup: multer removes what our engine stored when a later file fails', async () => {
    const storage = toMulterStorage(spoolEngine({ threshold: 1024, rollover: diskEngine({ directory: dir.path }) }));
    const res = await request(multerApp(multer({ storage, limits: { fileSize: 100 * 1024 } }).array('f')))
      .post('/upload')
      .attach('f', randomData(50 * 1024), 'ok')
      .attach('f', randomData(500 * 1024), 'too-big');
    expect(res.status).toBe(500); // multer's MulterError has no status; the app maps it
    expect(res.body.error.code).toBe('LIMIT_FILE_SIZE');
    await eventually(() => expect(dir.files()).toEqual([]));
  });

  test('its memoryBudget bounds what a memory engine may hold, and is given back after the response', async () => {
    const budget = new MemoryBudget('100KiB');
    const storage = toMulterStorage(memoryEngine(), { memoryBudget: budget });
    const over = await request(multerApp(multer({ storage }).array('f'))).post('/upload').attach('f', randomData(200 * 1024), 'x');
    expect(over.body.error.code).toBe('MEMORY_BUDGET_EXCEEDED');
    await request(multerApp(multer({ storage }).array('f'))).post('/upload').attach('f', randomData(50 * 1024), 'y').expect(200);
    await eventually(() => expect(budget.used).toBe(0));
  });

  test('on a plain node:http server (no Express): the files stay counted until the response ends, not when the body was read', async () => {
    const budget = new MemoryBudget('8MiB');
    const middleware = multer({ storage: toMulterStorage(memoryEngine(), { memoryBudget: budget }) }).any();
    const usedInHandler: number[] = [];
    const server = http.createServer((req, res) => {
      middleware(req, res, async (err: unknown) => {
        if (err) return void res.writeHead(500).end(String(err));
        await new Promise((r) => setTimeout(r, 50)); // the app works on req.files for a while
        usedInHandler.push(budget.used);
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const res = await postMultipart(server, '/u', [{ name: 'f', filename: 'a', data: randomData(500_000) }]);
      expect(res.status).toBe(200);
      expect(usedInHandler[0]).toBeGreaterThanOrEqual(500_000);
      await eventually(() => expect(budget.used).toBe(0));
    } finally {
      await close(server);
    }
  });

  test('temporary files of a disk engine are removed when the response ends', async () => {
    const storage = toMulterStorage(diskEngine({ directory: dir.path, lifetime: 'temporary' }));
    const res = await request(multerApp(multer({ storage }).array('f'), true)).post('/upload').attach('f', randomData(1000), 'x').expect(200);
    expect(res.body.files[0].storage).toBe('disk');
    await eventually(() => expect(dir.files()).toEqual([]));
  });
});

describe('fromMulterStorage: multer engines inside express-spool', () => {
  const post = (engine: StorageEngine, parts: Part[], options = {}) => {
    const upload = spool({ threshold: '64KiB', rollover: engine, sha256: true, ...options });
    const app = express();
    app.post('/upload', upload.any(), async (req: any, res) => {
      const back = [];
      for (const f of req.files) {
        const chunks: Buffer[] = [];
        for await (const c of f.stream()) chunks.push(c);
        back.push(sha256(Buffer.concat(chunks)));
        await f.remove();
      }
      res.json({ files: describeFiles(req.files), back });
    });
    app.use(jsonErrors);
    return request(app).post('/upload').set('content-type', `multipart/form-data; boundary=${BOUNDARY}`).send(multipartBody(parts));
  };

  describe('when the request fails, the multer engine\'s own clean-up is reported in err.storageErrors', () => {
    /** Two files, the second past fileSize: the first (stored whole) and the second are cleaned up by the engine. */
    async function failing(storage: unknown) {
      let error: any;
      const app = express();
      app.post('/u', spool({ storage: storage as never, limits: { fileSize: 100_000 }, settleTimeout: 300 }).any(), (_req, res) => res.end());
      app.use((err: any, _req: any, res: any, _next: any) => ((error = err), res.status(err.status).end()));
      const res = await request(app).post('/u').attach('f', randomData(50_000), 'a').attach('f', randomData(300_000), 'b');
      return { status: res.status, error };
    }

    test('_removeFile fails: STORAGE_FAILED with its error as cause; the request\'s own error stays the answer', async () => {
      const dir = tempDir('multer-remove-fails-');
      try {
        const disk = multer.diskStorage({ destination: dir.path });
        const eacces = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
        const storage = { _handleFile: disk._handleFile.bind(disk), _removeFile: (_req: unknown, _file: unknown, cb: (e: Error) => void) => cb(eacces) };
        const { status, error } = await failing(storage);
        expect([status, error.code]).toEqual([413, 'LIMIT_FILE_SIZE']);
        expect(error.storageErrors.map((e: any) => [e.code, e.cause])).toContainEqual(['STORAGE_FAILED', eacces]);
        expect(dir.files().length).toBeGreaterThan(0); // left, and the app was told
      } finally {
        dir.remove();
      }
    });

    test('_removeFile slower than settleTimeout: STORAGE_FAILED says the engine was still working; its files are gone afterwards', async () => {
      const dir = tempDir('multer-remove-slow-');
      try {
        const disk = multer.diskStorage({ destination: dir.path });
        const storage = { _handleFile: disk._handleFile.bind(disk), _removeFile: (req: unknown, file: unknown, cb: unknown) => setTimeout(() => disk._removeFile(req, file, cb), 1000) };
        const { status, error } = await failing(storage);
        expect([status, error.code]).toEqual([413, 'LIMIT_FILE_SIZE']);
        expect(error.storageErrors.map((e: any) => e.code)).toContain('STORAGE_FAILED');
        await eventually(() => expect(dir.files()).toEqual([]), 3000);
      } finally {
        dir.remove();
      }
    });
  });

  test("multer's diskStorage as the spool's rollover", async () => {
    const small = randomData(100);
    const large = randomData(500 * 1024);
    const res = await post(fromMulterStorage(multer.diskStorage({ destination: dir.path })), [
      { name: 'a', filename: 'small', data: small },
      { name: 'b', filename: 'large', data: large },
    ]);
    expect(res.status).toBe(200);
    expect(res.body.files.map((f: any) => f.storage)).toEqual(['memory', 'disk']);
    expect(res.body.files[1]).toMatchObject({ sha256: sha256(large), size: large.length, destination: dir.path });
    expect(res.body.back).toEqual([sha256(small), sha256(large)]);
  });

  test("multer's memoryStorage alone", async () => {
    const data = randomData(300 * 1024);
    const upload = spool({ storage: fromMulterStorage(multer.memoryStorage()) });
    const app = express();
    app.post('/upload', upload.single('f'), (req: any, res) => res.json({ storage: req.file.storage, digest: sha256(req.file.buffer) }));
    const res = await request(app).post('/upload').attach('f', data, 'x').expect(200);
    expect(res.body).toEqual({ storage: 'memory', digest: sha256(data) });
  });

  test('a limit hit mid-file in a multer diskStorage: the cut-short file is removed, 413', async () => {
    const res = await post(fromMulterStorage(multer.diskStorage({ destination: dir.path })), [{ name: 'a', filename: 'big', data: randomData(3 * MiB) }], { limits: { fileSize: MiB } });
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('LIMIT_FILE_SIZE');
    await eventually(() => expect(dir.files()).toEqual([]));
  });

  test('multer-s3 as the rollover: round trip, and a later failure removes the object', async () => {
    const engine = fromMulterStorage(multerS3({ s3: client, bucket, key: (_req: unknown, _file: unknown, cb: (e: null, k: string) => void) => cb(null, `multer-s3/${Math.random()}`) }), {
      readStream: (info) => {
        const { PassThrough } = require('node:stream');
        const out = new PassThrough();
        client.send(new (require('@aws-sdk/client-s3').GetObjectCommand)({ Bucket: info.bucket, Key: info.key })).then((r: any) => r.Body.pipe(out), (e: Error) => out.destroy(e));
        return out;
      },
    });
    const large = randomData(2 * MiB);
    const ok = await post(engine, [{ name: 'a', filename: 'x', data: large }]);
    expect(ok.status).toBe(200);
    expect(ok.body.files[0]).toMatchObject({ storage: 's3', bucket });
    expect(ok.body.back).toEqual([sha256(large)]);
    expect(await keysIn('multer-s3/')).toEqual([]); // removed by the handler through file.remove()

    const failed = await post(engine, [
      { name: 'a', filename: 'x', data: randomData(MiB) },
      { name: '', filename: 'nameless', data: randomData(10) },
    ]);
    expect(failed.status).toBe(400);
    expect(failed.body.error.code).toBe('MISSING_FIELD_NAME');
    await eventually(async () => {
      expect(await keysIn('multer-s3/')).toEqual([]);
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
    }, 10_000);
  });
});

describe('error compatibility: the same condition gives multer’s code', () => {
  const B = BOUNDARY;
  const part = (name: string, filename?: string, data = 'x') =>
    `--${B}\r\nContent-Disposition: form-data; name="${name}"${filename ? `; filename="${filename}"` : ''}\r\n\r\n${data}\r\n`;
  const end = `--${B}--\r\n`;
  const cases: [string, Record<string, number>, string, (u: any) => express.RequestHandler][] = [
    ['file too large', { fileSize: 10 }, part('f', 'a', 'x'.repeat(100)) + end, (u) => u.any()],
    ['too many files', { files: 1 }, part('f', 'a') + part('f', 'b') + end, (u) => u.any()],
    ['too many fields', { fields: 1 }, part('a') + part('b') + end, (u) => u.any()],
    ['field value too long', { fieldSize: 3 }, part('a', undefined, 'xxxxx') + end, (u) => u.any()],
    ['field name too long', { fieldNameSize: 3 }, part('abcdef') + end, (u) => u.any()],
    ['too many parts', { parts: 1 }, part('a') + part('b') + end, (u) => u.any()],
    ['unexpected file', {}, part('other', 'a') + end, (u) => u.single('f')],
    ['file part without a field name', {}, `--${B}\r\nContent-Disposition: form-data; filename="a"\r\n\r\nx\r\n` + end, (u) => u.any()],
  ];

  test.each(cases)('%s', async (_label, limits, body, route) => {
    const run = async (middleware: express.RequestHandler) => {
      let caught: any;
      const app = express();
      app.post('/upload', middleware, (_req, res) => res.json({}));
      app.use((err: any, _req: any, res: any, _next: any) => {
        caught = err;
        res.status(400).end();
      });
      await request(app).post('/upload').set('content-type', `multipart/form-data; boundary=${B}`).send(Buffer.from(body));
      return caught;
    };
    const theirs = await run(route(multer({ storage: multer.memoryStorage(), limits })));
    const ours = await run(route(spool({ storage: memoryEngine(), limits })));
    expect(theirs).toBeInstanceOf(multer.MulterError);
    expect(ours).toBeInstanceOf(SpoolError);
    expect(ours.code).toBe(theirs.code);
    // Handlers written for multer test the name as often as the class.
    expect(theirs.name).toBe('MulterError');
    expect(ours.name).toBe(theirs.name);
    expect(ours.message).toBe(theirs.message);
  });

  test('codes multer has no counterpart for are named SpoolError; every code keeps its status', () => {
    for (const code of Object.keys(ERROR_CODES) as SpoolErrorCode[]) {
      const err = new SpoolError(code);
      expect(err).toBeInstanceOf(SpoolError);
      expect(err.name).toBe(MULTER_CODES.has(code) ? 'MulterError' : 'SpoolError');
      expect(err.status).toBe(ERROR_CODES[code].status);
    }
    expect(new SpoolError('MALFORMED_MULTIPART').name).toBe('SpoolError');
    expect(new SpoolError('INVALID_FIELD_NAME').name).toBe('SpoolError'); // multer accepts those names
    expect(String(new SpoolError('LIMIT_FILE_SIZE'))).toBe('MulterError: File too large');
  });
});
