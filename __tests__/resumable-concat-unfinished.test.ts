import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { SpoolError } from '../lib/core/errors';
import { redisLocker, s3ResumableStore } from '../lib/index';
import { close, eventually, tempDir } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';
import { useTestBucket } from './setup/s3-env';

// tus concatenation-unfinished: `Upload-Concat: final;…` may name partial uploads that are not complete
// yet; the final upload is assembled when the last of them completes. Raw HTTP throughout.

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const idOf = (url: string) => url.split('/').pop()!;
const b64 = (text: string) => Buffer.from(text).toString('base64');

function shuffle<T>(items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('resumable: tus concatenation-unfinished', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable();
  });
  afterEach(() => srv.close());

  /** A new middleware and server over the same directory (the client's keep-alive sockets to the old one are gone). */
  async function restart(): Promise<void> {
    await srv.restart();
    await new Promise((r) => setTimeout(r, 50));
  }

  async function partial(length: number | undefined): Promise<string> {
    const size: Record<string, number> = length === undefined ? { 'Upload-Defer-Length': 1 } : { 'Upload-Length': length };
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': 'partial', ...size });
    expect(res.status).toBe(201);
    return srv.url + res.headers.location!;
  }

  async function patch(url: string, offset: number, data: Buffer, headers: Record<string, string | number> = {}) {
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset, ...headers }, data);
    expect(res.status).toBe(204);
    expect(res.headers['upload-offset']).toBe(String(offset + data.length));
    return res;
  }

  async function declareFinal(parts: string[], headers: Record<string, string> = {}) {
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${parts.map((p) => new URL(p).pathname).join(' ')}`, ...headers });
    expect(res.status).toBe(201);
    return { res, url: srv.url + res.headers.location! };
  }

  test('OPTIONS advertises concatenation-unfinished', async () => {
    const res = await request(srv.endpoint, 'OPTIONS', {});
    expect(String(res.headers['tus-extension']).split(',')).toEqual(expect.arrayContaining(['concatenation', 'concatenation-unfinished']));
  });

  test.each([1, 2, 3])('final declared before its partials finish; partials finish in random order (round %i): assembled once, byte-exact', async () => {
    const pieces = [randomBytes(MiB + 17), randomBytes(1), randomBytes(300 * KiB), randomBytes(0), randomBytes(2 * MiB + 5)];
    const whole = Buffer.concat(pieces);
    const urls = await Promise.all(pieces.map((piece) => partial(piece.length)));
    // Some bytes before the final is declared, to some partials.
    await patch(urls[0], 0, pieces[0].subarray(0, 1000));
    await patch(urls[4], 0, pieces[4].subarray(0, MiB));
    const { res: created, url } = await declareFinal(urls, { 'Upload-Metadata': `filename ${b64('joined.bin')}` });
    expect(created.headers['upload-offset']).toBeUndefined(); // no offset before the concatenation
    expect(created.headers['upload-expires']).toBeUndefined();
    const head = await request(url, 'HEAD', TUS);
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBeUndefined();
    expect(head.headers['upload-length']).toBe(String(whole.length)); // every partial's length is known
    expect(head.headers['upload-concat']).toBe(`final;${urls.map((u) => new URL(u).pathname).join(' ')}`);
    expect((await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('x'))).status).toBe(403);

    const order = shuffle([0, 1, 2, 4]); // partial 3 is empty: complete since its creation
    for (const [n, i] of order.entries()) {
      const offset = i === 0 ? 1000 : i === 4 ? MiB : 0;
      await patch(urls[i], offset, pieces[i].subarray(offset));
      // Assembled by the request that completed the last partial, before it was answered (not by a HEAD).
      expect(srv.completed).toHaveLength(n < order.length - 1 ? 0 : 1);
      const now = await request(url, 'HEAD', TUS);
      if (n < order.length - 1) {
        expect(now.headers['upload-offset']).toBeUndefined();
      } else {
        expect(now.headers['upload-offset']).toBe(String(whole.length));
        expect(now.headers['upload-length']).toBe(String(whole.length));
      }
    }
    expect(srv.completed).toHaveLength(1); // onComplete once, for the final only
    expect(srv.completed[0].size).toBe(whole.length);
    expect(srv.completed[0].sha256).toBe(sha(whole));
    expect(srv.completed[0].readBack).toBe(sha(whole));
    expect(srv.completed[0].file.originalname).toBe('joined.bin');
    // Partials stay usable for another final (tus: "They MAY however be used multiple times").
    const again = await declareFinal([urls[2], urls[0]]);
    expect(again.res.headers['upload-offset']).toBe(String(pieces[2].length + pieces[0].length));
    expect(srv.completed[1].readBack).toBe(sha(Buffer.concat([pieces[2], pieces[0]])));
  });

  test('a partial with a deferred length: Upload-Length of the final is known once every partial declares its own', async () => {
    const a = randomBytes(5000);
    const b = randomBytes(7000);
    const [pa, pb] = [await partial(a.length), await partial(undefined)];
    const { url } = await declareFinal([pa, pb]);
    expect((await request(url, 'HEAD', TUS)).headers['upload-length']).toBeUndefined();
    await patch(pb, 0, b.subarray(0, 100), { 'Upload-Length': b.length });
    expect((await request(url, 'HEAD', TUS)).headers['upload-length']).toBe(String(a.length + b.length));
    await patch(pb, 100, b.subarray(100));
    await patch(pa, 0, a);
    expect(srv.completed).toHaveLength(1);
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe(String(a.length + b.length));
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([a, b])));
  });

  test('a partial terminated: its pending final is removed (404); a new final naming it is refused; nothing completes', async () => {
    const a = randomBytes(3000);
    const [pa, pb] = [await partial(a.length), await partial(4000)];
    await patch(pb, 0, randomBytes(1000));
    const { url } = await declareFinal([pa, pb]);
    expect((await request(pb, 'DELETE', TUS)).status).toBe(204);
    expect((await request(url, 'HEAD', TUS)).status).toBe(404);
    expect((await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${new URL(pa).pathname} ${new URL(pb).pathname}` })).status).toBe(400);
    await patch(pa, 0, a);
    expect(srv.completed).toHaveLength(0);
    // What is left is the complete partial alone: bytes and state.
    expect(srv.dir.files().sort()).toEqual([idOf(pa), `${idOf(pa)}.json`].sort());
  });

  test('a partial expires: HEAD on the final answers 404 and removes it; sweep() removes the rest, nothing is left', async () => {
    await srv.close();
    srv = await startResumable({ expiration: 1000 });
    const [pa, pb, pc] = [await partial(10), await partial(20), await partial(30)];
    await patch(pa, 0, randomBytes(10)); // complete, but a complete partial still expires
    const first = await declareFinal([pa, pb]);
    const second = await declareFinal([pa, pc]);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await request(first.url, 'HEAD', TUS)).status).toBe(404);
    expect(await srv.middleware.sweep()).toBe(4); // 3 expired partials + the second final
    expect((await request(second.url, 'HEAD', TUS)).status).toBe(404);
    expect(srv.dir.files()).toEqual([]);
    expect(srv.completed).toHaveLength(0);
  });

  test('restart between (a new middleware over the same directory): the last partial completing there assembles the final', async () => {
    const a = randomBytes(2 * MiB + 1);
    const b = randomBytes(MiB + 3);
    const [pa, pb] = [await partial(a.length), await partial(b.length)];
    await patch(pb, 0, b.subarray(0, 1000));
    const { url } = await declareFinal([pa, pb]);
    await patch(pa, 0, a);
    await restart();
    await patch(pb, 1000, b.subarray(1000));
    expect(srv.completed).toHaveLength(1); // found through the link persisted on the partial, not by a HEAD
    const head = await request(url, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(a.length + b.length));
    expect(head.headers['upload-length']).toBe(String(a.length + b.length));
    expect(srv.completed[0].sha256).toBe(sha(Buffer.concat([a, b])));
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([a, b])));
  });

  test('a final whose last partial completed without assembling it (its link lost, e.g. a crash) is assembled at its next HEAD', async () => {
    const a = randomBytes(4000);
    const b = randomBytes(6000);
    const [pa, pb] = [await partial(a.length), await partial(b.length)];
    const { url } = await declareFinal([pa, pb]);
    await restart();
    for (const p of [pa, pb]) {
      const file = join(srv.dir.path, `${idOf(p)}.json`);
      const state = JSON.parse(readFileSync(file, 'utf8'));
      expect(state.extra.finals).toBe(idOf(url)); // the persisted link
      writeFileSync(file, JSON.stringify({ ...state, extra: {} }));
    }
    await patch(pa, 0, a);
    await patch(pb, 0, b);
    expect(srv.completed).toHaveLength(0);
    const head = await request(url, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(a.length + b.length));
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([a, b])));
  });

  test('declaring a final while one of its partials is being appended to does not interrupt that append; the link is written once it is free', async () => {
    const a = randomBytes(MiB);
    const b = randomBytes(3000);
    const [pa, pb] = [await partial(a.length), await partial(b.length)];
    let release!: () => void;
    const stalled = new Promise<void>((resolve) => (release = resolve));
    async function* body() {
      yield a.subarray(0, 64 * KiB);
      await stalled;
      yield a.subarray(64 * KiB);
    }
    const appending = request(pa, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': a.length }, body());
    // The append holds the partial now: its first 64 KiB are on disk, the rest is not sent yet.
    await eventually(() => expect(statSync(join(srv.dir.path, idOf(pa))).size).toBe(64 * KiB));
    const { url } = await declareFinal([pa, pb]);
    release();
    const done = await appending;
    expect(done.status).toBe(204);
    expect(done.headers['upload-offset']).toBe(String(a.length));
    await eventually(() => expect(JSON.parse(readFileSync(join(srv.dir.path, `${idOf(pa)}.json`), 'utf8')).extra.finals).toBe(idOf(url)));
    await patch(pb, 0, b);
    expect(srv.completed).toHaveLength(1);
    expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe(String(a.length + b.length));
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([a, b])));
  });

  test('two instances with redisLocker: a final declared on B while A appends to one of its partials does not end that append', async () => {
    const prefix = `concat-${randomBytes(3).toString('hex')}:`;
    const lockA = redisLocker({ url: process.env.REDIS_URL, prefix });
    const lockB = redisLocker({ url: process.env.REDIS_URL, prefix });
    await srv.close();
    const dir = tempDir('spool-concat-two-');
    srv = await startResumable({ locker: lockA }, dir);
    const other = await startResumable({ locker: lockB }, dir);
    try {
      const a = randomBytes(MiB);
      const b = randomBytes(3000);
      const [pa, pb] = [await partial(a.length), await partial(b.length)];
      let release!: () => void;
      const stalled = new Promise<void>((resolve) => (release = resolve));
      async function* body() {
        yield a.subarray(0, 64 * KiB);
        await stalled;
        yield a.subarray(64 * KiB);
      }
      const appending = request(pa, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': a.length }, body());
      await eventually(() => expect(statSync(join(dir.path, idOf(pa))).size).toBe(64 * KiB));
      const final = await request(other.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${new URL(pa).pathname} ${new URL(pb).pathname}` });
      expect(final.status).toBe(201);
      await new Promise((r) => setTimeout(r, 300)); // B tries to link pa at least once meanwhile
      release();
      const done = await appending;
      expect(done.status).toBe(204);
      expect(done.headers['upload-offset']).toBe(String(a.length));
      const finalId = idOf(final.headers.location!);
      await eventually(() => expect(JSON.parse(readFileSync(join(dir.path, `${idOf(pa)}.json`), 'utf8')).extra.finals).toBe(finalId), 10_000);
      // The last partial completes on A, which learns of the final from the partial's state.
      await patch(pb, 0, b);
      expect(srv.completed).toHaveLength(1);
      expect(srv.completed[0].readBack).toBe(sha(Buffer.concat([a, b])));
    } finally {
      other.middleware.close();
      await close(other.server);
      await Promise.all([lockA.close(), lockB.close()]);
    }
  }, 30_000);

  test('an onComplete rejection for the final answers the request that completed its last partial; the final stays complete', async () => {
    await srv.close();
    srv = await startResumable({
      onComplete: (file) => {
        if (file.originalname === 'refused.bin') throw new SpoolError('FILE_REJECTED', 'not this one');
      },
    });
    const [pa, pb] = [await partial(3), await partial(2)];
    const { url } = await declareFinal([pa, pb], { 'Upload-Metadata': `filename ${b64('refused.bin')}` });
    await patch(pa, 0, Buffer.from('abc'));
    const last = await request(pb, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('de'));
    expect(last.status).toBe(400);
    expect(last.body).toBe('not this one');
    const head = await request(url, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe('5');
    expect(srv.completed).toHaveLength(1); // the hook ran once
  });

  test('concurrent completion of the last two partials assembles the final exactly once', async () => {
    const pieces = [randomBytes(700 * KiB), randomBytes(900 * KiB), randomBytes(10)];
    const urls = await Promise.all(pieces.map((piece) => partial(piece.length)));
    await patch(urls[2], 0, pieces[2]);
    const { url } = await declareFinal(urls);
    const results = await Promise.all([0, 1].map((i) => request(urls[i], 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, pieces[i])));
    expect(results.map((r) => r.status)).toEqual([204, 204]);
    await eventually(async () => expect((await request(url, 'HEAD', TUS)).headers['upload-offset']).toBe(String(1600 * KiB + 10)));
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat(pieces)));
  });
});

describe('resumable: tus concatenation-unfinished on s3ResumableStore (through the store contract)', () => {
  let client: S3Client;
  let bucket: string;
  useTestBucket((c, b) => {
    client = c;
    bucket = b;
  });
  let srv: ResumableServer;
  let prefix: string;
  beforeEach(async () => {
    prefix = `concat-${randomBytes(3).toString('hex')}/`;
    srv = await startResumable({ store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB' }) });
  });
  afterEach(() => srv.close());

  const keys = async () => ((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? []).map((o) => o.Key!.slice(prefix.length));

  async function partial(length: number): Promise<string> {
    const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': 'partial', 'Upload-Length': length });
    expect(res.status).toBe(201);
    return srv.url + res.headers.location!;
  }

  test('partials (one ≥ 5 MiB) finished after the final is declared, a restart between: byte-exact, once', async () => {
    const pieces = [randomBytes(6 * MiB + 3), randomBytes(100 * KiB), randomBytes(2 * MiB)];
    const urls = await Promise.all(pieces.map((piece) => partial(piece.length)));
    const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${urls.map((u) => new URL(u).pathname).join(' ')}` });
    expect(final.status).toBe(201);
    const url = srv.url + final.headers.location!;
    for (const [n, i] of [2, 0, 1].entries()) {
      if (n === 1) {
        await srv.restart();
        await new Promise((r) => setTimeout(r, 50));
      }
      const res = await request(urls[i], 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, pieces[i]);
      expect(res.status).toBe(204);
      expect(srv.completed).toHaveLength(n === 2 ? 1 : 0);
    }
    const head = await request(url, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(pieces.reduce((sum, p) => sum + p.length, 0)));
    expect(srv.completed[0].file.storage).toBe('s3');
    expect(srv.completed[0].readBack).toBe(sha(Buffer.concat(pieces)));
    expect(srv.completed[0].sha256).toBe(sha(Buffer.concat(pieces)));
  }, 60_000);

  test('a partial terminated: the pending final and its objects are removed', async () => {
    const [pa, pb] = [await partial(10), await partial(20)];
    const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${new URL(pa).pathname} ${new URL(pb).pathname}` });
    const finalId = idOf(final.headers.location!);
    expect((await keys()).some((key) => key.startsWith(finalId))).toBe(true);
    expect((await request(pb, 'DELETE', TUS)).status).toBe(204);
    expect((await request(srv.url + final.headers.location!, 'HEAD', TUS)).status).toBe(404);
    expect((await keys()).filter((key) => key.startsWith(finalId) || key.startsWith(idOf(pb)))).toEqual([]);
  });
});

describe('concatenation: false', () => {
  test('Upload-Concat (partial or final) is 400 and creates nothing; OPTIONS leaves the extension out; plain uploads go on', async () => {
    const srv = await startResumable({ concatenation: false });
    try {
      const options = await request(srv.endpoint, 'OPTIONS', TUS);
      expect(options.headers['tus-extension']).not.toMatch(/concatenation/);
      expect(options.headers['tus-extension']).toMatch(/creation/);
      const partial = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 3, 'Upload-Concat': 'partial' });
      expect(partial.status).toBe(400);
      expect(partial.body).toMatch(/concatenation is turned off/);
      const plain = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 3 });
      expect(plain.status).toBe(201);
      const final = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Concat': `final;${plain.headers.location}` });
      expect(final.status).toBe(400);
      expect(srv.dir.files().filter((name) => name.endsWith('.json'))).toHaveLength(1); // the plain upload's state only
    } finally {
      await srv.close();
    }
  });

  test('on by default: OPTIONS announces concatenation and concatenation-unfinished', async () => {
    const srv = await startResumable();
    try {
      expect((await request(srv.endpoint, 'OPTIONS', TUS)).headers['tus-extension']).toMatch(/,concatenation,concatenation-unfinished$/);
    } finally {
      await srv.close();
    }
  });
});
