import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { UploadLocks } from '../lib/resumable/upload-lock';
import type { UploadLocker } from '../lib/resumable/upload-locker';
import { resumable, type ResumableOptions } from '../lib';
import { eventually } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';
import { rawConnection, type RawConnection } from './helpers/raw-http';

// Regression tests for the six resumable-upload defects fixed in ccb3b16 (review s18, repros in
// review-resumable/t01, t02, t03, t09, t14, t15): DELETE of a completed upload, an IETF creation announced
// in a 104 whose body dies before its first byte, a PATCH waiting for its memory share, a malformed
// Upload-Concat, the client's filename as originalname, Upload-Metadata values. Real sockets, the disk store
// in a temporary directory; files are checked byte for byte (sha256).

const KiB = 1024;
const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const PARTIAL_UPLOAD = { 'Content-Type': 'application/partial-upload' } as const;
const ietf = (version: number) => ({ 'Upload-Draft-Interop-Version': String(version) });
const V8 = ietf(8);
const PROBLEM = 'https://iana.org/assignments/http-problem-types#';

let servers: ResumableServer[] = [];
let connections: RawConnection[] = [];

afterEach(async () => {
  for (const c of connections) c.socket.destroy();
  connections = [];
  for (const srv of servers) await srv.close(); // closes every connection, removes the directory
  servers = [];
});

async function start(options: ResumableOptions = {}): Promise<ResumableServer> {
  const srv = await startResumable(options);
  servers.push(srv);
  return srv;
}

function raw(srv: ResumableServer): RawConnection {
  const c = rawConnection(Number(new URL(srv.url).port));
  connections.push(c);
  return c;
}

