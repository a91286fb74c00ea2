import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { enospc, onDataWrites } from './helpers/data-writes';
import { request, startResumable, type ResumableServer } from './helpers/resumable';

// A store failure after progress 104s: the final (error) response must carry the offset the store holds
// after the failed append — never one lower than a 104 already acknowledged as durable (README: the 104s'
// offsets increase, each ≤ the final response's), and the same a HEAD then reports.

const KiB = 1024;
const V8 = { 'Upload-Draft-Interop-Version': '8' };
let srv: ResumableServer;
beforeEach(async () => {
  srv = await startResumable({ interimProgress: { bytes: 128 * KiB, interval: 0 } });
});
afterEach(async () => {
  jest.restoreAllMocks();
  await srv.close();
});

test('the final response after a failing store never reports less than a 104 acknowledged', async () => {
  const data = randomBytes(2 * 1024 * KiB);
  const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': String(data.length) });
  const path = created.headers.location!;
  let diskFull = false;
  onDataWrites(() => (diskFull ? enospc() : undefined));
  const acknowledged: number[] = [];
  const final = await new Promise<{ status: number; offset: string | undefined }>((resolve, reject) => {
    const req = http.request(srv.url + path, {
      method: 'PATCH',
      headers: { ...V8, 'Content-Type': 'application/partial-upload', 'Upload-Complete': '?1', 'Upload-Offset': '0', 'Content-Length': data.length },
    });
    req.on('information', (info) => {
      if (info.statusCode === 104 && info.headers['upload-offset'] !== undefined) {
        acknowledged.push(Number(info.headers['upload-offset']));
        diskFull = true; // the disk fills up right after the first progress 104
      }
    });
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, offset: res.headers['upload-offset'] as string | undefined }));
    });
    req.on('error', reject);
    void (async () => {
      for (let at = 0; at < data.length && !req.destroyed; at += 64 * KiB) {
        await new Promise<void>((r) => req.write(data.subarray(at, at + 64 * KiB), () => r()));
        await new Promise((r) => setTimeout(r, 3));
      }
      req.end();
    })().catch(() => undefined);
  });
  const head = await request(srv.url + path, 'HEAD', V8);
  expect(acknowledged.length).toBeGreaterThan(0);
  expect(final.status).toBe(507);
  expect(Number(final.offset)).toBeGreaterThanOrEqual(Math.max(...acknowledged));
  expect(final.offset).toBe(head.headers['upload-offset']);
});
