// The demo server's JSON API (examples/), through supertest on the app and a real socket for shutdown.
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import request from 'supertest';
import { createDemoApp, contentDisposition, type DemoApp } from '../examples/app';
import { ConfigError, loadConfig, type DemoConfig } from '../examples/config';
import { openS3, type S3Backend } from '../examples/s3';
import { startDemoServer } from '../examples/server';
import { eventually, tempDir } from './helpers/app';
import { emptyAndDeleteBucket } from './setup/s3-env';

const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const silent = () => undefined;

/** Small limits so every branch is reached with small bodies. */
function config(dir: string, env: Record<string, string> = {}): DemoConfig {
  return loadConfig({ UPLOAD_DIR: dir, SPOOL_THRESHOLD: '64KiB', MAX_FILE_SIZE: '512KiB', MAX_FILES: '3', ...env });
}

/** supertest parser that keeps the body as a Buffer whatever its type. */
function binary(res: request.Response, done: (err: Error | null, body: Buffer) => void): void {
  const stream = res as unknown as NodeJS.ReadableStream; // in Node, superagent hands parsers the raw response
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => done(null, Buffer.concat(chunks)));
}

let dir: ReturnType<typeof tempDir>;
let demo: DemoApp;
let logs: string[];

beforeEach(() => {
  dir = tempDir('spool-demo-');
  logs = [];
  demo = createDemoApp(config(dir.path), { log: (line) => logs.push(line) });
});
afterEach(async () => {
  await demo.close();
  dir.remove();
});

describe('POST /api/files', () => {
  test('stores small files in memory and large ones on disk; 201 { files } with sha256 and one log line each', async () => {
    const small = randomBytes(10 * KiB);
    const large = randomBytes(300 * KiB);
    const res = await request(demo.app)
      .post('/api/files')
      .attach('a', small, { filename: 'small.bin', contentType: 'application/octet-stream' })
      .attach('b', large, { filename: 'large.txt', contentType: 'text/plain' })
      .expect(201);
    expect(res.body.files).toEqual([
      { id: expect.any(String), originalname: 'small.bin', size: small.length, storage: 'memory', sha256: sha256(small),
        mimetype: 'application/octet-stream', createdAt: expect.any(String) },
      { id: expect.any(String), originalname: 'large.txt', size: large.length, storage: 'disk', sha256: sha256(large),
        mimetype: 'text/plain', createdAt: expect.any(String) },
    ]);
    expect(dir.files()).toHaveLength(1); // only the disk file
    expect(logs).toEqual([
      expect.stringMatching(/^\[upload\] 10240 bytes -> memory in [\d.]+ ms \([\d.-]+ MB\/s\) "small.bin"/),
      expect.stringMatching(/^\[upload\] 307200 bytes -> disk in [\d.]+ ms \([\d.-]+ MB\/s\) "large.txt"/),
    ]);
  });

  test('LIMIT_FILE_SIZE: 413 with the JSON error shape, nothing stored or left on disk', async () => {
    const res = await request(demo.app)
      .post('/api/files')
      .attach('ok', randomBytes(100 * KiB), 'ok.bin')
      .attach('big', randomBytes(512 * KiB + 1), 'big.bin')
      .expect(413);
    expect(res.body).toEqual({ error: { code: 'LIMIT_FILE_SIZE', message: 'File too large' } });
    expect((await request(demo.app).get('/api/files')).body.files).toEqual([]);
    await eventually(() => expect(dir.files()).toEqual([]));
    expect(logs).toEqual([expect.stringMatching(/^\[upload\] failed 413 LIMIT_FILE_SIZE/)]);
  });

  test('LIMIT_FILE_COUNT: 413 when a request carries more than MAX_FILES files', async () => {
    let req = request(demo.app).post('/api/files');
    for (let i = 0; i < 4; i++) req = req.attach(`f${i}`, Buffer.from(`file ${i}`), `f${i}.txt`);
    const res = await req.expect(413);
    expect(res.body).toEqual({ error: { code: 'LIMIT_FILE_COUNT', message: 'Too many files' } });
    expect(demo.store.size).toBe(0);
  });

  test('400 NO_FILES for a multipart body without files and for a non-multipart body', async () => {
    const noFiles = await request(demo.app).post('/api/files').field('note', 'hello').expect(400);
    expect(noFiles.body.error.code).toBe('NO_FILES');
    const json = await request(demo.app).post('/api/files').send({ a: 1 }).expect(400);
    expect(json.body).toEqual({ error: { code: 'NO_FILES', message: expect.any(String) } });
  });

  test('400 MALFORMED_MULTIPART for a truncated body', async () => {
    const res = await request(demo.app)
      .post('/api/files')
      .set('Content-Type', 'multipart/form-data; boundary=xyz')
      .send('--xyz\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nno end')
      .expect(400);
    expect(res.body.error.code).toBe('MALFORMED_MULTIPART');
  });
});

