// The demo's API and its file list against the resumable endpoint and its own caps (found by a hostile review).
import { createHash, randomBytes } from 'node:crypto';
import request from 'supertest';
import { createDemoApp, type DemoApp } from '../examples/app';
import { ConfigError, loadConfig } from '../examples/config';
import { tempDir } from './helpers/app';

const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const TUS = { 'Tus-Resumable': '1.0.0' };
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

function binary(res: request.Response, done: (err: Error | null, body: Buffer) => void): void {
  const stream = res as unknown as NodeJS.ReadableStream;
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.on('end', () => done(null, Buffer.concat(chunks)));
}

let dir: ReturnType<typeof tempDir>;
let demo: DemoApp;
function make(env: Record<string, string> = {}): DemoApp {
  demo = createDemoApp(loadConfig({ UPLOAD_DIR: dir.path, SPOOL_THRESHOLD: '64KiB', MAX_FILE_SIZE: '512KiB', ...env }), { log: () => undefined });
  return demo;
}
beforeEach(() => {
  dir = tempDir('demo-api-');
});
afterEach(async () => {
  await demo?.close().catch(() => undefined);
  dir.remove();
});

test('every file GET /api/files lists can be downloaded: a tus DELETE of a completed upload must not leave a listed file without bytes', async () => {
  make();
  const data = randomBytes(100 * KiB);
  const created = await request(demo.app).post('/uploads/').set(TUS).set('Upload-Length', String(data.length))
    .set('Upload-Metadata', `filename ${b64('report.pdf')}`).set('Content-Type', 'application/offset+octet-stream').send(data).expect(201);
  const id = created.headers['spool-file-id'];
  const url = new URL(created.headers.location, 'http://demo').pathname;
  expect(id).toEqual(expect.any(String));
  // tus termination on the completed upload (what tus-js-client's abort(true) / terminate() send)
  const del = await request(demo.app).delete(url).set(TUS);
  const listed = (await request(demo.app).get('/api/files')).body.files.map((f: { id: string }) => f.id);
  const download = await request(demo.app).get(`/api/files/${id}`).buffer(true).parse(binary);
  // The demo keeps completed uploads in its list (terminateCompleted: false): the termination is refused.
  expect({ tusDelete: del.status, listed: listed.includes(id), download: download.status }).toEqual({ tusDelete: 400, listed: true, download: 200 });
  expect(sha256(download.body)).toBe(sha256(data));
});

test('MEMORY_STORE_CAP: making room evicts older files, never one the 201 names; a request whose memory files together pass the cap is refused', async () => {
  make({ SPOOL_THRESHOLD: '64KiB', MEMORY_STORE_CAP: '150KiB', MAX_FILES: '5' });
  const older = await request(demo.app).post('/api/files').attach('f', randomBytes(60 * KiB), 'older.bin').expect(201);
  const a = randomBytes(60 * KiB);
  const b = randomBytes(60 * KiB);
  const res = await request(demo.app).post('/api/files').attach('f', a, 'a.bin').attach('f', b, 'b.bin');
  expect(res.status).toBe(201);
  const answered = (res.body.files as { id: string }[]).map((f) => f.id);
  expect(answered).toHaveLength(2);
  for (const [id, data] of [[answered[0], a], [answered[1], b]] as const) {
    const got = await request(demo.app).get(`/api/files/${id}`).buffer(true).parse(binary);
    expect({ status: got.status, sha: sha256(got.body) }).toEqual({ status: 200, sha: sha256(data) });
  }
  expect((await request(demo.app).get(`/api/files/${older.body.files[0].id}`)).status).toBe(404); // evicted
  // Together past the cap: refused, nothing kept.
  const over = await request(demo.app).post('/api/files').attach('f', a, 'a.bin').attach('f', b, 'b.bin').attach('f', randomBytes(60 * KiB), 'c.bin');
  expect({ status: over.status, code: over.body.error?.code }).toEqual({ status: 507, code: 'MEMORY_STORE_FULL' });
  expect(((await request(demo.app).get('/api/files')).body.files as { id: string }[]).map((f) => f.id).sort()).toEqual([...answered].sort());
});

