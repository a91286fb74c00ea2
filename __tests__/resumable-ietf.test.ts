import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request, startResumable, tusUpload, type ResumableServer } from './helpers/resumable';

const MiB = 1024 * 1024;
const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const sfBytes = (alg: string, data: Buffer | string) => `:${createHash(alg).update(data).digest('base64')}:`;
const V8 = { 'Upload-Draft-Interop-Version': '8' };

describe('resumable: IETF draft with tus-js-client', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable();
  });
  afterEach(() => srv.close());

  for (const protocol of ['ietf-draft-03', 'ietf-draft-05'] as const) {
    test.each([0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1])(`${protocol}: %i bytes byte-exact`, async (size) => {
      const data = randomBytes(size);
      await tusUpload(data, { endpoint: srv.endpoint, protocol, chunkSize: 2 * MiB, metadata: { filename: 'x.bin', filetype: 'application/x-test' } });
      expect(srv.completed).toHaveLength(1);
      expect(srv.completed[0].sha256).toBe(sha(data));
      expect(srv.completed[0].readBack).toBe(sha(data));
      expect(srv.completed[0].file.originalname).toBe('x.bin');
    });

    test(`${protocol}: creation with upload, and deferred length`, async () => {
      const data = randomBytes(3 * MiB + 5);
      await tusUpload(data, { endpoint: srv.endpoint, protocol, chunkSize: MiB, uploadDataDuringCreation: true });
      await tusUpload(data, { endpoint: srv.endpoint, protocol, chunkSize: MiB, uploadLengthDeferred: true });
      expect(srv.completed.map((c) => c.readBack)).toEqual([sha(data), sha(data)]);
    });
  }
});