describe('GET, download and DELETE', () => {
  async function upload(files: Record<string, Buffer>) {
    let req = request(demo.app).post('/api/files');
    for (const [name, data] of Object.entries(files)) req = req.attach('file', data, name);
    return (await req.expect(201)).body.files as { id: string; originalname: string; storage: string }[];
  }

  test('GET /api/files lists newest first with id, originalname, size, storage, sha256, mimetype, createdAt', async () => {
    const [first] = await upload({ 'first.bin': randomBytes(100) });
    const [second] = await upload({ 'second.bin': randomBytes(100 * KiB) });
    const res = await request(demo.app).get('/api/files').expect(200);
    expect(res.body.files.map((f: { id: string }) => f.id)).toEqual([second.id, first.id]);
    for (const file of res.body.files) {
      expect(Object.keys(file).sort()).toEqual(['createdAt', 'id', 'mimetype', 'originalname', 'sha256', 'size', 'storage']);
      expect(new Date(file.createdAt).toISOString()).toBe(file.createdAt);
    }
  });

  test('GET /api/files/:id streams byte-exact from memory and from disk, as an attachment', async () => {
    const small = randomBytes(5 * KiB);
    const large = randomBytes(200 * KiB);
    const files = await upload({ 'small.bin': small, 'large.bin': large });
    expect(files.map((f) => f.storage)).toEqual(['memory', 'disk']);
    for (const [file, data] of [[files[0], small], [files[1], large]] as const) {
      const res = await request(demo.app).get(`/api/files/${file.id}`).buffer(true).parse(binary).expect(200);
      expect(Buffer.compare(res.body, data)).toBe(0);
      expect(res.headers['content-length']).toBe(String(data.length));
      expect(res.headers['content-type']).toBe('application/octet-stream');
      expect(res.headers['content-disposition']).toBe(`attachment; filename="${file.originalname}"; filename*=UTF-8''${file.originalname}`);
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  test('a non-ASCII filename survives in filename*; the fallback is plain ASCII', async () => {
    const [file] = await upload({ 'résumé 2024 (final).pdf': Buffer.from('%PDF') });
    const res = await request(demo.app).get(`/api/files/${file.id}`).buffer(true).parse(binary).expect(200);
    expect(res.headers['content-disposition']).toBe(
      `attachment; filename="r_sum_ 2024 (final).pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024%20%28final%29.pdf`,
    );
  });

  test('DELETE removes the bytes and forgets the file; then 404 NOT_FOUND for GET and DELETE', async () => {
    const [memory, disk] = await upload({ 'm.bin': randomBytes(10), 'd.bin': randomBytes(100 * KiB) });
    expect(dir.files()).toHaveLength(1);
    await request(demo.app).delete(`/api/files/${disk.id}`).expect(204);
    expect(dir.files()).toEqual([]);
    await request(demo.app).delete(`/api/files/${memory.id}`).expect(204);
    expect(demo.store.memoryBytes).toBe(0);
    expect((await request(demo.app).get('/api/files')).body.files).toEqual([]);
    const get = await request(demo.app).get(`/api/files/${disk.id}`).expect(404);
    expect(get.body).toEqual({ error: { code: 'NOT_FOUND', message: `No stored file with id "${disk.id}"` } });
    expect((await request(demo.app).delete(`/api/files/${disk.id}`).expect(404)).body.error.code).toBe('NOT_FOUND');
  });

  test('a disk file that vanished answers a JSON error instead of a broken download', async () => {
    const [file] = await upload({ 'd.bin': randomBytes(100 * KiB) });
    for (const name of dir.files()) rmSync(path.join(dir.path, name));
    const res = await request(demo.app).get(`/api/files/${file.id}`).expect(500);
    expect(res.body).toEqual({ error: { code: 'INTERNAL', message: 'Internal server error' } });
  });

  test('unknown API routes answer 404 JSON; the page and its assets are served', async () => {
    expect((await request(demo.app).get('/api/nope').expect(404)).body.error.code).toBe('NOT_FOUND');
    const page = await request(demo.app).get('/').expect(200);
    expect(page.text).toContain('<script src="app.js"');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    await request(demo.app).get('/app.js').expect('Content-Type', /javascript/).expect(200);
    await request(demo.app).get('/style.css').expect('Content-Type', /css/).expect(200);
    const settings = await request(demo.app).get('/api/config').expect(200);
    expect(settings.body).toEqual({ threshold: 64 * KiB, memoryBudget: 64 * KiB * KiB, maxFileSize: 512 * KiB, maxFiles: 3,
      memoryStoreCap: 256 * KiB * KiB, rollover: 'disk' });
  });
});

describe('resumable uploads at /uploads/ (tus)', () => {
  const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
  const TUS = { 'Tus-Resumable': '1.0.0' };

  test('create, PATCH in pieces, complete → listed in GET /api/files beside multipart files, downloads byte-exact, DELETE removes it', async () => {
    const data = randomBytes(300 * KiB);
    const multipart = await request(demo.app).post('/api/files').attach('a', randomBytes(KiB), 'small.bin').expect(201);

    const created = await request(demo.app)
      .post('/uploads/')
      .set(TUS)
      .set('Upload-Length', String(data.length))
      .set('Upload-Metadata', `filename ${b64('résumé.pdf')},filetype ${b64('application/pdf')}`)
      .expect(201);
    const url = new URL(created.headers.location, 'http://demo').pathname;
    expect(url).toMatch(/^\/uploads\/[A-Za-z0-9_-]+$/);
    // Nothing is listed until the upload completes.
    expect((await request(demo.app).get('/api/files')).body.files).toHaveLength(1);

    const cut = 100 * KiB + 7;
    const first = await request(demo.app)
      .patch(url).set(TUS).set('Content-Type', 'application/offset+octet-stream').set('Upload-Offset', '0')
      .send(data.subarray(0, cut)).expect(204);
    expect(first.headers['upload-offset']).toBe(String(cut));
    expect(first.headers['spool-file-id']).toBeUndefined();
    // A client that lost the answer asks where to go on.
    const head = await request(demo.app).head(url).set(TUS).expect(200);
    expect(head.headers['upload-offset']).toBe(String(cut));
    const last = await request(demo.app)
      .patch(url).set(TUS).set('Content-Type', 'application/offset+octet-stream').set('Upload-Offset', String(cut))
      .send(data.subarray(cut)).expect(204);
    expect(last.headers['upload-offset']).toBe(String(data.length));
    const id = last.headers['spool-file-id'];
    expect(id).toEqual(expect.any(String));

    const { files } = (await request(demo.app).get('/api/files').expect(200)).body;
    expect(files).toEqual([
      { id, originalname: 'résumé.pdf', size: data.length, storage: 'disk', sha256: sha256(data), mimetype: 'application/pdf',
        createdAt: expect.any(String) },
      multipart.body.files[0],
    ]);
    expect(logs).toContainEqual(expect.stringMatching(new RegExp(`^\\[resumable\\] ${data.length} bytes -> disk "résumé.pdf" id=${id}$`)));

    const download = await request(demo.app).get(`/api/files/${id}`).buffer(true).parse(binary).expect(200);
    expect(download.headers['content-type']).toBe('application/pdf');
    expect(download.headers['content-disposition']).toBe(contentDisposition('résumé.pdf'));
    expect(download.body.equals(data)).toBe(true);

    // The bytes live in their own directory under UPLOAD_DIR; DELETE removes them and the tus upload.
    const resumableDir = path.join(dir.path, 'resumable');
    expect(readdirSync(resumableDir).length).toBeGreaterThan(0);
    await request(demo.app).delete(`/api/files/${id}`).expect(204);
    expect(readdirSync(resumableDir)).toEqual([]);
    await request(demo.app).head(url).set(TUS).expect(404);
    await request(demo.app).get(`/api/files/${id}`).expect(404);
  });

  test('an upload over MAX_FILE_SIZE is refused at creation; close() removes completed and unfinished uploads', async () => {
    await request(demo.app).post('/uploads/').set(TUS).set('Upload-Length', String(512 * KiB + 1)).expect(413);
    const done = randomBytes(2 * KiB);
    const complete = await request(demo.app)
      .post('/uploads/').set(TUS).set('Upload-Length', String(done.length)).set('Upload-Metadata', `filename ${b64('done.bin')}`)
      .set('Content-Type', 'application/offset+octet-stream').send(done).expect(201); // creation-with-upload
    expect(complete.headers['spool-file-id']).toEqual(expect.any(String));
    await request(demo.app).post('/uploads/').set(TUS).set('Upload-Length', '1000').set('Upload-Metadata', `filename ${b64('half.bin')}`)
      .set('Content-Type', 'application/offset+octet-stream').send(randomBytes(400)).expect(201);
    expect((await request(demo.app).get('/api/files')).body.files.map((f: { originalname: string }) => f.originalname)).toEqual(['done.bin']);
    expect(readdirSync(path.join(dir.path, 'resumable')).length).toBeGreaterThan(0);
    await demo.close();
    expect(readdirSync(path.join(dir.path, 'resumable'))).toEqual([]);
  });

  test('the page loads tus-js-client from /vendor/tus.min.js (node_modules, no build step)', async () => {
    const res = await request(demo.app).get('/vendor/tus.min.js').buffer(true).parse(binary).expect(200);
    expect(res.headers['content-type']).toMatch(/javascript/);
    expect(res.body.toString('utf8')).toContain('tus');
    const page = await request(demo.app).get('/').expect(200);
    expect(page.text).toContain('/vendor/tus.min.js');
    expect(page.text).toContain('id="resumable"');
  });
});

describe('memory store cap', () => {
  test('the oldest memory files are evicted past MEMORY_STORE_CAP; disk files stay', async () => {
    await demo.close();
    demo = createDemoApp(config(dir.path, { MEMORY_STORE_CAP: '100KiB' }), { log: (line) => logs.push(line) });
    const ids: string[] = [];
    for (const name of ['one', 'disk', 'two', 'three']) {
      const size = name === 'disk' ? 70 * KiB : 40 * KiB;
      const res = await request(demo.app).post('/api/files').attach('f', randomBytes(size), name).expect(201);
      ids.push(res.body.files[0].id);
    }
    const listed = (await request(demo.app).get('/api/files')).body.files.map((f: { originalname: string }) => f.originalname);
    expect(listed).toEqual(['three', 'two', 'disk']); // 'one' made room for 'three'
    expect(demo.store.memoryBytes).toBe(80 * KiB);
    await request(demo.app).get(`/api/files/${ids[0]}`).expect(404);
    expect(logs.filter((line) => line.startsWith('[evict]'))).toEqual([expect.stringContaining('"one"')]);
  });

  test('config refuses a threshold above the cap (such a file could never be kept)', () => {
    expect(() => config(dir.path, { SPOOL_THRESHOLD: '2MiB', MEMORY_STORE_CAP: '1MiB' })).toThrow(
      /SPOOL_THRESHOLD \(2097152 bytes\) must not exceed MEMORY_STORE_CAP \(1048576 bytes\)/,
    );
  });
});

describe('configuration', () => {
  test('defaults: threshold 1 MiB, budget 64 MiB, disk rollover in ./uploads, port 3000', () => {
    expect(loadConfig({}, '/srv/demo')).toEqual({
      host: '127.0.0.1', port: 3000, threshold: 1024 * KiB, memoryBudget: 64 * KiB * KiB, maxFileSize: 100 * KiB * KiB,
      maxFiles: 20, memoryStoreCap: 256 * KiB * KiB, uploadDir: '/srv/demo/uploads', storage: 'disk', shutdownTimeout: 10_000,
      s3: { endpoint: undefined, bucket: 'express-spool-demo', region: 'us-east-1', credentials: undefined },
    });
  });

  test('every bad variable is reported at once, by name, with what was expected', () => {
    let error: unknown;
    try {
      loadConfig({ PORT: '70000', SPOOL_THRESHOLD: '1 potato', MEMORY_BUDGET: '-1', MAX_FILE_SIZE: '0', STORAGE: 'ftp' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([
      'PORT="70000": expected an integer from 0 to 65535 (0 picks a free port)',
      'SPOOL_THRESHOLD="1 potato": expected a byte count, such as 1048576, 512KB or 1MiB',
      'MEMORY_BUDGET="-1": expected a byte count of at least 196608, such as 1048576, 512KB or 1MiB',
      'MAX_FILE_SIZE="0": expected a byte count of at least 1, such as 1048576, 512KB or 1MiB',
      "STORAGE=\"ftp\": expected 'disk' or 's3'",
    ]);
    expect((error as Error).message).toMatch(/^Invalid configuration:\n {2}- PORT=/);
  });

  test('S3 variables are checked only with STORAGE=s3', () => {
    const env = { S3_BUCKET: 'Not_A_Bucket', S3_ACCESS_KEY_ID: 'only-the-id', S3_ENDPOINT: 'localhost:9000' };
    expect(() => loadConfig(env)).not.toThrow();
    expect(() => loadConfig({ ...env, STORAGE: 's3' })).toThrow(
      /S3_ENDPOINT="localhost:9000".*\n.*S3_BUCKET="Not_A_Bucket".*\n.*S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together/,
    );
    expect(loadConfig({ STORAGE: 'S3', S3_ENDPOINT: 'http://127.0.0.1:9000', S3_ACCESS_KEY_ID: 'a', S3_SECRET_ACCESS_KEY: 'b' }).s3)
      .toEqual({ endpoint: 'http://127.0.0.1:9000', bucket: 'express-spool-demo', region: 'us-east-1',
        credentials: { accessKeyId: 'a', secretAccessKey: 'b' } });
  });
});

test('contentDisposition strips control characters and paths, and escapes what RFC 5987 does not allow', () => {
  expect(contentDisposition('a\r\nb"c%e.txt')).toBe(`attachment; filename="ab_c_e.txt"; filename*=UTF-8''ab%22c%25e.txt`);
  expect(contentDisposition('../../etc/passwd')).toBe(`attachment; filename="passwd"; filename*=UTF-8''passwd`);
  expect(contentDisposition('C:\\Users\\x\\evil.txt')).toBe(`attachment; filename="evil.txt"; filename*=UTF-8''evil.txt`);
  expect(contentDisposition("it's (1)*.txt")).toBe(`attachment; filename="it's (1)*.txt"; filename*=UTF-8''it%27s%20%281%29%2A.txt`);
  expect(contentDisposition('日本.txt')).toBe(`attachment; filename="__.txt"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt`);
  expect(contentDisposition('')).toBe(`attachment; filename="download"; filename*=UTF-8''download`);
  expect(contentDisposition('\ud800.txt')).toBe(`attachment; filename="_.txt"; filename*=UTF-8''%EF%BF%BD.txt`);
});

describe('graceful shutdown (startDemoServer on a real socket)', () => {
  /** Starts a multipart upload on a raw socket and returns a writer for the rest plus the answer. */
  function startUpload(port: number, head: Buffer) {
    const boundary = 'demo-shutdown-boundary';
    const req = http.request({
      port, host: '127.0.0.1', method: 'POST', path: '/api/files',
      headers: { 'Content-Type': `multipart/form-data; boundary=${boundary}`, 'Transfer-Encoding': 'chunked' },
    });
    const answer = new Promise<{ status: number; body: string } | Error>((resolve) => {
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', resolve);
    });
    req.write(`--${boundary}\r\nContent-Disposition: form-data; name="f"; filename="slow.bin"\r\n\r\n`);
    req.write(head);
    const finish = (tail: Buffer) => req.end(Buffer.concat([tail, Buffer.from(`\r\n--${boundary}--\r\n`)]));
    return { finish, answer };
  }

  test('in-flight uploads finish, new connections are refused, stored files are removed', async () => {
    const running = await startDemoServer(config(dir.path, { PORT: '0' }), silent);
    const { port } = running.server.address() as AddressInfo;
    const upload = startUpload(port, randomBytes(100 * KiB)); // past the threshold: a file on disk
    await eventually(() => expect(dir.files()).toHaveLength(1));

    const stopped = running.shutdown();
    await new Promise((r) => setTimeout(r, 100));
    const refused = await new Promise<Error | undefined>((resolve) => {
      http.get({ port, host: '127.0.0.1', path: '/api/files' }, () => resolve(undefined)).on('error', resolve);
    });
    expect(refused).toMatchObject({ code: 'ECONNREFUSED' });

    upload.finish(randomBytes(KiB));
    expect(await upload.answer).toMatchObject({ status: 201 });
    await stopped;
    expect(dir.files()).toEqual([]);
  });

  test('past SHUTDOWN_TIMEOUT, running uploads are aborted and their partial files removed', async () => {
    const running = await startDemoServer(config(dir.path, { PORT: '0', SHUTDOWN_TIMEOUT: '200' }), silent);
    const { port } = running.server.address() as AddressInfo;
    const upload = startUpload(port, randomBytes(100 * KiB)); // never finished
    await eventually(() => expect(dir.files()).toHaveLength(1));
    const started = Date.now();
    await running.shutdown();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(dir.files()).toEqual([]);
    // The socket was closed under it (jest's realm makes toBeInstanceOf(Error) unreliable here).
    expect(await upload.answer).toMatchObject({ code: expect.stringMatching(/^(ECONNRESET|EPIPE)$/) });
  });
});

describe('STORAGE=s3 (the S3 server of the jest global setup)', () => {
  let s3: S3Backend;
  let s3Demo: DemoApp;
  const unused = tempDir('spool-demo-s3-'); // UPLOAD_DIR is required but never written with STORAGE=s3
  const bucket = `spool-demo-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

  beforeAll(async () => {
    const env = { STORAGE: 's3', S3_BUCKET: bucket, ...pick(process.env, 'S3_ENDPOINT', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'S3_REGION') };
    const cfg = config(unused.path, env);
    s3 = await openS3(cfg.s3, silent); // creates the bucket
    s3Demo = createDemoApp(cfg, { s3, log: silent });
  }, 60_000);
  afterAll(async () => {
    await s3Demo?.close();
    if (s3) await emptyAndDeleteBucket(s3.client, bucket);
    await s3?.stop();
    unused.remove();
  });

  test('large files roll over to S3 and download byte-exact; DELETE removes the object', async () => {
    const small = randomBytes(KiB);
    const large = randomBytes(300 * KiB);
    const res = await request(s3Demo.app).post('/api/files').attach('a', small, 'a.bin').attach('b', large, 'b.bin').expect(201);
    expect(res.body.files.map((f: { storage: string }) => f.storage)).toEqual(['memory', 's3']);
    const id = res.body.files[1].id;
    const download = await request(s3Demo.app).get(`/api/files/${id}`).buffer(true).parse(binary).expect(200);
    expect(sha256(download.body)).toBe(sha256(large));
    await request(s3Demo.app).delete(`/api/files/${id}`).expect(204);
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(listed.Contents ?? []).toEqual([]);
  });

  test('resumable uploads go to the S3 resumable store and join the same list; DELETE removes the object', async () => {
    const data = randomBytes(200 * KiB);
    const tus = { 'Tus-Resumable': '1.0.0', 'Content-Type': 'application/offset+octet-stream' };
    const created = await request(s3Demo.app).post('/uploads/').set(tus).set('Upload-Length', String(data.length))
      .set('Upload-Metadata', `filename ${Buffer.from('s3.bin').toString('base64')}`).send(data.subarray(0, 50 * KiB)).expect(201);
    const url = new URL(created.headers.location, 'http://demo').pathname;
    const last = await request(s3Demo.app).patch(url).set(tus).set('Upload-Offset', String(50 * KiB)).send(data.subarray(50 * KiB)).expect(204);
    const id = last.headers['spool-file-id'];
    const { files } = (await request(s3Demo.app).get('/api/files')).body;
    expect(files[0]).toMatchObject({ id, originalname: 's3.bin', storage: 's3', size: data.length, sha256: sha256(data), mimetype: 'application/octet-stream' });
    const download = await request(s3Demo.app).get(`/api/files/${id}`).buffer(true).parse(binary).expect(200);
    expect(download.body.equals(data)).toBe(true);
    await request(s3Demo.app).delete(`/api/files/${id}`).expect(204);
    const { ListObjectsV2Command } = await import('@aws-sdk/client-s3');
    const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'resumable/' }));
    expect(listed.Contents ?? []).toEqual([]);
  });
});

function pick(env: NodeJS.ProcessEnv, ...names: string[]): Record<string, string> {
  return Object.fromEntries(names.flatMap((name) => (env[name] ? [[name, env[name] as string]] : [])));
}
