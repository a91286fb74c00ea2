/**
 * draft-ietf-httpbis-resumable-upload-05 (interop 6) … -10+ (interop 8), "Upload Append" / Server Behavior:
 * "If the request content was fully received, the upload is marked as complete ... However, the response MUST
 * include the Upload-Complete header field with a true value, allowing clients to identify whether a response,
 * in particular error responses, is related to the resumable upload itself or the processing of the uploaded
 * representation."
 * The upload is stored complete before onComplete runs, so when onComplete rejects, the completing request's
 * error answer says Upload-Complete: ?1 like a later HEAD (it said ?0, inviting a resume; found by a review).
 */
import { SpoolError } from '../lib/index';
import { request, startResumable, type ResumableServer } from './helpers/resumable';

const V8 = { 'Upload-Draft-Interop-Version': '8' };
const PU = { 'Content-Type': 'application/partial-upload' };

describe('the completing request fails in onComplete', () => {
  let srv: ResumableServer;
  let reason: unknown;
  beforeEach(async () => {
    srv = await startResumable({
      onComplete: () => {
        throw reason;
      },
    });
  });
  afterEach(() => srv.close());

  test.each([
    ['a SpoolError (400)', () => new SpoolError('FILE_REJECTED', 'not wanted'), 400],
    ['an Error (500)', () => new Error('scanner down'), 500],
  ])('%s: the error answer carries Upload-Complete: ?1, as the upload is complete', async (_, make, status) => {
    const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0' }, Buffer.from('abc'));
    expect(created.status).toBe(201);
    const url = srv.url + created.headers.location;
    reason = make();
    const done = await request(url, 'PATCH', { ...V8, ...PU, 'Upload-Complete': '?1', 'Upload-Offset': '3' }, Buffer.from('de'));
    expect(done.status).toBe(status);
    const head = await request(url, 'HEAD', V8);
    expect(head.headers['upload-complete']).toBe('?1'); // stored as complete
    expect(done.headers['upload-complete']).toBe('?1'); // as the stored state (a HEAD) says
  });
});
