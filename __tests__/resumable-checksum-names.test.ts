/** Checksum algorithm names come from the client: one inherited from Object.prototype ("constructor") is unknown like any other (a hostile review got 500s). */
import { createHash } from 'node:crypto';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';

const V8 = { 'Upload-Draft-Interop-Version': '8' };

let srv: ResumableServer;
beforeEach(async () => {
  srv = await startResumable();
});
afterEach(() => srv.close());

test('tus: Upload-Checksum with algorithm "constructor" is a 400 INVALID_UPLOAD_REQUEST, like any unknown algorithm; the upload goes on', async () => {
  const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': '3' });
  expect(created.status).toBe(201);
  const url = srv.url + created.headers.location!;
  const unknown = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': 'crc32 AAAA' }, Buffer.from('abc'));
  expect(unknown.status).toBe(400);
  const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Upload-Checksum': 'constructor AAAA' }, Buffer.from('abc'));
  expect([res.status, res.body]).toEqual([unknown.status, unknown.body]); // as any unknown algorithm
  // and the upload is still usable afterwards
  const next = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('abc'));
  expect(next.status).toBe(204);
  expect(srv.completed.map((c) => c.readBack)).toEqual([createHash('sha256').update('abc').digest('hex')]);
});

test('IETF: Content-Digest "constructor=:…:" is an unknown algorithm (ignored), not a 500', async () => {
  const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' }, Buffer.from('abc'));
  expect(created.status).toBe(201);
  const url = srv.url + created.headers.location!;
  const res = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3', 'Content-Type': 'application/partial-upload', 'Content-Digest': 'constructor=:AAAA:' }, Buffer.from('def'));
  expect(res.status).toBe(204);
});

test('IETF: Repr-Digest "constructor=:…:" does not break the upload\'s completion', async () => {
  const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', 'Repr-Digest': 'constructor=:AAAA:' }, Buffer.from('abc'));
  expect(created.status).toBe(201);
  const url = srv.url + created.headers.location!;
  const res = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '3', 'Content-Type': 'application/partial-upload' }, Buffer.from('def'));
  expect(res.status).toBe(204);
  expect(srv.completed).toHaveLength(1);
});
