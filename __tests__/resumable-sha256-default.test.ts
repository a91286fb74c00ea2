import { createHash, randomBytes } from 'node:crypto';
import { request, startResumable, tusUpload, type ResumableServer } from './helpers/resumable';

// resumable()'s whole-upload sha256 is off by default, as spool()'s is: an app that never reads
// `file.sha256` does not pay for it. A client that declares a Repr-Digest still gets it checked.

const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const sfBytes = (data: Buffer | string) => `:${createHash('sha256').update(data).digest('base64')}:`;
const V8 = { 'Upload-Draft-Interop-Version': '8' };

let srv: ResumableServer;
beforeEach(async () => {
  srv = await startResumable({ sha256: undefined }); // the library's default, not the test helper's
});
afterEach(() => srv.close());

test('by default no sha256 is computed: file.sha256 is undefined, the bytes are exact, no Repr-Digest answered', async () => {
  const data = randomBytes(3 * 1024 * 1024 + 1);
  await tusUpload(data, { endpoint: srv.endpoint, chunkSize: 1024 * 1024 });
  expect(srv.completed).toHaveLength(1);
  expect(srv.completed[0].sha256).toBeUndefined();
  expect(srv.completed[0].readBack).toBe(sha(data));

  const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1' }, Buffer.from('abc'));
  expect(created.status).toBe(201);
  expect(created.headers['repr-digest']).toBeUndefined();
});

test('a client that declares Repr-Digest gets it checked anyway, and a mismatch removes the upload', async () => {
  const ok = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1', 'Repr-Digest': `sha-256=${sfBytes('abcdef')}` }, Buffer.from('abcdef'));
  expect(ok.status).toBe(201);
  expect(ok.headers['repr-digest']).toBe(`sha-256=${sfBytes('abcdef')}`);
  expect(srv.completed.at(-1)?.sha256).toBe(sha('abcdef'));

  const bad = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?1', 'Repr-Digest': `sha-256=${sfBytes('nope')}` }, Buffer.from('abcdef'));
  expect(bad.status).toBe(400);
  expect(JSON.parse(bad.body).code).toBe('CHECKSUM_MISMATCH');
  expect(srv.completed).toHaveLength(1); // only the matching one reached onComplete
});
