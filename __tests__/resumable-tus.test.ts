import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { OCTETS, request, startResumable, TUS, tusUpload, type ResumableServer } from './helpers/resumable';

const MiB = 1024 * 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('resumable: tus 1.0 with tus-js-client', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable();
  });
  afterEach(() => srv.close());

  test.each([0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1])('%i bytes arrive byte-exact (chunked at 1 MiB), onComplete gets the file', async (size) => {
    const data = randomBytes(size);
    const { url } = await tusUpload(data, {
      endpoint: srv.endpoint,
      chunkSize: MiB,
      metadata: { filename: 'photo.jpg', filetype: 'image/jpeg' },
    });
    expect(url).toMatch(/\/files\/[A-Za-z0-9_-]+$/);
    expect(srv.completed).toHaveLength(1);
    const [done] = srv.completed;
    expect(done.size).toBe(size);
    expect(done.sha256).toBe(sha(data));
    expect(done.readBack).toBe(sha(data));
    expect(done.file.originalname).toBe('photo.jpg');
    expect(done.file.mimetype).toBe('image/jpeg');
    expect(done.file.storage).toBe('disk');
    expect(existsSync(done.file.path!)).toBe(true);
    const head = await request(url, 'HEAD', TUS);
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe(String(size));
    expect(head.headers['upload-length']).toBe(String(size));
    await done.file.remove();
    expect(srv.dir.files()).toEqual([]);
  });

  test('creation-with-upload and deferred length', async () => {
    const data = randomBytes(3 * MiB + 17);
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: MiB, uploadDataDuringCreation: true });
    await tusUpload(data, { endpoint: srv.endpoint, chunkSize: MiB, uploadLengthDeferred: true });
    expect(srv.completed.map((c) => c.sha256)).toEqual([sha(data), sha(data)]);
  });

  test('concatenation: parallelUploads joins partial uploads into one final upload', async () => {
    const data = randomBytes(4 * MiB + 3);
    await tusUpload(data, { endpoint: srv.endpoint, parallelUploads: 3, metadata: { filename: 'joined.bin' } });
    // Partial uploads are pieces, not files: only the final one reaches onComplete.
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].sha256).toBe(sha(data));
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(srv.completed[0].file.originalname).toBe('joined.bin');
  });

  test('OPTIONS announces version, extensions, max size and checksum algorithms', async () => {
    const res = await request(srv.endpoint, 'OPTIONS', {});
    expect(res.status).toBe(204);
    expect(res.headers['tus-version']).toBe('1.0.0');
    expect(String(res.headers['tus-extension']).split(',')).toEqual(
      expect.arrayContaining(['creation', 'creation-with-upload', 'creation-defer-length', 'termination', 'expiration', 'checksum', 'concatenation', 'concatenation-unfinished']),
    );
    expect(res.headers['tus-max-size']).toBe(String(1024 ** 3));
    expect(String(res.headers['tus-checksum-algorithm']).split(',')).toEqual(expect.arrayContaining(['sha1', 'sha256']));
  });
});

