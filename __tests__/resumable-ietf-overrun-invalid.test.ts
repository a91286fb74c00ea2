/**
 * draft-ietf-httpbis-resumable-upload-08 (interop 7) … -10+ (interop 8), "Upload Append" / Server Behavior:
 * "If the length is known, the server MUST prevent the offset from exceeding the upload length by rejecting the
 * request once the offset exceeds the length, marking the upload resource invalid and rejecting any further
 * interaction with it."
 * So under interop 7–8 a chunked body that passes the length gets 400 inconsistent-upload-length and the
 * upload is removed: a HEAD then answers 404.
 */
import { request, startResumable, type ResumableServer } from './helpers/resumable';

const V8 = { 'Upload-Draft-Interop-Version': '8', 'Content-Type': 'application/partial-upload' };

describe('offset past Upload-Length (chunked body)', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable();
  });
  afterEach(() => srv.close());

  test('the upload resource is invalid afterwards: a HEAD is refused', async () => {
    const created = await request(srv.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0', 'Upload-Length': '5' });
    expect(created.status).toBe(201);
    const url = srv.url + created.headers.location;
    async function* body() {
      yield Buffer.from('abc');
      await new Promise((r) => setTimeout(r, 50));
      yield Buffer.from('defgh');
    }
    const over = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '0' }, body());
    expect(over.status).toBe(400);
    expect(JSON.parse(over.body).type).toBe('https://iana.org/assignments/http-problem-types#inconsistent-upload-length');
    const head = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '8' });
    expect(head.status).toBe(404);
  });
});
