/**
 * draft-ietf-httpbis-resumable-upload (-05 … latest, interop 6–8), appendix "Draft Version Identification":
 * "Server implementations of draft versions of the protocol MUST NOT send a 104 (Upload Resumption Supported)
 * informational response when the interop version indicated by the Upload-Draft-Interop-Version header field
 * in the request is missing or mismatching."
 * So a request naming no interop version gets no 104; and a bare HEAD or DELETE on the upload (what the
 * draft's examples send, and a final-RFC client will) is answered by the IETF handler, not tus's 412.
 */
import { request, startResumable, type ResumableServer } from './helpers/resumable';

describe('creation without Upload-Draft-Interop-Version', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable();
  });
  afterEach(() => srv.close());

  test('no 104 Upload Resumption Supported when the interop version is missing (draft MUST NOT)', async () => {
    const res = await request(srv.endpoint, 'POST', { 'Upload-Complete': '?0' }, Buffer.from('abc'));
    expect(res.status).toBe(201);
    expect(res.interim.filter((i) => i.status === 104)).toEqual([]);
  });

  test('the Location it handed out can be queried and cancelled without the interop header (not tus\'s 412)', async () => {
    const res = await request(srv.endpoint, 'POST', { 'Upload-Complete': '?0' }, Buffer.from('abc'));
    const url = srv.url + res.headers.location;
    const head = await request(url, 'HEAD', {});
    expect(head.status).not.toBe(412);
    expect(head.headers['upload-offset']).toBe('3');
    const del = await request(url, 'DELETE', {});
    expect(del.status).toBe(204);
  });
});
