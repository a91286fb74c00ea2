import { randomUUID } from 'node:crypto';
import { watch } from 'node:fs';
import request from 'supertest';
import { diskEngine, spool, type StorageEngine } from '../lib';
import { echoApp, eventually, tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';

const dir = tempDir();
afterAll(() => dir.remove());
const upload = spool({ threshold: '64KiB', rollover: diskEngine({ directory: dir.path }), sha256: true });

describe('route helpers and mixed requests', () => {
  test('one request with mixed sizes: small in memory, large on disk, fields in body, order kept', async () => {
    const sizes = [10, 200_000, 0, 70_000, 65_536, 1_000_000];
    const data = sizes.map((n) => randomData(n));
    let req = request(echoApp(upload.any())).post('/upload').field('title', 'hello').field('tags[]', 'a');
    data.forEach((d, i) => {
      req = req.attach(`file${i % 2}`, d, `f${i}.bin`);
    });
    const res = await req.field('tags[]', 'b').field('meta[author][name]', 'ann').expect(200);
    expect(res.body.body).toEqual({ title: 'hello', tags: ['a', 'b'], meta: { author: { name: 'ann' } } });
    expect(res.body.files.map((f: any) => f.originalname)).toEqual(sizes.map((_, i) => `f${i}.bin`));
    expect(res.body.files.map((f: any) => f.sha256)).toEqual(data.map(sha256));
    expect(res.body.files.map((f: any) => f.storage)).toEqual(sizes.map((n) => (n > 65_536 ? 'disk' : 'memory')));
    expect(dir.files().sort()).toEqual(res.body.files.filter((f: any) => f.storage === 'disk').map((f: any) => f.filename).sort());
  });

  test('fields() groups files by field and enforces maxCount', async () => {
    const mw = upload.fields([{ name: 'avatar', maxCount: 1 }, { name: 'gallery', maxCount: 2 }, { name: 'unused' }]);
    const ok = await request(echoApp(mw))
      .post('/upload')
      .attach('avatar', Buffer.from('a'), 'a.png')
      .attach('gallery', Buffer.from('g1'), 'g1.png')
      .attach('gallery', Buffer.from('g2'), 'g2.png')
      .expect(200);
    expect(Object.keys(ok.body.files)).toEqual(['avatar', 'gallery']);
    expect(ok.body.files.gallery.map((f: any) => f.originalname)).toEqual(['g1.png', 'g2.png']);
    const tooMany = await request(echoApp(mw))
      .post('/upload')
      .attach('gallery', Buffer.from('1'), '1')
      .attach('gallery', Buffer.from('2'), '2')
      .attach('gallery', Buffer.from('3'), '3');
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error).toMatchObject({ code: 'LIMIT_UNEXPECTED_FILE', field: 'gallery' });
  });

  test('array() sets req.files, single() sets req.file, none() takes fields only', async () => {
    const arr = await request(echoApp(upload.array('docs', 3))).post('/upload').attach('docs', Buffer.from('x'), 'x').expect(200);
    expect(arr.body.files).toHaveLength(1);
    const single = await request(echoApp(upload.single('doc'))).post('/upload').attach('doc', Buffer.from('x'), 'x').expect(200);
    expect(single.body.file.originalname).toBe('x');
    expect(single.body.files).toBeUndefined();
    const none = await request(echoApp(upload.none())).post('/upload').field('a', '1').expect(200);
    expect(none.body.body).toEqual({ a: '1' });
  });

  test('fileFilter (callback style) skips rejected files before any byte is stored', async () => {
    // The engine is the README's interface wrapped around diskEngine: it records every file it is handed
    // and how many bytes it read. The disk engine's `filename` records every name it is asked for, and a
    // watcher on the directory records every file created in it, so a rejected file stored and then
    // removed again (the count at the end unchanged) is still seen.
    const own = tempDir();
    const handed: string[] = [];
    const bytesRead: Record<string, number> = {};
    const named: string[] = [];
    const disk = diskEngine({
      directory: own.path,
      lifetime: 'temporary',
      filename: (_req, file) => {
        named.push(file.originalname);
        return `${file.originalname}-${randomUUID()}`;
      },
    });
    const recording: StorageEngine = {
      name: 'recording',
      store(stream, file, context) {
        handed.push(file.originalname);
        bytesRead[file.originalname] = 0;
        stream.on('data', (chunk: Buffer) => (bytesRead[file.originalname] += chunk.length));
        return disk.store(stream, file, context);
      },
    };
    const created: string[] = [];
    const watcher = watch(own.path, (event, name) => {
      if (event === 'rename' && name) created.push(name);
    });
    try {
      const filtered = spool({
        storage: recording,
        fileFilter: (_req, file, cb) => cb(null, file.mimetype === 'image/png'),
      });
      const png = randomData(1000);
      const res = await request(echoApp(filtered.any()))
        .post('/upload')
        .attach('f', png, { filename: 'a.png', contentType: 'image/png' })
        .attach('f', randomData(100_000), { filename: 'b.exe', contentType: 'application/x-msdownload' })
        .expect(200);
      expect(res.body.files.map((f: any) => [f.originalname, f.size, f.storage])).toEqual([['a.png', 1000, 'disk']]);
      expect(handed).toEqual(['a.png']); // the engine never saw b.exe
      expect(bytesRead).toEqual({ 'a.png': 1000 });
      expect(named).toEqual(['a.png']); // no name was ever chosen for it
      await eventually(() => expect(own.files()).toEqual([])); // temporary file removed after the response
      await new Promise((r) => setTimeout(r, 50)); // let the watcher deliver the last events
      expect(created.length).toBeGreaterThan(0); // the watcher works: it saw a.png's file come and go
      expect(created.every((name) => name.startsWith('a.png-'))).toBe(true);
    } finally {
      watcher.close();
      own.remove();
    }
  });

  test('fileFilter (async) errors fail the request with that error and remove stored files', async () => {
    const filtered = spool({
      threshold: 0,
      rollover: diskEngine({ directory: dir.path }),
      fileFilter: async (_req, file) => {
        await new Promise((r) => setTimeout(r, 5));
        if (file.originalname === 'bad') throw Object.assign(new Error('nope'), { status: 422, code: 'BAD_FILE' });
        return true;
      },
    });
    const before = dir.files().length;
    const res = await request(echoApp(filtered.any()))
      .post('/upload')
      .attach('f', Buffer.alloc(5000), 'good')
      .attach('f', Buffer.alloc(5000), 'bad');
    expect(res.status).toBe(422);
    expect(res.body.error.code).toBe('BAD_FILE');
    expect(dir.files().length).toBe(before);
  });

  test('temporary files are removed when the response ends unless kept', async () => {
    const tmp = spool({ threshold: 0, rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }) });
    const before = dir.files().length;
    const app = echoApp(tmp.any(), (req: any, _res, next) => {
      req.files[1].keep();
      next();
    });
    const res = await request(app).post('/upload').attach('f', Buffer.from('one'), '1').attach('f', Buffer.from('two'), '2').expect(200);
    await eventually(() => expect(dir.files().length).toBe(before + 1));
    expect(dir.files()).toContain(res.body.files[1].filename);
  });
});