describe('resumable: IETF draft (raw HTTP)', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ limits: { fileSize: '1MiB', appendSize: 1000 } });
  });
  afterEach(() => srv.close());

  async function create(headers: Record<string, string> = {}, body?: Buffer) {
    const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', ...headers }, body);
    expect(res.status).toBe(201);
    return { res, url: srv.url + res.headers.location! };
  }

  test('104 Upload Resumption Supported with Location and Upload-Limit before the final answer', async () => {
    const { res } = await create({ 'Content-Type': 'text/plain' }, Buffer.from('hello'));
    expect(res.interim).toHaveLength(1);
    expect(res.interim[0].status).toBe(104);
    expect(res.interim[0].headers.location).toBe(res.headers.location);
    expect(res.interim[0].headers['upload-limit']).toMatch(/max-size=1048576, max-append-size=1000, max-age=\d+/);
    expect(res.headers['upload-offset']).toBe('5');
    expect(res.headers['upload-complete']).toBe('?0');
  });

  test('HEAD: offset, completeness, length, limits, no-store; Upload-Incomplete for interop 3', async () => {
    const { url } = await create({ 'Upload-Length': '10' }, Buffer.from('abc'));
    const head = await request(url, 'HEAD', V8);
    expect(head.status).toBe(204);
    expect(head.headers).toMatchObject({ 'upload-offset': '3', 'upload-complete': '?0', 'upload-length': '10', 'cache-control': 'no-store' });
    expect(head.headers['upload-limit']).toContain('max-size=1048576');
    const v3 = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '3' });
    expect(v3.headers['upload-incomplete']).toBe('?1');
    const v6 = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '6' });
    expect(v6.headers['upload-limit']).toMatch(/expires=\d+/);
    expect((await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '99' })).status).toBe(412);
    // An sf-integer: a decimal or a hex spelling of a version we speak is not that version.
    for (const spelled of ['6.0', '0x6', '6e0', '+6']) {
      expect((await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': spelled })).status).toBe(412);
    }
  });

  test('mismatching offset: 409 problem+json with expected and provided offsets', async () => {
    const { url } = await create({}, Buffer.from('abc'));
    const res = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '7', 'Content-Type': 'application/partial-upload' }, Buffer.from('x'));
    expect(res.status).toBe(409);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({
      type: 'https://iana.org/assignments/http-problem-types#mismatching-upload-offset',
      'expected-offset': 3,
      'provided-offset': 7,
    });
  });

  test('completed upload: appending is 400 completed-upload; inconsistent length is 400', async () => {
    const { url } = await create({}, Buffer.from('abc'));
    const done = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3' }, Buffer.from('de'));
    expect(done.status).toBe(204);
    expect(done.headers['upload-complete']).toBe('?1');
    expect(done.headers['repr-digest']).toBe(`sha-256=${sfBytes('sha256', 'abcde')}`);
    expect(srv.completed[0].readBack).toBe(sha('abcde'));
    const again = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '5' }, Buffer.from('f'));
    expect(again.status).toBe(400);
    expect(JSON.parse(again.body).type).toBe('https://iana.org/assignments/http-problem-types#completed-upload');
    const second = await create({ 'Upload-Length': '4' });
    const bad = await request(second.url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '0', 'Upload-Length': '5' }, Buffer.from('abcde'));
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).type).toBe('https://iana.org/assignments/http-problem-types#inconsistent-upload-length');
  });

  test('Content-Digest is checked while streaming: a mismatch is 400 and nothing of the request is kept', async () => {
    const { url } = await create({}, Buffer.from('abc'));
    const patch = (digest: string, data: string) =>
      request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '3', 'Content-Digest': digest }, Buffer.from(data));
    const bad = await patch(`sha-256=${sfBytes('sha256', 'zzz')}`, 'def');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).code).toBe('CHECKSUM_MISMATCH');
    expect((await request(url, 'HEAD', V8)).headers['upload-offset']).toBe('3');
    const good = await patch(`sha-512=${sfBytes('sha512', 'def')}, sha-256=${sfBytes('sha256', 'def')}`, 'def');
    expect(good.status).toBe(204);
    expect(good.headers['upload-offset']).toBe('6');
  });

  test('Repr-Digest of the whole upload: checked at completion; a mismatch removes the upload', async () => {
    const ok = await create({ 'Repr-Digest': `sha-256=${sfBytes('sha256', 'abcdef')}` }, Buffer.from('abc'));
    const done = await request(ok.url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3' }, Buffer.from('def'));
    expect(done.status).toBe(204);
    const bad = await create({ 'Repr-Digest': `sha-256=${sfBytes('sha256', 'nope')}` }, Buffer.from('abc'));
    const fail = await request(bad.url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3' }, Buffer.from('def'));
    expect(fail.status).toBe(400);
    expect((await request(bad.url, 'HEAD', V8)).status).toBe(404);
    expect(srv.completed).toHaveLength(1);
  });

  test('max-append-size: a larger append is 413 with Upload-Limit, what came before it is kept byte-exact', async () => {
    const first = randomBytes(1000);
    const second = randomBytes(1001);
    const { url } = await create({}, first);
    const res = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '1000' }, second);
    expect(res.status).toBe(413);
    expect(res.headers['upload-limit']).toContain('max-append-size=1000');
    expect(JSON.parse(res.body).code).toBe('LIMIT_FILE_SIZE');
    // The earlier append is all there; of the refused one at most appendSize bytes count (none when its
    // bytes arrived in one read, as here; the README leaves it to where the body's reads fall).
    const head = await request(url, 'HEAD', V8);
    expect(head.status).toBe(204);
    expect(head.headers['upload-complete']).toBe('?0');
    let offset = Number(head.headers['upload-offset']);
    expect(offset).toBeGreaterThanOrEqual(1000);
    expect(offset).toBeLessThanOrEqual(2000);
    expect(Number(res.headers['upload-offset'])).toBe(offset); // the 413 reports what is stored
    // Every byte the offset counts is the right one: completing from there gives exactly first ‖ second.
    const whole = Buffer.concat([first, second]);
    while (offset < whole.length) {
      const piece = whole.subarray(offset, offset + 1000);
      const last = offset + piece.length === whole.length;
      const next = await request(url, 'PATCH', { ...V8, 'Upload-Complete': last ? '?1' : '?0', 'Upload-Offset': String(offset) }, piece);
      expect(next.status).toBe(204);
      offset += piece.length;
      expect(next.headers['upload-offset']).toBe(String(offset));
    }
    expect(srv.completed.map((c) => [c.size, c.readBack])).toEqual([[whole.length, sha(whole)]]);
  });

  test('OPTIONS: Accept-Patch application/partial-upload and Upload-Limit', async () => {
    const res = await request(srv.endpoint, 'OPTIONS', V8);
    expect(res.headers['accept-patch']).toBe('application/partial-upload');
    expect(res.headers['upload-limit']).toContain('max-append-size=1000');
  });

  test("the README's plain-fetch client, run as written: a file larger than max-append-size goes up in appends that fit, byte-exact", async () => {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
    const from = readme.indexOf('**Plain `fetch`**');
    const code = /```js\n([\s\S]*?)```/.exec(readme.slice(from))![1];
    const data = randomBytes(4500); // the server's appendSize is 1000
    const file = new File([data], 'big.bin', { type: 'application/octet-stream' });
    const base = srv.endpoint.replace(/\/files$/, '/');
    let requests = 0;
    // (The README's loop retries for ever on network errors and 5xx: a regression fails here, not at the test's timeout.)
    const relativeFetch = (url: string | URL, init?: RequestInit) => {
      if (++requests > 50) throw new Error('upload failed: more than 50 requests');
      return fetch(new URL(url, base), init);
    };
    const run = new Function('fetch', 'file', 'location', `return (async () => {\n${code}\n})();`);
    await run(relativeFetch, file, { href: base });
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(srv.completed[0].file.originalname).toBe('big.bin');
  });

  test('plain fetch: create with Upload-Complete: ?0, append, complete (the README example)', async () => {
    const data = Buffer.from('hello resumable world');
    const created = await fetch(srv.endpoint, {
      method: 'POST',
      headers: { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0', 'Upload-Length': String(data.length), 'Content-Disposition': 'inline; filename="hello.txt"', 'Content-Type': 'text/plain' },
      body: data.subarray(0, 5),
    });
    expect(created.status).toBe(201);
    const location = new URL(created.headers.get('location')!, srv.endpoint);
    const head = await fetch(location, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': '8' } });
    const offset = Number(head.headers.get('upload-offset'));
    expect(offset).toBe(5);
    const done = await fetch(location, {
      method: 'PATCH',
      headers: { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?1', 'Upload-Offset': String(offset), 'Content-Type': 'application/partial-upload' },
      body: data.subarray(offset),
    });
    expect(done.status).toBe(204);
    expect(srv.completed[0].file.originalname).toBe('hello.txt');
    expect(srv.completed[0].file.mimetype).toBe('text/plain');
    expect(srv.completed[0].readBack).toBe(sha(data));
  });
});
