import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import { diskEngine, spool, SpoolError, type StorageEngine } from '../lib';
import type { DiskCallback } from '../engines/disk';
import { eventually, tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';
/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */
const multer = require('multer');

const dir = tempDir('spool-disk-');
afterAll(() => dir.remove());

interface Answer {
  status: number;
  error?: any;
  files?: { fieldname: string; originalname: string; filename: string; destination: string; path: string }[];
}

/** Posts files through `middleware` (multer's or ours) and reports what it stored and what error it passed on. */
async function upload(middleware: express.RequestHandler, files: [string, Buffer, string][], path = '/upload/alice'): Promise<Answer> {
  let error: any;
  const app = express();
  app.post('/upload/:user', middleware, (req: any, res) => {
    const list = (req.files ?? []).map(({ fieldname, originalname, filename, destination, path: p }: any) => ({ fieldname, originalname, filename, destination, path: p }));
    res.json({ files: list });
  });
  app.use((err: any, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    error = err;
    res.status(err.status ?? 500).json({});
  });
  let req = request(app).post(path);
  for (const [field, data, name] of files) req = req.attach(field, data, name);
  const res = await req;
  return { status: res.status, error, files: res.body.files };
}

const ours = (engine: StorageEngine) => spool({ storage: engine }).any();

describe("destination and filename with the request in hand (multer's diskStorage)", () => {
  // One directory per user, a name from the field and the client's extension: written the multer way.
  const byUser = (root: string) => (req: any, _file: unknown, cb: DiskCallback) => cb(null, join(root, req.params.user));
  const named = (_req: unknown, file: any, cb: DiskCallback) => cb(null, `${file.fieldname}-${file.originalname}`);

  test('the same callbacks give the same files as multer.diskStorage', async () => {
    const data = randomData(100_000);
    for (const [label, middleware] of [
      ['multer', (root: string) => multer({ storage: multer.diskStorage({ destination: byUser(root), filename: named }) }).any()],
      ['ours', (root: string) => ours(diskEngine({ destination: byUser(root), filename: named }))],
    ] as const) {
      const root = join(dir.path, label);
      mkdirSync(join(root, 'alice'), { recursive: true }); // a function destination: the app creates it
      const res = await upload(middleware(root), [['avatar', data, 'me.png']]);
      expect(res.status).toBe(200);
      expect(res.files).toEqual([
        { fieldname: 'avatar', originalname: 'me.png', filename: 'avatar-me.png', destination: join(root, 'alice'), path: join(root, 'alice', 'avatar-me.png') },
      ]);
      expect(sha256(readFileSync(join(root, 'alice', 'avatar-me.png')))).toBe(sha256(data));
    }
  });

  test('returned values and promises work too; one-parameter filename(file) is the 0.1 form', async () => {
    const root = join(dir.path, 'forms');
    mkdirSync(join(root, 'bob'), { recursive: true });
    const engines = [
      diskEngine({ directory: (req) => join(root, req.params.user), filename: (_req, file) => `sync-${file.originalname}` }),
      diskEngine({ destination: async (req) => join(root, req.params.user), filename: async (req, file) => `async-${req.params.user}-${file.originalname}` }),
      diskEngine({ directory: root, filename: (file) => `legacy-${(file as any).originalname}` }),
    ];
    for (const engine of engines) expect((await upload(ours(engine), [['f', Buffer.from('x'), 'a.txt']], '/upload/bob')).status).toBe(200);
    expect(readdirSync(join(root, 'bob')).sort()).toEqual(['async-bob-a.txt', 'sync-a.txt']);
    expect(existsSync(join(root, 'legacy-a.txt'))).toBe(true);
  });

  test('an error from the callback fails the request, the app error as cause', async () => {
    const boom = new Error('no directory for you');
    const res = await upload(ours(diskEngine({ destination: (_req, _file, cb) => cb(boom) })), [['f', Buffer.from('x'), 'a']]);
    expect(res.status).toBe(500);
    expect(res.error).toBeInstanceOf(SpoolError);
    expect(res.error.code).toBe('STORAGE_FAILED');
    expect(res.error.cause).toBe(boom);
  });

  test('a function destination is not created (multer neither): ENOENT, reachable as cause with its code', async () => {
    const missing = join(dir.path, 'not-created');
    const [mine, theirs] = [
      await upload(ours(diskEngine({ destination: (_req, _file, cb) => cb(null, missing) })), [['f', Buffer.from('x'), 'a']]),
      await upload(multer({ storage: multer.diskStorage({ destination: (_req: unknown, _file: unknown, cb: DiskCallback) => cb(null, missing) }) }).any(), [['f', Buffer.from('x'), 'a']]),
    ];
    expect(theirs.error.code).toBe('ENOENT');
    expect(mine.status).toBe(500);
    expect(mine.error).toMatchObject({ name: 'SpoolError', code: 'STORAGE_FAILED' });
    expect(mine.error.cause.code).toBe(theirs.error.code);
    expect(existsSync(missing)).toBe(false);
  });

  test('a string destination is created, as multer creates one', async () => {
    const target = join(dir.path, 'made', 'by', 'engine');
    expect((await upload(ours(diskEngine({ destination: target })), [['f', Buffer.from('x'), 'a']])).status).toBe(200);
    expect(readdirSync(target)).toHaveLength(1);
  });

  test('options are checked', () => {
    expect(() => diskEngine({ directory: 'a', destination: 'b' })).toThrow(TypeError);
    expect(() => diskEngine({ dest: 'uploads/' } as never)).toThrow(new TypeError('Unknown diskEngine option `dest`'));
    expect(() => diskEngine({ destination: 5 as never })).toThrow(/Expected `destination` to be a non-empty string or a function, got 5/);
  });
});

describe('never removes a file it did not create', () => {
  const keepName = (_req: unknown, file: any) => file.originalname;

  test('a second upload of report.pdf: 409 FILE_EXISTS, the first report.pdf untouched', async () => {
    const target = join(dir.path, 'collide');
    const first = randomData(50_000);
    const engine = diskEngine({ directory: target, filename: keepName });
    expect((await upload(ours(engine), [['doc', first, 'report.pdf']])).status).toBe(200);
    const second = await upload(ours(engine), [['doc', randomData(50_000), 'report.pdf']]);
    expect(second.status).toBe(409);
    expect(second.error).toMatchObject({ code: 'FILE_EXISTS', field: 'doc', message: 'A file named "report.pdf" already exists' });
    expect(second.error.cause.code).toBe('EEXIST');
    expect(sha256(readFileSync(join(target, 'report.pdf')))).toBe(sha256(first));
  });

  test('two files of one request with the same name: the request fails, its own first file is removed, the old one stays', async () => {
    const target = join(dir.path, 'collide-same-request');
    mkdirSync(target);
    writeFileSync(join(target, 'old.txt'), 'precious');
    const res = await upload(ours(diskEngine({ directory: target, filename: keepName })), [
      ['a', randomData(1000), 'new.txt'],
      ['b', randomData(1000), 'new.txt'],
    ]);
    expect(res.status).toBe(409);
    await eventually(() => expect(readdirSync(target)).toEqual(['old.txt']));
    expect(readFileSync(join(target, 'old.txt'), 'utf8')).toBe('precious');
  });
});

test('an upload directory removed while the app runs (a tmp cleaner) is created again', async () => {
  const target = join(dir.path, 'cleaned');
  const engine = diskEngine({ directory: target });
  expect((await upload(ours(engine), [['f', Buffer.from('one'), 'a']])).status).toBe(200);
  rmSync(target, { recursive: true });
  const res = await upload(ours(engine), [['f', Buffer.from('two'), 'b']]);
  expect(res.status).toBe(200);
  expect(readFileSync(res.files![0].path, 'utf8')).toBe('two');
});

