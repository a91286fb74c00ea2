/**
 * More bytes than the upload's length (README, "Statuses": INCONSISTENT_LENGTH, 400). The answer must not
 * depend on how the body is cut into TCP reads: a hostile review sent the declared bytes, paused, then the
 * surplus, and the upload was completed (204, onComplete) where one read got a 400.
 */
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { rawConnection } from './helpers/raw-http';
import { request, startResumable, TUS, type ResumableServer } from './helpers/resumable';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (data: string) => createHash('sha256').update(data).digest('hex');
const PATCH_HEAD = 'Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n';

let srv: ResumableServer;
beforeEach(async () => {
  srv = await startResumable();
});
afterEach(() => srv.close());

async function send(head: string, ...pieces: string[]): Promise<string> {
  const conn = rawConnection((srv.server.address() as AddressInfo).port);
  try {
    await conn.write(head);
    for (const piece of pieces) {
      await sleep(150);
      await conn.write(piece);
    }
    return await conn.status();
  } finally {
    conn.socket.destroy();
  }
}

async function create(length: number): Promise<string> {
  const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': length });
  expect(res.status).toBe(201);
  return res.headers.location!;
}
const offsetOf = async (path: string) => (await request(srv.url + path, 'HEAD', TUS)).headers['upload-offset'];

test.each([
  ['in one read', ['abcdefgh']],
  ['the declared bytes, a pause, then the surplus', ['abcde', 'fgh']],
])('PATCH whose Content-Length goes past Upload-Length (%s): 400 before a byte is stored, nothing completed', async (_label, pieces) => {
  const path = await create(5);
  const status = await send(`PATCH ${path} HTTP/1.1\r\nHost: x\r\n${PATCH_HEAD}Content-Length: 8\r\n\r\n`, ...pieces);
  expect(status).toMatch(/^HTTP\/1\.1 400/);
  expect(await offsetOf(path)).toBe('0');
  expect(srv.completed).toHaveLength(0);
  // The upload goes on with a right request.
  expect((await request(srv.url + path, 'PATCH', { ...TUS, 'Content-Type': 'application/offset+octet-stream', 'Upload-Offset': 0 }, Buffer.from('abcde'))).status).toBe(204);
  expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcde')]);
});

test('creation-with-upload whose Content-Length goes past Upload-Length, sent in two reads: 400, no upload left', async () => {
  const status = await send(
    `POST /files HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Length: 5\r\nContent-Length: 8\r\n\r\n`,
    'abcde',
    'fgh',
  );
  expect(status).toMatch(/^HTTP\/1\.1 400/);
  expect(srv.completed).toHaveLength(0);
  expect(srv.dir.files()).toEqual([]);
});

test('a chunked PATCH whose surplus comes after the declared bytes: 400, not completed by it; the next HEAD completes the bytes stored, once', async () => {
  const path = await create(5);
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const status = await send(`PATCH ${path} HTTP/1.1\r\nHost: x\r\n${PATCH_HEAD}Transfer-Encoding: chunked\r\n\r\n`, chunk('abcde'), chunk('fgh') + '0\r\n\r\n');
  expect(status).toMatch(/^HTTP\/1\.1 400/);
  expect(srv.completed).toHaveLength(0);
  expect(await offsetOf(path)).toBe('5');
  expect(srv.completed.map((c) => c.readBack)).toEqual([sha('abcde')]);
  await offsetOf(path);
  expect(srv.completed).toHaveLength(1);
});

test('tus creation-with-upload, chunked, whose surplus comes after the declared bytes: 400, and no upload left (its location was never told)', async () => {
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const status = await send(
    `POST /files HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`,
    chunk('abcde'),
    chunk('fgh') + '0\r\n\r\n',
  );
  expect(status).toMatch(/^HTTP\/1\.1 400/);
  expect(srv.completed).toHaveLength(0);
  expect(srv.dir.files()).toEqual([]);
});

test('IETF draft 8, a chunked PATCH whose surplus comes after the declared bytes: 400, and the upload is invalid from then on (the draft\'s MUST), nothing left', async () => {
  const V8 = { 'Upload-Draft-Interop-Version': '8' };
  const created = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': '5' });
  expect(created.status).toBe(201);
  const path = created.headers.location!.replace(/^https?:\/\/[^/]+/, '');
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
  const status = await send(
    `PATCH ${path} HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\nUpload-Offset: 0\r\nContent-Type: application/partial-upload\r\nTransfer-Encoding: chunked\r\n\r\n`,
    chunk('abcde'),
    chunk('fgh') + '0\r\n\r\n',
  );
  expect(status).toMatch(/^HTTP\/1\.1 400/);
  expect((await request(srv.url + path, 'HEAD', V8)).status).toBe(404);
  const done = await request(srv.url + path, 'PATCH', { ...V8, 'Upload-Complete': '?1', 'Upload-Offset': '5', 'Content-Type': 'application/partial-upload' }, Buffer.alloc(0));
  expect(done.status).toBe(404);
  expect(srv.completed).toHaveLength(0);
  expect(srv.dir.files()).toEqual([]);
});
