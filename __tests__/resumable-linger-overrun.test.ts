/**
 * The IETF draft's "offset past Upload-Length marks the upload invalid" rule holds with a slow store: an
 * overrun does not start the settleTimeout clock (the client is still there, waiting for its answer), so a
 * store that takes longer than settleTimeout still ends in 400 inconsistent-upload-length and the upload's
 * removal (found by a hostile review).
 */
import { tempDir } from './helpers/app';
import { request, slowDiskStore, startResumable } from './helpers/resumable';

const V8 = { 'Upload-Draft-Interop-Version': '8', 'Content-Type': 'application/partial-upload' };
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const after of [50, 900]) {
  test(`store settles ${after} ms after the overrun (settleTimeout 300): 400, and the upload is invalid (HEAD 404)`, async () => {
    const dir = tempDir('spool-linger-overrun-');
    const { store, idle } = slowDiskStore(dir.path, after);
    const srv = await startResumable({ store, settleTimeout: 300, lockTimeout: 300 }, dir);
    try {
      const created = await request(srv.endpoint, 'POST', { 'Upload-Draft-Interop-Version': '8', 'Upload-Complete': '?0', 'Upload-Length': '5' });
      expect(created.status).toBe(201);
      const url = srv.url + created.headers.location;
      async function* body() {
        yield Buffer.from('abc');
        await wait(50);
        yield Buffer.from('defgh');
      }
      const over = await request(url, 'PATCH', { ...V8, 'Upload-Complete': '?0', 'Upload-Offset': '0' }, body());
      await idle();
      await wait(100);
      const head = await request(url, 'HEAD', { 'Upload-Draft-Interop-Version': '8' });
      expect([over.status, head.status]).toEqual([400, 404]);
    } finally {
      await srv.close();
    }
  });
}
