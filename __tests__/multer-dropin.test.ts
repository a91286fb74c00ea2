import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import express from 'express';
import request from 'supertest';
import { diskEngine, ERROR_CODES, memoryEngine, spool, SpoolError, type SpoolErrorCode } from '../lib';
import { echoApp, tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';
/* eslint-disable @typescript-eslint/no-require-imports, @typescript-eslint/no-explicit-any */
const multer = require('multer');

// What a multer app meets when it moves over: options checked the same way, and the parser's internals
// checked when the middleware is created rather than on the first request.

const root = join(__dirname, '..');

describe('limits: unknown keys are refused like unknown options', () => {
  test.each(['fileSzie', 'file_size', 'maxFileSize', 'fieldNestingDepth', 'fieldArrayIndexLimit'])('limits.%s', (key) => {
    expect(() => spool({ limits: { [key]: 1 } as never })).toThrow(new TypeError(`Unknown option \`limits.${key}\``));
  });

  test.each(['fieldNestingDepth', 'fieldArrayIndexLimit'])("multer 2's limits.%s is refused, not ignored: at spool(), and from a limits function (500, the request not parsed)", async (key) => {
    expect(() => spool({ limits: { fileSize: '1MiB', [key]: 10 } as never })).toThrow(new TypeError(`Unknown option \`limits.${key}\``));
    let parsed = false;
    const app = echoApp(spool({ storage: memoryEngine(), limits: () => ({ [key]: 10 }) as never }).any(), (_req, _res, next) => {
      parsed = true;
      next();
    });
    const res = await request(app).post('/upload').field('a', '1');
    expect(res.status).toBe(500);
    expect(res.body.error.message).toBe(`Unknown option \`limits.${key}\``);
    expect(parsed).toBe(false);
  });

  test('the top-level message has the same shape', () => {
    expect(() => spool({ destination: 'uploads/' } as never)).toThrow(new TypeError('Unknown option `destination`'));
  });

  test('every documented limit is still accepted', () => {
    expect(() =>
      spool({ limits: { fileSize: '1MiB', files: 1, fields: 1, fieldSize: 1, fieldNameSize: 1, parts: 1, headerPairs: 1 } }),
    ).not.toThrow();
  });
});

describe('@fastify/busboy: pinned, and its internals checked at start-up', () => {
  test('package.json pins the exact installed version, and the lockfile agrees', () => {
    const installed = JSON.parse(readFileSync(join(root, 'node_modules/@fastify/busboy/package.json'), 'utf8')).version;
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
    expect(pkg.dependencies['@fastify/busboy']).toBe(installed);
    expect(lock.packages[''].dependencies['@fastify/busboy']).toBe(installed);
    expect(lock.packages['node_modules/@fastify/busboy'].version).toBe(installed);
  });

  /** Loads the library against a stand-in for @fastify/busboy's Dicer (the part the reader builds on). */
  function spoolWith(FakeDicer: unknown): typeof spool {
    let isolated: typeof spool | undefined;
    jest.isolateModules(() => {
      jest.doMock('@fastify/busboy', () => ({ Dicer: FakeDicer }));
      isolated = require('../lib').spool; // eslint-disable-line @typescript-eslint/no-require-imports
    });
    jest.dontMock('@fastify/busboy');
    return isolated!;
  }

  test('a version without Dicer fails when the middleware is created', () => {
    expect(() => spoolWith(undefined)()).toThrow(/unsupported @fastify\/busboy version \(no Dicer export\)/);
  });

  test('a version whose Dicer no longer reports parts fails the self-test', () => {
    class SilentDicer extends Writable {
      override _write(_chunk: Buffer, _encoding: string, callback: () => void) {
        callback();
      }
    }
    expect(() => spoolWith(SilentDicer)()).toThrow(/unsupported @fastify\/busboy version \(self-test saw bytes:undefined\)/);
  });

  test("a version whose Dicer no longer puts a file's bytes in its part stream fails the self-test", () => {
    // Parts and headers as before, but the bytes go elsewhere: every file would arrive empty.
    const { Dicer } = jest.requireActual('@fastify/busboy');
    class ElsewhereDicer extends Dicer {
      constructor(config: object) {
        super(config);
        this.on('part', (part: { push: (chunk: unknown) => boolean }) => {
          const push = part.push.bind(part);
          part.push = (chunk: unknown) => (chunk === null ? push(null) : true);
        });
      }
    }
    expect(() => spoolWith(ElsewhereDicer)()).toThrow(/unsupported @fastify\/busboy version \(self-test saw field:t=,file:f:b,bytes:null\)/);
  });

  test('the installed version passes', () => {
    expect(() => spool()).not.toThrow();
  });
});

describe("the README's migration guide, run", () => {
  // The examples are read from the README itself, so the guide cannot drift from what is tested.
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Moving from multer'), readme.indexOf("### Both ways with multer's engines"));
  const line = (pattern: RegExp) => {
    const match = pattern.exec(section);
    if (!match) throw new Error(`README migration guide: no line matching ${pattern}`);
    return match[1];
  };
  const multerLine = line(/^-const upload = (multer\(.*\));$/m);
  // The migration changes only the import: `multer` is then express-spool's `spool`.
  const spoolImport = line(/^\+(import .* from 'express-spool';)$/m);
  const spoolLine = line(/^\+const upload = (multer\(.*\));$/m);
  const optInLine = line(/^const upload = (spool\(\{ threshold.*\));$/m);

  const dirs = [tempDir('readme-multer-'), tempDir('readme-ours-'), tempDir('readme-spool-')];
  afterAll(() => dirs.forEach((d) => d.remove()));
  // 'uploads/' in the README becomes a temporary directory of the test.
  const build = (code: string, dir: string, ours = false) =>
    new Function('multer', 'spool', 'diskEngine', `return ${code.replace(/'uploads\/'/g, JSON.stringify(`${dir}/`))}`)(ours ? spool : multer, spool, diskEngine);

  test('the migration is the import alone: the same options line under both', () => {
    expect(spoolImport).toBe("import { spool as multer } from 'express-spool';");
    expect(spoolLine).toBe(multerLine);
  });

  const small = randomData(100);
  const large = randomData(2 * 1024 * 1024);

  /** The guide's routes on one app; answers what each file looks like and whether its bytes are where it says. */
  async function run(upload: any, send: (agent: request.Agent) => request.Test) {
    let error: any;
    const app = express();
    const describeFile = (f: any) => ({
      fieldname: f.fieldname, originalname: f.originalname, encoding: f.encoding, mimetype: f.mimetype, size: f.size,
      destination: f.destination, hasPath: typeof f.path === 'string', hasBuffer: Buffer.isBuffer(f.buffer),
      bytes: sha256(f.path ? readFileSync(f.path) : f.buffer),
    });
    app.post('/profile', upload.single('avatar'), (req: any, res) => res.json({ file: describeFile(req.file), body: { ...req.body } }));
    app.post('/photos', upload.array('photos', 12), (req: any, res) => res.json({ files: req.files.map(describeFile), body: { ...req.body } }));
    app.use((err: any, _req: any, res: any, _next: any) => {
      error = err;
      res.status(413).json({});
    });
    const res = await send(request.agent(app));
    return { status: res.status, body: res.body, error };
  }

  const photos = (agent: request.Agent) =>
    agent.post('/photos').field('album', 'holiday').field('tags[]', 'sea').attach('photos', small, 'small.jpg').attach('photos', large, 'large.jpg');

  test('the one-line migration keeps multer’s dest semantics: every file on disk with a path', async () => {
    const [theirs, ours] = await Promise.all([run(build(multerLine, dirs[0].path), photos), run(build(spoolLine, dirs[1].path, true), photos)]);
    expect(theirs.status).toBe(200);
    expect(ours.status).toBe(200);
    const sameDir = (files: any[], dir: string) => files.map((f) => ({ ...f, destination: f.destination === `${dir}/` || f.destination === dir }));
    expect(sameDir(ours.body.files, dirs[1].path)).toEqual(sameDir(theirs.body.files, dirs[0].path));
    expect(ours.body.files.map((f: any) => [f.hasPath, f.bytes])).toEqual([[true, sha256(small)], [true, sha256(large)]]);
    expect(ours.body.body).toEqual(theirs.body.body);
    expect(dirs[1].files()).toHaveLength(2);
  });

  test('single(): the same file and body', async () => {
    const send = (agent: request.Agent) => agent.post('/profile').field('name', 'Ada').attach('avatar', small, 'me.png');
    const [theirs, ours] = await Promise.all([run(build(multerLine, dirs[0].path), send), run(build(spoolLine, dirs[1].path, true), send)]);
    expect({ ...ours.body.file, destination: undefined }).toEqual({ ...theirs.body.file, destination: undefined });
    expect(ours.body.body).toEqual({ name: 'Ada' });
  });

  test('its limit: the same error, by code and by name', async () => {
    const send = (agent: request.Agent) => agent.post('/photos').attach('photos', randomData(10 * 1024 * 1024 + 1), 'huge.bin');
    const [theirs, ours] = await Promise.all([run(build(multerLine, dirs[0].path), send), run(build(spoolLine, dirs[1].path, true), send)]);
    expect(theirs.error).toMatchObject({ name: 'MulterError', code: 'LIMIT_FILE_SIZE' });
    expect(ours.error).toMatchObject({ name: theirs.error.name, code: theirs.error.code, status: 413 });
  });

  test('the spool opt-in: small files in memory without a path, larger ones on disk', async () => {
    const res = await run(build(optInLine, dirs[2].path), photos);
    expect(res.status).toBe(200);
    expect(res.body.files.map((f: any) => [f.originalname, f.hasBuffer, f.hasPath, f.bytes])).toEqual([
      ['small.jpg', true, false, sha256(small)],
      ['large.jpg', false, true, sha256(large)],
    ]);
  });
});

describe('disk files report destination and path as multer does', () => {
  test.each([
    ['a relative directory with a trailing slash', (dir: string) => `${relative(process.cwd(), dir)}/`],
    ['a relative directory', (dir: string) => relative(process.cwd(), dir)],
    ['an absolute directory', (dir: string) => dir],
  ])('%s: the same destination string, path = join(destination, filename), the bytes there', async (_label, form) => {
    const dirs = [tempDir('paths-multer-'), tempDir('paths-ours-')];
    try {
      const data = randomData(3000);
      const shape = async (middleware: express.RequestHandler, dir: string) => {
        const app = express();
        app.post('/', middleware, (req: any, res) => res.json({ destination: req.file.destination, path: req.file.path, filename: req.file.filename }));
        const res = await request(app).post('/').attach('f', data, 'a.bin');
        expect(res.status).toBe(200);
        const { destination, path, filename } = res.body;
        expect(destination).toBe(form(dir));
        expect(path).toBe(join(destination, filename));
        expect(sha256(readFileSync(path))).toBe(sha256(data)); // relative to the working directory, as multer's
      };
      await shape(multer({ storage: multer.diskStorage({ destination: form(dirs[0].path) }) }).single('f'), dirs[0].path);
      await shape(spool({ storage: diskEngine({ directory: form(dirs[1].path) }) }).single('f'), dirs[1].path);
    } finally {
      dirs.forEach((d) => d.remove());
    }
  });
});

describe("multer's own options, taken as they are", () => {
  test("`dest`: every file on disk in that directory, kept, with multer's fields; the same as multer({ dest })", async () => {
    const dirs = [tempDir('dest-multer-'), tempDir('dest-ours-')];
    try {
      const data = randomData(3000);
      const shape = async (middleware: express.RequestHandler) => {
        const app = express();
        app.post('/', middleware, (req: any, res) => res.json({ ...req.file, sha: sha256(readFileSync(req.file.path)) }));
        const res = await request(app).post('/').attach('f', data, 'a.bin');
        expect(res.status).toBe(200);
        const { fieldname, originalname, size, destination, path, filename, sha } = res.body;
        return { fieldname, originalname, size, relativePath: relative(destination, path) === filename, sha };
      };
      const theirs = await shape(multer({ dest: dirs[0].path }).single('f'));
      const ours = await shape(spool({ dest: dirs[1].path }).single('f'));
      expect(ours).toEqual(theirs);
      expect(ours.sha).toBe(sha256(data));
      await new Promise((r) => setTimeout(r, 50)); // after the response: still there (persistent, as multer's)
      expect(dirs[1].files()).toHaveLength(1);
    } finally {
      dirs.forEach((d) => d.remove());
    }
  });

  test("`dest` with multer's precedence: `storage` wins over it, an empty one is no `dest`, a function picks the directory per file", async () => {
    const dir = tempDir('dest-precedence-');
    try {
      const kind = async (upload: any) => {
        const app = express();
        app.post('/', upload.single('f'), (req: any, res) => res.json({ storage: req.file.storage, destination: req.file.destination, size: req.file.size }));
        const res = await request(app).post('/').attach('f', randomData(100), 'a.bin');
        expect(res.status).toBe(200);
        return res.body;
      };
      expect(await kind(spool({ dest: dir.path, storage: memoryEngine() }))).toEqual({ storage: 'memory', size: 100 }); // multer: storage wins
      expect((await kind(spool({ dest: '' }))).storage).toBe('memory'); // no dest: the default spool keeps 100 bytes in memory
      expect(await kind(spool({ dest: (_req: unknown, _file: unknown, cb: (e: null, d: string) => void) => cb(null, dir.path) }))).toEqual({ storage: 'disk', destination: dir.path, size: 100 });
      expect(dir.files()).toHaveLength(1); // only the function's file: the memory ones never touched the directory
    } finally {
      dir.remove();
    }
  });

  test('`storage`: a multer StorageEngine is taken as it is (wrapped by fromMulterStorage), files and cleanup included', async () => {
    const dir = tempDir('storage-multer-');
    try {
      const upload = spool({ storage: multer.diskStorage({ destination: dir.path }), limits: { files: 1 } });
      const app = express();
      app.post('/', upload.any(), (req: any, res) => res.json(req.files.map((f: any) => ({ size: f.size, sha: sha256(readFileSync(f.path)) }))));
      app.use((err: any, _req: any, res: any, _next: any) => res.status(err.status ?? 500).json({ code: err.code }));
      const data = randomData(5000);
      const ok = await request(app).post('/').attach('f', data, 'a.bin');
      expect([ok.status, ok.body]).toEqual([200, [{ size: 5000, sha: sha256(data) }]]);
      expect(dir.files()).toHaveLength(1);
      // A limit past the first file fails the request: what the multer engine stored for it is removed.
      const refused = await request(app).post('/').attach('f', data, 'a.bin').attach('g', data, 'b.bin');
      expect([refused.status, refused.body.code]).toEqual([413, 'LIMIT_FILE_COUNT']);
      expect(dir.files()).toHaveLength(1);
    } finally {
      dir.remove();
    }
  });
});

describe("multer's statics on spool: MulterError, diskStorage, memoryStorage (an app migrated by its import alone uses them)", () => {
  const dirs = [tempDir('statics-multer-'), tempDir('statics-ours-')];
  afterAll(() => dirs.forEach((d) => d.remove()));

  /** multer's README error handler and a fileFilter that refuses with `new multer.MulterError(...)`, on either package. */
  async function run(m: any, dir: string) {
    const app = express();
    const upload = m({
      storage: m.diskStorage({ destination: dir, filename: (_req: unknown, file: any, cb: any) => cb(null, `kept-${file.originalname}`) }),
      limits: { fileSize: 1000 },
      fileFilter: (_req: unknown, file: any, cb: any) => (file.originalname === 'bad.txt' ? cb(new m.MulterError('LIMIT_UNEXPECTED_FILE', file.fieldname)) : cb(null, true)),
    });
    app.post('/disk', upload.single('f'), (req: any, res) => res.json({ path: relative(dir, req.file.path), size: req.file.size }));
    app.post('/memory', m({ storage: m.memoryStorage() }).single('f'), (req: any, res) => res.json({ buffer: req.file.buffer.toString(), hasPath: 'path' in req.file && req.file.path !== undefined }));
    app.use((err: any, _req: any, res: any, _next: any) => {
      if (err instanceof m.MulterError) return res.status(400).json({ multer: true, code: err.code, field: err.field });
      res.status(500).json({ multer: false });
    });
    const agent = request(app);
    return {
      stored: (await agent.post('/disk').attach('f', Buffer.from('hello'), 'a.txt')).body,
      tooLarge: (await agent.post('/disk').attach('f', Buffer.alloc(2000), 'big.bin')).body,
      refused: (await agent.post('/disk').attach('f', Buffer.from('x'), 'bad.txt')).body,
      memory: (await agent.post('/memory').attach('f', Buffer.from('in memory'), 'm.txt')).body,
      left: readdirSync(dir).sort(),
    };
  }

  test('the same answers, files and error handling as multer', async () => {
    const theirs = await run(multer, dirs[0].path);
    const ours = await run(spool, dirs[1].path);
    expect(theirs).toEqual({
      stored: { path: 'kept-a.txt', size: 5 },
      tooLarge: { multer: true, code: 'LIMIT_FILE_SIZE', field: 'f' },
      refused: { multer: true, code: 'LIMIT_UNEXPECTED_FILE', field: 'f' },
      memory: { buffer: 'in memory', hasPath: false },
      left: ['kept-a.txt'],
    });
    expect(ours).toEqual(theirs);
    expect(readFileSync(join(dirs[1].path, 'kept-a.txt'), 'utf8')).toBe('hello');
  });

  test("MulterError: built as multer's (any code, field, filename, message), and every SpoolError of one of multer's codes is one", () => {
    for (const code of ['LIMIT_FILE_COUNT', 'LIMIT_UNEXPECTED_FILE', 'LIMIT_FIELD_NESTING', 'FILE_REJECTED']) {
      const theirs = new multer.MulterError(code, 'photos', 'a.png');
      const ours = new spool.MulterError(code, 'photos', 'a.png');
      expect({ ...ours, message: ours.message, name: ours.name }).toEqual({ ...theirs, message: theirs.message, name: theirs.name });
      expect(ours).toBeInstanceOf(spool.MulterError);
      expect(ours).toBeInstanceOf(Error);
    }
    expect(new spool.MulterError('FILE_REJECTED').message).toBe('Unknown error: FILE_REJECTED');
    // Every code express-spool raises: a MulterError exactly when it is raised for the condition multer raises it
    // for (its `name` is 'MulterError'), and each of those is a code multer has. (INVALID_FIELD_NAME is multer's
    // too, for another condition: express-spool refuses `__proto__` segments, which multer stores.)
    for (const code of Object.keys(ERROR_CODES) as SpoolErrorCode[]) {
      const err = new SpoolError(code);
      expect({ code, is: err instanceof spool.MulterError }).toEqual({ code, is: err.name === 'MulterError' });
      if (err.name === 'MulterError') expect(new multer.MulterError(code).message).toBe(err.message);
    }
    expect(new SpoolError('INVALID_FIELD_NAME') instanceof spool.MulterError).toBe(false);
    expect(new Error('x') instanceof spool.MulterError).toBe(false);
  });

  test('diskStorage refuses an option it would otherwise drop (multer\'s flush)', () => {
    expect(() => spool.diskStorage({ destination: dirs[1].path, flush: true } as never)).toThrow(/flush/);
  });
});
