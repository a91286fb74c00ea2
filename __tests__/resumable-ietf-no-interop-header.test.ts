/**
 * draft-ietf-httpbis-resumable-upload (-05 … latest, interop 6–8), appendix "Draft Version Identification":
 * "Server implementations of draft versions of the protocol MUST NOT send a 104 (Upload Resumption Supported)
 * informational response when the interop version indicated by the Upload-Draft-Interop-Version header field
 * in the request is missing or mismatching."
 * So a request naming no interop version gets no 104. (Its later requests must name one too: a bare HEAD or
 * DELETE is tus's, answered 412 — or, with only the draft on, the app's next route.)
 */
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, resumableDiskStore } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
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
});

test("with only the draft on, a bare HEAD or DELETE at an upload's path is the app's next route, not the handler's", async () => {
  const dir = tempDir('spool-ietf-only-');
  const files = resumable({ store: resumableDiskStore({ directory: dir.path }), protocols: ['ietf'], sweepInterval: 0 });
  const app = express();
  app.use('/files', files);
  app.get('/files/:id', (_req, res) => res.set('X-App', 'download').send('app'));
  app.delete('/files/:id', (_req, res) => res.set('X-App', 'delete').sendStatus(204));
  const server = await listen(app);
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/files`;
  try {
    const created = await request(base, 'POST', { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0', 'Upload-Length': 3 });
    expect(created.status).toBe(201);
    const url = `${base}/${created.headers.location!.split('/').pop()}`;
    expect((await request(url, 'HEAD', {})).headers['x-app']).toBe('download');
    expect((await request(url, 'DELETE', {})).headers['x-app']).toBe('delete');
    expect((await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '8' })).status).toBe(204); // the upload is still there
  } finally {
    files.close();
    await close(server);
    dir.remove();
  }
});
