/**
 * Interop 6 (draft-ietf-httpbis-resumable-upload-04/-05), "Upload Creation" / Server Behavior: "While the
 * request content is being received, the server MAY send additional interim responses with a 104 (Upload
 * Resumption Supported) status code and the Upload-Offset header field set to the current offset ... These
 * interim responses MUST NOT include the Location header field." (Only from interop 8, drafts -09+, must every
 * interim response of a creation carry an identical Location.) The handler repeats the creation's Location
 * in progress 104s from interop 8 on only (interop 8: __tests__/resumable-ietf-progress.test.ts).
 */
import { request, startResumable, type ResumableServer } from './helpers/resumable';

describe('creation progress 104s under interop 6', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ interimProgress: { bytes: 1, interval: 0 } });
  });
  afterEach(() => srv.close());

  test('progress 104s (Upload-Offset) of a creation carry no Location', async () => {
    async function* body() {
      for (let i = 0; i < 3; i++) {
        yield Buffer.alloc(200 * 1024, i);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const res = await request(srv.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '6', 'Upload-Complete': '?0' }, body());
    expect(res.status).toBe(201);
    const progress = res.interim.filter((i) => i.status === 104 && i.headers['upload-offset'] !== undefined);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.filter((i) => i.headers.location !== undefined)).toEqual([]);
  });
});