describe('resumable: tus 1.0 statuses (raw HTTP)', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ limits: { fileSize: 1000 } });
  });
  afterEach(() => srv.close());

  async function create(length: number, headers: Record<string, string> = {}) {
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': length, ...headers });
    expect(res.status).toBe(201);
    return srv.url + res.headers.location!;
  }

  test('412 without or with another Tus-Resumable, and Tus-Version in the answer', async () => {
    const none = await request(srv.endpoint, 'POST', { 'Upload-Length': 5 });
    expect(none.status).toBe(412);
    const other = await request(srv.endpoint, 'POST', { 'Tus-Resumable': '0.2.2', 'Upload-Length': 5 });
    expect(other.status).toBe(412);
    expect(other.headers['tus-version']).toBe('1.0.0');
  });

  test('409 on a wrong Upload-Offset; the offset is unchanged', async () => {
    const url = await create(10);
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3 }, Buffer.from('abc'));
    expect(res.status).toBe(409);
    expect(res.headers['upload-offset']).toBe('0');
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe('0');
  });

  test('415 on a PATCH that is not application/offset+octet-stream', async () => {
    const url = await create(10);
    const res = await request(url, 'PATCH', { ...TUS, 'Content-Type': 'text/plain', 'Upload-Offset': 0 }, Buffer.from('abc'));
    expect(res.status).toBe(415);
  });

  test('413 past limits.fileSize, at creation and when a deferred length is declared', async () => {
    expect((await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 1001 })).status).toBe(413);
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Defer-Length': 1 });
    const url = srv.url + res.headers.location!;
    const patch = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Length': 5000 }, Buffer.from('abc'));
    expect(patch.status).toBe(413);
  });

  test('more bytes than Upload-Length: 400 INCONSISTENT_LENGTH, nothing of the body stored (more in resumable-overrun)', async () => {
    const url = await create(5);
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abcdefgh'));
    expect(res.status).toBe(400);
    expect(res.body).toMatch(/Upload-Length/);
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe('0');
  });

  test('checksum: sha1 and sha256 accepted; a mismatch is 460 and the chunk is discarded', async () => {
    const url = await create(6);
    const b64 = (alg: string, data: string) => createHash(alg).update(data).digest('base64');
    const ok = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': `sha1 ${b64('sha1', 'abc')}` }, Buffer.from('abc'));
    expect(ok.status).toBe(204);
    expect(ok.headers['upload-offset']).toBe('3');
    const bad = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `sha256 ${b64('sha256', 'xyz')}` }, Buffer.from('def'));
    expect(bad.status).toBe(460);
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe('3');
    const unknown = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `crc32 AAAA` }, Buffer.from('def'));
    expect(unknown.status).toBe(400);
    const good = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 3, 'Upload-Checksum': `sha256 ${b64('sha256', 'def')}` }, Buffer.from('def'));
    expect(good.status).toBe(204);
    expect(srv.completed[0].sha256).toBe(sha(Buffer.from('abcdef')));
    expect(srv.completed[0].readBack).toBe(sha(Buffer.from('abcdef')));
  });

  test('termination: DELETE removes bytes and state; then 404', async () => {
    const url = await create(10);
    await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
    expect(srv.dir.files().length).toBe(2);
    expect((await request(url, 'DELETE', TUS)).status).toBe(204);
    expect(srv.dir.files()).toEqual([]);
    expect((await request(url, 'HEAD', TUS)).status).toBe(404);
  });

  test('metadata is echoed on HEAD; fileFilter sees filename/filetype before any byte', async () => {
    await srv.close();
    srv = await startResumable({ fileFilter: (_req, file) => file.mimetype.startsWith('image/') });
    const meta = (name: string, type: string) => `filename ${Buffer.from(name).toString('base64')},filetype ${Buffer.from(type).toString('base64')},flag`;
    const refused = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 3, 'Upload-Metadata': meta('a.exe', 'application/x-msdownload') });
    expect(refused.status).toBe(400);
    expect(srv.dir.files()).toEqual([]);
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 3, 'Upload-Metadata': meta('ä.png', 'image/png') });
    expect(res.status).toBe(201);
    const head = await request(srv.url + res.headers.location!, 'HEAD', TUS);
    expect(head.headers['upload-metadata']).toBe(meta('ä.png', 'image/png'));
    expect(head.headers['cache-control']).toBe('no-store');
    expect(head.headers['upload-expires']).toBeDefined();
  });

  test('concatenation edge cases: unknown partials or non-partials refused; PATCH to a final upload is 403', async () => {
    const p1 = await create(3, { 'Upload-Concat': 'partial' });
    const p2 = await create(2, { 'Upload-Concat': 'partial' });
    const plain = await create(2);
    await request(p1, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
    const notPartial = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${p1} ${plain}` });
    expect(notPartial.status).toBe(400);
    await request(p2, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('de'));
    expect(srv.completed).toHaveLength(0);
    const unknown = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${p1} /files/nope` });
    expect(unknown.status).toBe(400);
    const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${new URL(p1).pathname} ${p2}` });
    expect(final.status).toBe(201);
    const finalUrl = srv.url + final.headers.location!;
    const head = await request(finalUrl, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe('5');
    expect(head.headers['upload-concat']).toMatch(/^final;\/files\/\S+ \/files\/\S+$/);
    expect(srv.completed[0].readBack).toBe(sha(Buffer.from('abcde')));
    expect((await request(finalUrl, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 5 }, Buffer.from('x'))).status).toBe(403);
  });
});
