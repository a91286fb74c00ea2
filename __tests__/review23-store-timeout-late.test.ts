/**
 * Review of 02dd3af (storeTimeout). The body is all in and handed to the store; the store then takes longer
 * than storeTimeout to finish (a slow last state write, the last parts of an S3 append still uploading), but
 * settles well within settleTimeout with every byte recorded, before anything was answered.
 *
 * tus: the append reached the upload's length, so it completes and is answered 204 (onComplete runs).
 * IETF draft (Upload-Complete: ?1): the very same situation is answered 500 STORAGE_FAILED and the upload
 * left incomplete — `finished` requires `failure === undefined`, and `stalled` is reported as the failure
 * although nothing failed: the store finished, late. The same store timing thus gives opposite answers by
 * protocol, and an IETF client is told its upload failed when it is entirely stored.
 */
import { createHash, randomBytes } from 'node:crypto';
import { resumable, type Resumable, type ResumableOptions, type UploadedFile } from '../lib/index';
import { tempDir } from './helpers/app';
import { createTusUpload, OCTETS, request, serveAtFiles, slowDiskStore, TUS } from './helpers/resumable';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const V8 = { 'Upload-Draft-Interop-Version': '8' };

async function serve(options: ResumableOptions): Promise<{ url: string; middleware: Resumable; completed: UploadedFile[]; close(): Promise<void> }> {
  const completed: UploadedFile[] = [];
  const middleware = resumable({ sweepInterval: 0, onComplete: (file) => void completed.push(file), ...options });
  return { middleware, completed, ...(await serveAtFiles(middleware)) };
}

test('tus: a store that finishes 700 ms after the body (storeTimeout 300, settleTimeout 5000), everything recorded: 204, completed', async () => {
  const dir = tempDir('spool-review23-');
  const { store, idle } = slowDiskStore(dir.path, 700);
  const srv = await serve({ store, storeTimeout: 300, settleTimeout: 5000 });
  try {
    const data = randomBytes(64 * 1024);
    const upload = await createTusUpload(srv.url, data.length);
    const res = await request(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(res.status).toBe(204);
    expect(srv.completed).toHaveLength(1);
    await idle();
  } finally {
    await srv.close();
    dir.remove();
  }
});

test('IETF draft: the same store timing on the completing append (Upload-Complete: ?1) is answered as tus is — not 500 with the upload left incomplete', async () => {
  const dir = tempDir('spool-review23-');
  const { store, idle } = slowDiskStore(dir.path, 700);
  const srv = await serve({ store, storeTimeout: 300, settleTimeout: 5000 });
  try {
    const data = randomBytes(64 * 1024);
    const created = await request(`${srv.url}/files`, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': String(data.length) });
    expect(created.status).toBe(201);
    const url = srv.url + created.headers.location!;
    const res = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '0', 'Content-Type': 'application/partial-upload' }, data);
    await idle();
    const head = await request(url, 'HEAD', V8);
    // Every byte is stored (the store settled, before the answer, with the full offset)...
    expect(head.headers['upload-offset']).toBe(String(data.length));
    // ...so the completing request should complete the upload, as the tus one does.
    expect({ status: res.status, complete: head.headers['upload-complete'], completed: srv.completed.length }).toEqual({ status: 204, complete: '?1', completed: 1 });
    expect(sha256(data)).toBeDefined();
  } finally {
    await srv.close();
    dir.remove();
  }
});