test('tus concatenation: partial uploads are not listed as files; the final one is, and downloads byte-exact', async () => {
  make();
  const p1 = randomBytes(30 * KiB);
  const p2 = randomBytes(20 * KiB);
  const urls: string[] = [];
  for (const p of [p1, p2]) {
    const c = await request(demo.app).post('/uploads/').set(TUS).set('Upload-Concat', 'partial').set('Upload-Length', String(p.length))
      .set('Content-Type', 'application/offset+octet-stream').send(p).expect(201);
    urls.push(new URL(c.headers.location, 'http://demo').pathname);
  }
  const final = await request(demo.app).post('/uploads/').set(TUS).set('Upload-Concat', `final;${urls.join(' ')}`)
    .set('Upload-Metadata', `filename ${b64('joined.bin')}`).expect(201);
  const { files } = (await request(demo.app).get('/api/files')).body as { files: { id: string; originalname: string; sha256: string }[] };
  expect(files.map((f) => f.originalname)).toEqual(['joined.bin']);
  const res = await request(demo.app).get(`/api/files/${final.headers['spool-file-id'] ?? files[0].id}`).buffer(true).parse(binary).expect(200);
  expect(sha256(res.body)).toBe(sha256(Buffer.concat([p1, p2])));
});

test('tus concatenation-unfinished: once the final is complete and listed, terminating one of its partials leaves the listed final intact', async () => {
  make();
  const p1 = randomBytes(30 * KiB);
  const p2 = randomBytes(20 * KiB);
  const c1 = await request(demo.app).post('/uploads/').set(TUS).set('Upload-Concat', 'partial').set('Upload-Length', String(p1.length))
    .set('Content-Type', 'application/offset+octet-stream').send(p1.subarray(0, 10 * KiB)).expect(201);
  const c2 = await request(demo.app).post('/uploads/').set(TUS).set('Upload-Concat', 'partial').set('Upload-Length', String(p2.length))
    .set('Content-Type', 'application/offset+octet-stream').send(p2).expect(201);
  const u1 = new URL(c1.headers.location, 'http://demo').pathname;
  const u2 = new URL(c2.headers.location, 'http://demo').pathname;
  await request(demo.app).post('/uploads/').set(TUS).set('Upload-Concat', `final;${u1} ${u2}`)
    .set('Upload-Metadata', `filename ${b64('pending-final.bin')}`).expect(201);
  await request(demo.app).patch(u1).set(TUS).set('Content-Type', 'application/offset+octet-stream').set('Upload-Offset', String(10 * KiB))
    .send(p1.subarray(10 * KiB)).expect(204);
  // wait for the final to be assembled and listed
  let files: { id: string; originalname: string }[] = [];
  for (let i = 0; i < 50 && files.length === 0; i++) {
    files = (await request(demo.app).get('/api/files')).body.files;
    if (files.length === 0) await new Promise((r) => setTimeout(r, 50));
  }
  expect(files.map((f) => f.originalname)).toEqual(['pending-final.bin']);
  await request(demo.app).delete(u1).set(TUS);
  const res = await request(demo.app).get(`/api/files/${files[0].id}`).buffer(true).parse(binary);
  expect(res.status).toBe(200);
  expect(sha256(res.body)).toBe(sha256(Buffer.concat([p1, p2])));
});

test('config: a MEMORY_BUDGET the library refuses is reported by loadConfig as MEMORY_BUDGET (README: "checked at start ... a message naming it")', () => {
  let thrown: unknown;
  try {
    loadConfig({ UPLOAD_DIR: '/tmp/x', MEMORY_BUDGET: '100KB' });
  } catch (err) {
    thrown = err;
  }
  // (not a TypeError about `memoryBudget` from the library, an option name the user never set)
  expect(thrown).toBeInstanceOf(ConfigError);
  expect(String((thrown as Error).message)).toContain('MEMORY_BUDGET');
});