function rawHead(method: string, path: string, headers: Record<string, string | number>): string {
  let head = `${method} ${path} HTTP/1.1\r\nHost: x\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  return `${head}\r\n`;
}

/** A tus upload of `length` bytes (none sent yet); resolves with its path. */
async function createTus(srv: ResumableServer, length: number, headers: Record<string, string> = {}): Promise<string> {
  const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': length, ...headers });
  expect(res.status).toBe(201);
  return new URL(res.headers.location!, srv.url).pathname;
}

const idOf = (path: string) => path.split('/').pop()!;
/** The uploads whose state the disk store holds (`<id>.json`). */
const stored = (srv: ResumableServer) => srv.dir.files().filter((f) => /^[A-Za-z0-9_-]+\.json$/.test(f)).map((f) => f.slice(0, -5));
const fileSha = (path: string) => sha(readFileSync(path));

/** The in-process locker, telling which uploads it has handed out so far (in order). */
function recordingLocker(): UploadLocker & { acquired: string[] } {
  const locks = new UploadLocks();
  const acquired: string[] = [];
  return {
    acquired,
    async acquire(id, end, timeout) {
      const release = await locks.acquire(id, end, timeout);
      acquired.push(id);
      return release;
    },
    has: (id) => locks.has(id),
  };
}

// ---------------------------------------------------------------------------------------------------------

describe('1. with terminateCompleted: false, DELETE of a completed upload is refused: the app owns it (t14)', () => {
  test('tus: a completed upload → 400 UPLOAD_COMPLETED, onComplete’s file.path still there byte-exact; an incomplete one → 204', async () => {
    const srv = await start({ terminateCompleted: false });
    const data = randomBytes(5000 + Math.floor(Math.random() * 1000));
    const created = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': data.length }, data);
    expect([created.status, created.headers['upload-offset']]).toEqual([201, String(data.length)]);
    const url = new URL(created.headers.location!, srv.url).href;
    expect(srv.completed).toHaveLength(1);
    const { file } = srv.completed[0];
    expect(srv.completed[0].readBack).toBe(sha(data));

    const del = await request(url, 'DELETE', TUS);
    expect(del.status).toBe(400);
    expect(del.headers['tus-resumable']).toBe('1.0.0');
    expect(del.body).toMatch(/complete/i);
    expect(existsSync(file.path!)).toBe(true);
    expect(fileSha(file.path!)).toBe(sha(data));
    const head = await request(url, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(data.length)]);
    // The app still can remove it.
    await file.remove();
    expect(existsSync(file.path!)).toBe(false);

    // An incomplete upload: terminated as before, nothing left of it.
    const partly = await createTus(srv, 10_000);
    expect((await request(srv.url + partly, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, randomBytes(4000))).status).toBe(204);
    expect((await request(srv.url + partly, 'DELETE', TUS)).status).toBe(204);
    expect((await request(srv.url + partly, 'HEAD', TUS)).status).toBe(404);
    expect(stored(srv)).not.toContain(idOf(partly));
  }, 20_000);

  test.each([8, 6])('IETF interop %i: a completed upload → 400 problem+json completed-upload, file byte-exact; an incomplete one → 204', async (version) => {
    const srv = await start({ terminateCompleted: false });
    const V = ietf(version);
    const data = randomBytes(7000 + Math.floor(Math.random() * 1000));
    const created = await request(srv.endpoint, 'POST', { ...V, 'Upload-Complete': '?1' }, data);
    expect([created.status, created.headers['upload-complete']]).toEqual([201, '?1']);
    const url = new URL(created.headers.location!, srv.url).href;
    expect(srv.completed).toHaveLength(1);
    const { file } = srv.completed[0];

    const del = await request(url, 'DELETE', V);
    expect(del.status).toBe(400);
    expect(del.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(del.body)).toMatchObject({ type: `${PROBLEM}completed-upload`, code: 'UPLOAD_COMPLETED', status: 400 });
    expect(existsSync(file.path!)).toBe(true);
    expect(fileSha(file.path!)).toBe(sha(data));
    const head = await request(url, 'HEAD', V);
    expect([head.status, head.headers['upload-offset'], head.headers['upload-complete']]).toEqual([204, String(data.length), '?1']);

    const partly = await request(srv.endpoint, 'POST', { ...V, 'Upload-Complete': '?0' }, randomBytes(3000));
    expect(partly.status).toBe(201);
    const partlyUrl = new URL(partly.headers.location!, srv.url).href;
    expect((await request(partlyUrl, 'DELETE', V)).status).toBe(204);
    expect((await request(partlyUrl, 'HEAD', V)).status).toBe(404);
    expect(srv.completed).toHaveLength(1);
  }, 20_000);

  test('tus concatenation: the completed final upload → 400 and stays byte-exact; its completed partials → 204 (and the final stays)', async () => {
    const srv = await start({ terminateCompleted: false });
    const pieces = [randomBytes(3000), randomBytes(4500)];
    const partials: string[] = [];
    for (const piece of pieces) {
      const res = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Concat': 'partial', 'Upload-Length': piece.length }, piece);
      expect([res.status, res.headers['upload-offset']]).toEqual([201, String(piece.length)]);
      partials.push(new URL(res.headers.location!, srv.url).pathname);
    }
    const whole = Buffer.concat(pieces);
    const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${partials.join(' ')}` });
    expect(final.status).toBe(201);
    const finalUrl = new URL(final.headers.location!, srv.url).href;
    expect(srv.completed).toHaveLength(1);
    const { file } = srv.completed[0];
    expect(srv.completed[0].readBack).toBe(sha(whole));

    expect((await request(finalUrl, 'DELETE', TUS)).status).toBe(400);
    expect(fileSha(file.path!)).toBe(sha(whole));
    // A completed partial is a piece, not the app's file: a client may still terminate it.
    for (const partial of partials) {
      const head = await request(srv.url + partial, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset'], head.headers['upload-concat']]).toEqual([200, head.headers['upload-length'], 'partial']);
      expect((await request(srv.url + partial, 'DELETE', TUS)).status).toBe(204);
      expect((await request(srv.url + partial, 'HEAD', TUS)).status).toBe(404);
    }
    expect(fileSha(file.path!)).toBe(sha(whole));
    expect((await request(finalUrl, 'HEAD', TUS)).headers['upload-offset']).toBe(String(whole.length));
  }, 20_000);

  test('by default (terminateCompleted: true, as tusd and @tus/server) a client may still terminate a completed upload: nothing is left', async () => {
    const srv = await start();
    const data = randomBytes(6000);
    const created = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': data.length }, data);
    expect(created.status).toBe(201);
    const url = new URL(created.headers.location!, srv.url).href;
    const { file } = srv.completed[0];
    expect(fileSha(file.path!)).toBe(sha(data));
    expect((await request(url, 'DELETE', TUS)).status).toBe(204);
    expect(existsSync(file.path!)).toBe(false);
    expect((await request(url, 'HEAD', TUS)).status).toBe(404);
    expect(stored(srv)).not.toContain(idOf(new URL(url).pathname));
  }, 20_000);

  test('terminateCompleted must be a boolean', () => {
    expect(() => resumable({ terminateCompleted: 'no' as unknown as boolean })).toThrow(TypeError);
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('2. IETF: a creation announced in a 104 whose body dies before its first byte is kept (t02)', () => {
  /** Starts an IETF creation of `length` bytes that sends its head only; resolves once the 104 came, with its Location. */
  async function announcedCreation(srv: ResumableServer, version: number, length: number): Promise<{ c: RawConnection; location: string }> {
    const c = raw(srv);
    await c.write(rawHead('POST', '/files', { ...ietf(version), 'Upload-Complete': '?1', 'Content-Length': length, 'Content-Type': 'application/octet-stream' }));
    await eventually(() => expect(c.response()).toMatch(/^HTTP\/1\.1 104 [^\r]*\r\n[\s\S]*?\r\n\r\n/), 5000);
    const location = /\r\nLocation: ([^\r]+)\r\n/i.exec(c.response().split('\r\n\r\n')[0])?.[1];
    expect(location).toMatch(/\/files\/[A-Za-z0-9_-]+$/);
    expect(stored(srv)).toEqual([idOf(location!)]);
    return { c, location: new URL(location!, srv.url).href };
  }

  /** HEAD 204 at offset 0, then a PATCH with every byte completes it byte-exact. */
  async function resumes(srv: ResumableServer, version: number, url: string, data: Buffer): Promise<void> {
    const head = await request(url, 'HEAD', ietf(version));
    expect([head.status, head.headers['upload-offset'], head.headers['upload-complete']]).toEqual([204, '0', '?0']);
    const done = await request(url, 'PATCH', { ...ietf(version), ...PARTIAL_UPLOAD, 'Upload-Offset': 0, 'Upload-Complete': '?1' }, data);
    expect([done.status, done.headers['upload-offset'], done.headers['upload-complete']]).toEqual([204, String(data.length), '?1']);
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].sha256).toBe(sha(data));
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(fileSha(srv.completed[0].file.path!)).toBe(sha(data));
  }

  /**
   * A creation (head only; no 104 expected) whose client goes away before the first byte: nothing is left of
   * it (the directory is as it was before), HEAD on its id 404.
   */
  async function unannouncedCreationLeavesNothing(srv: ResumableServer, headers: Record<string, string | number>): Promise<void> {
    const before = srv.dir.files().sort();
    const c = raw(srv);
    await c.write(rawHead('POST', '/files', headers));
    let id: string | undefined;
    await eventually(() => expect((id = stored(srv).find((s) => !before.includes(`${s}.json`)))).toBeDefined(), 5000); // created, waiting for its body
    expect(c.response()).not.toMatch(/^HTTP\/1\.1 104/);
    c.socket.destroy();
    await c.closed;
    await eventually(() => expect(srv.dir.files().sort()).toEqual(before), 5000);
    expect((await request(`${srv.endpoint}/${id}`, 'HEAD', TUS)).status).toBe(404);
    expect((await request(`${srv.endpoint}/${id}`, 'HEAD', V8)).status).toBe(404);
  }

  test.each([8, 6])('interop %i: the client disconnects after the 104 → HEAD on the Location 204 offset 0, PATCH completes byte-exact; without a 104 (tus, interimResponses off) nothing is left', async (version) => {
    const srv = await start();
    const data = randomBytes(40 * KiB + Math.floor(Math.random() * 1000));
    const { c, location } = await announcedCreation(srv, version, data.length);
    c.socket.destroy();
    await c.closed;
    await resumes(srv, version, location, data);

    // The controls: no 104 went out, so nobody can resume there — removed, as before.
    await unannouncedCreationLeavesNothing(srv, { ...TUS, ...OCTETS, 'Upload-Length': data.length, 'Content-Length': data.length });
    const quiet = await start({ interimResponses: false });
    await unannouncedCreationLeavesNothing(quiet, { ...ietf(version), 'Upload-Complete': '?1', 'Content-Length': data.length, 'Content-Type': 'application/octet-stream' });
  }, 30_000);

  test.each([8, 6])('interop %i: a HEAD on the Location supersedes the stalled creation → 204 offset 0 (the creation 423), PATCH completes byte-exact', async (version) => {
    const srv = await start();
    const data = randomBytes(40 * KiB + Math.floor(Math.random() * 1000));
    const { c, location } = await announcedCreation(srv, version, data.length);
    // The network drops without the server noticing; the client resumes with HEAD, as the draft says.
    await resumes(srv, version, location, data);
    expect(await c.status()).toMatch(/^HTTP\/1\.1 423/);
    expect(c.response()).toMatch(/\r\nContent-Type: application\/problem\+json\r\n/i);
    expect(stored(srv)).toEqual([idOf(location)]);
  }, 30_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('3. a PATCH waiting for its memory share is ended by a newer request or its client going away (t03)', () => {
  const LOCK = 3000;
  const LENGTH = 100_000;

  function patchHead(path: string, offset: number, length: number): string {
    return rawHead('PATCH', path, { ...TUS, ...OCTETS, 'Upload-Offset': offset, 'Content-Length': length });
  }

  /**
   * A memory budget of one request share (64 KiB); upload A's PATCH holds it (10 bytes sent, then stalls),
   * upload B's PATCH waits for it.
   */
  async function setUp() {
    const locker = recordingLocker();
    const srv = await start({ memoryBudget: '64KiB', lockTimeout: LOCK, admissionTimeout: 20_000, idleTimeout: 30_000, locker });
    const budget = srv.middleware.memoryBudget;
    const idle = { used: budget.used, waiting: budget.waiting };
    const dataA = randomBytes(LENGTH);
    const dataB = randomBytes(LENGTH);
    const a = await createTus(srv, LENGTH);
    const b = await createTus(srv, LENGTH);
    const pa = raw(srv);
    await pa.write(patchHead(a, 0, LENGTH));
    await pa.write(dataA.subarray(0, 10));
    await eventually(() => expect(budget.used).toBe(budget.limit), 5000);
    const pb = raw(srv);
    await pb.write(patchHead(b, 0, LENGTH));
    await pb.write(dataB.subarray(0, 10));
    await eventually(() => expect([budget.waiting, locker.has(idOf(b))]).toEqual([1, true]), 5000);
    return { srv, locker, budget, idle, a, b, dataA, dataB, pa, pb };
  }

  /** Ends A's stalled PATCH, then completes both uploads byte-exact; the budget is back to idle. */
  async function finishBoth(s: Awaited<ReturnType<typeof setUp>>, bDone = false): Promise<void> {
    s.pa.socket.destroy();
    await s.pa.closed;
    for (const [path, data] of [[s.a, s.dataA], ...(bDone ? [] : [[s.b, s.dataB]])] as [string, Buffer][]) {
      const head = await request(s.srv.url + path, 'HEAD', TUS);
      expect(head.status).toBe(200);
      const offset = Number(head.headers['upload-offset']);
      const res = await request(s.srv.url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset));
      expect([res.status, res.headers['upload-offset']]).toEqual([204, String(LENGTH)]);
    }
    expect(s.srv.completed.map((c) => c.readBack).sort()).toEqual([sha(s.dataA), sha(s.dataB)].sort());
    for (const c of s.srv.completed) expect(fileSha(c.file.path!)).toBe(c.readBack);
    await eventually(() => expect({ used: s.budget.used, waiting: s.budget.waiting }).toEqual(s.idle), 5000);
  }

  test('a newer HEAD ends the wait: answered 200 promptly (< lockTimeout / 2), the waiting PATCH 423; budget back to idle', async () => {
    const s = await setUp();
    const t0 = Date.now();
    const head = await request(s.srv.url + s.b, 'HEAD', TUS);
    const took = Date.now() - t0;
    expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    expect(took).toBeLessThan(LOCK / 2);
    expect(s.budget.waiting).toBe(0); // the superseded PATCH left the queue
    expect(await s.pb.status()).toMatch(/^HTTP\/1\.1 423/);
    await finishBoth(s);
  }, 30_000);

  test('a newer PATCH ends the wait: it holds the lock promptly (< lockTimeout / 2), waits for memory itself, then completes byte-exact', async () => {
    const s = await setUp();
    const idB = idOf(s.b);
    const taken = s.locker.acquired.filter((id) => id === idB).length;
    const newer = request(s.srv.url + s.b, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, s.dataB);
    newer.catch(() => undefined); // (awaited below; a failing run must not also leave it unhandled)
    const t0 = Date.now();
    await eventually(() => expect(s.locker.acquired.filter((id) => id === idB).length).toBe(taken + 1), LOCK / 2);
    expect(Date.now() - t0).toBeLessThan(LOCK / 2);
    // Now the newer PATCH is the one waiting (the older left the queue); A lets go, and it goes through.
    await eventually(() => expect(s.budget.waiting).toBe(1), 5000);
    expect(await s.pb.status()).toMatch(/^HTTP\/1\.1 423/);
    s.pa.socket.destroy();
    const res = await newer;
    expect([res.status, res.headers['upload-offset']]).toEqual([204, String(LENGTH)]);
    await finishBoth(s, true);
  }, 30_000);

  test('the client going away while waiting releases the lock (no request needed), and the next HEAD answers promptly', async () => {
    const s = await setUp();
    const idB = idOf(s.b);
    const t0 = Date.now();
    s.pb.socket.destroy();
    await s.pb.closed;
    await eventually(() => expect([s.locker.has(idB), s.budget.waiting]).toEqual([false, 0]), LOCK / 2);
    const head = await request(s.srv.url + s.b, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    expect(Date.now() - t0).toBeLessThan(LOCK / 2);
    await finishBoth(s);
  }, 30_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('4. Upload-Concat with a malformed percent-encoding is 400 INVALID_UPLOAD_REQUEST, not 500 (t01)', () => {
  test('final;/files/% and friends → 400, nothing created; a well-formed final still works byte-exact', async () => {
    const srv = await start();
    const piece = randomBytes(2000);
    const created = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Concat': 'partial', 'Upload-Length': piece.length }, piece);
    expect(created.status).toBe(201);
    const partial = new URL(created.headers.location!, srv.url).pathname;
    const before = srv.dir.files().sort();
    for (const concat of ['final;/files/%', 'final;/files/abc%zz', `final;${srv.url}/files/%E0%A4%A`, `final;${partial} /files/%`]) {
      const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': concat });
      expect({ concat, status: res.status }).toEqual({ concat, status: 400 });
      expect(res.headers['tus-resumable']).toBe('1.0.0');
      expect(res.body).toMatch(/Upload-Concat/);
      expect(srv.dir.files().sort()).toEqual(before);
    }
    // (The same partial named twice is refused too: one small request would write its bytes as often.)
    const twice = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${partial} ${partial}` });
    expect(twice.status).toBe(400);
    expect(twice.body).toMatch(/named more than once/);
    expect(srv.dir.files().sort()).toEqual(before);
    const piece2 = randomBytes(1500);
    const created2 = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Concat': 'partial', 'Upload-Length': piece2.length }, piece2);
    const partial2 = new URL(created2.headers.location!, srv.url).pathname;
    const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${partial} ${partial2}` });
    expect(final.status).toBe(201);
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([piece, piece2])));
    expect(fileSha(srv.completed[0].file.path!)).toBe(sha(Buffer.concat([piece, piece2])));
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('5. originalname is the last path segment of the metadata filename; HEAD echoes what was sent (t09)', () => {
  const names: [sent: string, originalname: string][] = [
    ['../../../etc/cron.d/evil', 'evil'],
    ['C:\\x\\y.txt', 'y.txt'],
    ['/abs/olute/..', ''],
    ['plain name.txt', 'plain name.txt'],
  ];

  test.each(['tus', 'ietf'] as const)('%s: fileFilter and onComplete get the last segment; the file is byte-exact', async (protocol) => {
    const filtered: string[] = [];
    const srv = await start({ fileFilter: (_req, file) => (filtered.push(file.originalname), true) });
    for (const [i, [name, expected]] of names.entries()) {
      const data = randomBytes(1000 + i);
      const metadata = `filename ${b64(name)},filetype ${b64('text/plain')}`;
      const headers =
        protocol === 'tus'
          ? { ...TUS, ...OCTETS, 'Upload-Length': data.length, 'Upload-Metadata': metadata }
          : { ...V8, 'Upload-Complete': '?1', 'Upload-Metadata': metadata };
      const res = await request(srv.endpoint, 'POST', headers, data);
      expect(res.status).toBe(201);
      expect(filtered[i]).toBe(expected);
      const done = srv.completed[i];
      expect({ originalname: done.file.originalname, mimetype: done.file.mimetype }).toEqual({ originalname: expected, mimetype: 'text/plain' });
      expect(done.readBack).toBe(sha(data));
      expect(done.file.path!.startsWith(srv.dir.path)).toBe(true);
      expect(fileSha(done.file.path!)).toBe(sha(data));
      // The metadata itself keeps the client's word.
      const head = await request(new URL(res.headers.location!, srv.url).href, 'HEAD', TUS);
      expect(head.headers['upload-metadata']).toBe(metadata);
    }
  }, 20_000);
});

// ---------------------------------------------------------------------------------------------------------

describe('6. Upload-Metadata values are padded base64 of UTF-8 text (t15)', () => {
  const bad = ['filename a', 'filename d29ybGQ', 'bin /w==', 'filename d29ybGQ=,bin /w=='];
  const good = ['filename d29ybGQ=', 'flag', `filename ${b64('naïve – 日本.txt')},flag,empty`, `note ${b64('a, b')},flag`];

  test.each(['tus', 'ietf'] as const)('%s: unpadded / not base64 / not UTF-8 → 400 INVALID_UPLOAD_REQUEST, nothing created; valid values (and keys without value) echoed exactly by HEAD', async (protocol) => {
    const srv = await start();
    for (const sent of bad) {
      if (protocol === 'tus') {
        const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 1, 'Upload-Metadata': sent });
        expect({ sent, status: res.status, tus: res.headers['tus-resumable'] }).toEqual({ sent, status: 400, tus: '1.0.0' });
      } else {
        const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Metadata': sent });
        expect({ sent, status: res.status, type: res.headers['content-type'] }).toEqual({ sent, status: 400, type: 'application/problem+json' });
        expect(JSON.parse(res.body)).toMatchObject({ code: 'INVALID_UPLOAD_REQUEST', status: 400 });
      }
      expect(srv.dir.files()).toEqual([]);
    }
    for (const [i, sent] of good.entries()) {
      const data = randomBytes(3000 + i);
      const headers =
        protocol === 'tus'
          ? { ...TUS, ...OCTETS, 'Upload-Length': data.length, 'Upload-Metadata': sent }
          : { ...V8, 'Upload-Complete': '?1', 'Upload-Metadata': sent };
      const res = await request(srv.endpoint, 'POST', headers, data);
      expect({ sent, status: res.status }).toEqual({ sent, status: 201 });
      // (tus HEAD: Upload-Metadata is tus's; an IETF upload's metadata is the same record)
      const head = await request(new URL(res.headers.location!, srv.url).href, 'HEAD', TUS);
      expect({ sent, echoed: head.headers['upload-metadata'] }).toEqual({ sent, echoed: sent });
      expect(srv.completed[i].readBack).toBe(sha(data));
      expect(fileSha(srv.completed[i].file.path!)).toBe(sha(data));
    }
    expect(srv.completed.map((c) => c.file.originalname)).toEqual(['world', '', 'naïve – 日本.txt', '']);
  }, 20_000);
});
