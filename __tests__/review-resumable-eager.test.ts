import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { eventually, fdsUnder } from './helpers/app';
import { enospc } from './helpers/data-writes';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';
import { rawConnection, type RawConnection } from './helpers/raw-http';

// Hostile review of ea99e0b: the resumable disk store's BatchedFileWriter in eager mode (batches end anywhere)
// and the checkpoints asked for once `offset - last asked >= 8 MiB - batchBytes`. Real sockets, a real server,
// the real filesystem; only fs.writev (the data writes) and fs/promises.rename (the state writes) are wrapped,
// to make the disk slow / irregular / failing and to look at each state as it is renamed into place.

// The module objects themselves, so that their functions can be spied on.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fsp = require('node:fs/promises') as typeof import('node:fs/promises');

jest.setTimeout(30_000);

const KiB = 1024;
const MiB = 1024 * KiB;
const CHECKPOINT = 8 * MiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));

let srv: ResumableServer | undefined;
let port: number;

afterEach(async () => {
  jest.restoreAllMocks();
  await srv?.close();
  srv = undefined;
});

async function start(options: Parameters<typeof startResumable>[0] = {}): Promise<ResumableServer> {
  srv = await startResumable(options);
  port = Number(new URL(srv.url).port);
  return srv;
}
const server = () => srv as ResumableServer;


async function settledResources(): Promise<void> {
  await eventually(() => expect({ used: server().middleware.memoryBudget.used, fds: fdsUnder(server().dir.path) }).toEqual({ used: 0, fds: 0 }), 5000);
}

async function create(length: number, headers: Record<string, string | number> = { ...TUS }): Promise<string> {
  const res = await request(server().endpoint, 'POST', { 'Upload-Length': length, ...headers });
  expect(res.status).toBe(201);
  return new URL(server().url + res.headers.location!).pathname;
}

const idOf = (path: string) => path.split('/').pop()!;
const dataPath = (path: string) => join(server().dir.path, idOf(path));
const statePath = (path: string) => join(server().dir.path, `${idOf(path)}.json`);
const sizeOnDisk = (path: string) => (existsSync(dataPath(path)) ? statSync(dataPath(path)).size : 0);
const stateOffset = (path: string) => (JSON.parse(readFileSync(statePath(path), 'utf8')) as { offset: number }).offset;

async function head(path: string, headers: Record<string, string> = TUS): Promise<number> {
  const res = await request(server().url + path, 'HEAD', headers);
  expect(res.status).toBe(headers === TUS ? 200 : 204); // (the IETF draft answers HEAD with 204)
  return Number(res.headers['upload-offset']);
}

/** HEAD's offset equals the bytes on disk, and they are the client's bytes. */
async function expectConsistent(path: string, data: Buffer): Promise<number> {
  const offset = await head(path);
  expect(sizeOnDisk(path)).toBe(offset);
  const onDisk = existsSync(dataPath(path)) ? readFileSync(dataPath(path)) : Buffer.alloc(0);
  expect(sha(onDisk.subarray(0, offset))).toBe(sha(data.subarray(0, offset)));
  return offset;
}

async function finish(path: string, data: Buffer, expectedCompleted = 1): Promise<void> {
  const offset = await head(path);
  const res = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset));
  expect([res.status, res.headers['upload-offset']]).toEqual([204, String(data.length)]);
  await eventually(() => expect(server().completed.length).toBe(expectedCompleted));
  const done = server().completed.find((c) => c.file.size === data.length && c.readBack === sha(data));
  expect(done?.sha256).toBe(sha(data));
}

const raw = (): RawConnection => rawConnection(port);

function patchHead(path: string, offset: number, length: number, extra = ''): string {
  return `PATCH ${path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: ${offset}\r\nContent-Length: ${length}\r\n${extra}\r\n`;
}

/** Sends `body` in random pieces of 1..maxPiece bytes, each awaited until the kernel took it. */
async function sendIrregular(c: RawConnection, body: Buffer, maxPiece = 64 * KiB): Promise<void> {
  for (let at = 0; at < body.length && !c.socket.destroyed; ) {
    const n = Math.min(body.length - at, rand(1, maxPiece));
    await c.write(body.subarray(at, at + n));
    at += n;
  }
}

type WritevCallback = (err: NodeJS.ErrnoException | null, written?: number) => void;
interface DiskWrite {
  fd: number;
  bytes: number;
  position: number | null;
}

/**
 * Wraps fs.writev (the batches): `delay` ms before each real write (a slow / irregular disk), `fail` may
 * fail one (nothing written then), `before` sees each write before it goes to the kernel.
 */
function disk(options: { delay?: (w: DiskWrite, n: number) => number; fail?: (w: DiskWrite) => NodeJS.ErrnoException | undefined; before?: (w: DiskWrite) => void }): DiskWrite[] {
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  const writes: DiskWrite[] = [];
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: WritevCallback) => {
    const w: DiskWrite = { fd, bytes: buffers.reduce((n, b) => n + b.length, 0), position };
    const n = writes.push(w);
    options.before?.(w);
    const err = options.fail?.(w);
    if (err) return void setImmediate(() => cb(err));
    const ms = options.delay?.(w, n) ?? 0;
    if (ms > 0) setTimeout(() => real(fd, buffers, position, cb), ms);
    else real(fd, buffers, position, cb);
  }) as never);
  return writes;
}

/** Every state renamed into place for `path` (its offset, and the data file's size at that moment). */
function watchStates(path: () => string | undefined, delay?: () => number): { offset: number; onDisk: number }[] {
  const realRename = fsp.rename;
  const recorded: { offset: number; onDisk: number }[] = [];
  jest.spyOn(fsp, 'rename').mockImplementation(async (from, to) => {
    const p = path();
    if (p && String(to) === statePath(p)) {
      const ms = delay?.() ?? 0;
      if (ms > 0) await sleep(ms);
      const state = JSON.parse(readFileSync(String(from), 'utf8')) as { offset: number };
      recorded.push({ offset: state.offset, onDisk: sizeOnDisk(p) });
    }
    return realRename(from, to);
  });
  return recorded;
}

/** Recorded offsets never past the bytes on disk, never more than 8 MiB apart, non-decreasing. */
function expectCheckpoints(recorded: { offset: number; onDisk: number }[], start: number, end: number): void {
  let last = start;
  const problems: string[] = [];
  for (const { offset, onDisk } of recorded) {
    if (offset > onDisk) problems.push(`offset ${offset} > on disk ${onDisk}`);
    if (offset < last) problems.push(`offset ${offset} < previous ${last}`);
    if (offset - last > CHECKPOINT) problems.push(`gap ${offset - last} > 8 MiB (from ${last} to ${offset})`);
    last = Math.max(last, offset);
  }
  expect(problems).toEqual([]);
  expect(last).toBe(end);
}

// ---------------------------------------------------------------------------------------------------------

describe('cuts at random byte positions, slow / fast / irregular disks', () => {
  const disks: [string, (w: DiskWrite, n: number) => number][] = [
    ['fast', () => 0],
    ['slow (8 ms a write)', () => 8],
    ['irregular (0–15 ms, some stalls)', (_w, n) => (n % 7 === 0 ? 25 : rand(0, 6))],
  ];
  test.each(disks)('%s: after a pause + cut, HEAD = bytes delivered = disk size; after a blind cut a consistent prefix; byte-exact', async (_name, delay) => {
    await start();
    disk({ delay });
    const data = randomBytes(6 * MiB + rand(0, 99_999));
    const path = await create(data.length);
    let delivered = 0;
    for (let round = 0; round < 10; round++) {
      const offset = await expectConsistent(path, data);
      expect(offset).toBeLessThanOrEqual(delivered);
      const paused = round % 2 === 0;
      if (paused) expect(offset).toBe(delivered);
      const send = rand(1, Math.min(900 * KiB, data.length - offset - 1));
      const c = raw();
      await c.write(patchHead(path, offset, data.length - offset));
      await sendIrregular(c, data.subarray(offset, offset + send));
      delivered = offset + send;
      // Every byte reached the server and the disk (even a slow one) before the cut, or not.
      if (round % 2 === 1) await eventually(() => expect(sizeOnDisk(path)).toBe(delivered));
      c.socket.destroy();
      await c.closed;
      if (round % 2 === 1) {
        // The append may still be finishing: HEAD supersedes it, and must report every byte delivered.
        expect(await expectConsistent(path, data)).toBe(delivered);
      }
    }
    await finish(path, data);
    await settledResources();
  });
});

describe('recorded offsets during one long PATCH: never past the disk, never more than 8 MiB apart', () => {
  test('large batches, irregular client pieces and an irregular disk (batches end anywhere)', async () => {
    await start();
    let path: string | undefined;
    const recorded = watchStates(() => path);
    const writes = disk({ delay: (_w, n) => (n % 5 === 0 ? rand(2, 6) : 0) });
    const data = randomBytes(26 * MiB + rand(1, 99_999));
    path = await create(data.length);
    const c = raw();
    await c.write(patchHead(path, 0, data.length));
    await sendIrregular(c, data, 200 * KiB);
    expect(await c.status()).toMatch(/^HTTP\/1\.1 204/);
    c.socket.destroy();
    const sizes = writes.map((w) => w.bytes);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(128 * KiB);
    // Eager: batch ends are not 128 KiB-aligned.
    expect(writes.some((w) => (w.position as number) % (128 * KiB) !== 0)).toBe(true);
    expectCheckpoints(recorded, 0, data.length);
    // At least the 3 checkpoints 26 MiB needs (every ≤ 8 MiB) besides the final record.
    expect(recorded.filter((r) => r.offset > 0 && r.offset < data.length).length).toBeGreaterThanOrEqual(3);
    await eventually(() => expect(server().completed.length).toBe(1));
    expect(server().completed[0].readBack).toBe(sha(data));
    await settledResources();
  });

  test('a memory budget without room for two large batches (32 KiB batches), irregular disk: same promises, batches ≤ 32 KiB', async () => {
    // 576 KiB: the append's 64 KiB share + 2 × 128 KiB would take it past half, so the append takes small batches.
    await start({ memoryBudget: '576KiB' });
    let path: string | undefined;
    const recorded = watchStates(() => path);
    const writes = disk({ delay: (_w, n) => (n % 11 === 0 ? rand(1, 4) : 0) });
    const data = randomBytes(20 * MiB + rand(1, 99_999));
    path = await create(data.length);
    const c = raw();
    await c.write(patchHead(path, 0, data.length));
    await sendIrregular(c, data, 128 * KiB);
    expect(await c.status()).toMatch(/^HTTP\/1\.1 204/);
    c.socket.destroy();
    expect(Math.max(...writes.map((w) => w.bytes))).toBeLessThanOrEqual(32 * KiB);
    expectCheckpoints(recorded, 0, data.length);
    expect(recorded.filter((r) => r.offset > 0 && r.offset < data.length).length).toBeGreaterThanOrEqual(2);
    await eventually(() => expect(server().completed.length).toBe(1));
    expect(server().completed[0].readBack).toBe(sha(data));
    await settledResources();
  });

  test('a resumed PATCH from a non-zero, unaligned offset: checkpoints counted from where it started', async () => {
    await start();
    const data = randomBytes(22 * MiB + 3);
    let path: string | undefined = await create(data.length);
    const first = 3 * MiB + 12_345;
    const r1 = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data.subarray(0, first));
    expect(r1.status).toBe(204);
    const recorded = watchStates(() => path);
    disk({ delay: (_w, n) => (n % 4 === 0 ? 3 : 0) });
    const c = raw();
    await c.write(patchHead(path, first, data.length - first));
    await sendIrregular(c, data.subarray(first), 100 * KiB);
    expect(await c.status()).toMatch(/^HTTP\/1\.1 204/);
    c.socket.destroy();
    expectCheckpoints(recorded, first, data.length);
    await eventually(() => expect(server().completed.length).toBe(1));
    expect(server().completed[0].readBack).toBe(sha(data));
    path = undefined;
    await settledResources();
  });
});

describe('a crash-like failure (ENOSPC / EIO on a data write) at random points', () => {
  test.each([
    ['ENOSPC', enospc, {}],
    ['EIO', () => Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', errno: -5 }), {}],
    ['ENOSPC, small batches', enospc, { memoryBudget: '1MiB' }],
  ] as const)('%s: HEAD = the last recorded checkpoint (≤ bytes written, within 8 MiB of them); no fd, budget back; resume byte-exact', async (_n, error, options) => {
    await start(options);
    const data = randomBytes(24 * MiB + rand(1, 9999));
    let path: string | undefined;
    const recorded = watchStates(() => path);
    path = await create(data.length);
    let failAt = Infinity;
    let failedAt = -1;
    disk({
      delay: (_w, n) => (n % 6 === 0 ? 2 : 0),
      fail: (w) => {
        if (failedAt < 0 && w.position !== null && w.position + w.bytes > failAt) {
          failedAt = w.position;
          return error();
        }
        return undefined;
      },
    });
    for (let round = 0; round < 3; round++) {
      const offset = await head(path);
      expect(sizeOnDisk(path) >= offset).toBe(true);
      failAt = offset + rand(1, 10 * MiB);
      failedAt = -1;
      recorded.length = 0;
      const c = raw();
      await c.write(patchHead(path, offset, data.length - offset));
      await sendIrregular(c, data.subarray(offset), 256 * KiB).catch(() => undefined);
      const status = await c.status();
      c.socket.destroy();
      expect(failedAt).toBeGreaterThanOrEqual(offset);
      expect(status).toMatch(/^HTTP\/1\.1 5\d\d/);
      await settledResources();
      // Nothing of the failed batch (or after it) is on disk beyond where it would go.
      expect(sizeOnDisk(path)).toBe(failedAt);
      const lastRecorded = recorded.length ? recorded[recorded.length - 1].offset : offset;
      const now = await head(path);
      expect(now).toBe(lastRecorded);
      expect(stateOffset(path)).toBe(lastRecorded);
      expect(now).toBeLessThanOrEqual(failedAt);
      expect(failedAt - now).toBeLessThanOrEqual(CHECKPOINT);
      expectCheckpoints(recorded, offset, lastRecorded);
      expect(sha(readFileSync(dataPath(path)).subarray(0, now))).toBe(sha(data.subarray(0, now)));
    }
    failAt = Infinity;
    await finish(path, data);
    await settledResources();
  });
});

describe('IETF draft progress 104s', () => {
  const V8 = { 'Upload-Draft-Interop-Version': '8' };
  test.each([
    ['large batches, irregular disk', {}],
    ['small batches (budget half used), slow disk', { memoryBudget: '1MiB' }],
  ] as const)('%s: each 104 offset ≤ bytes on disk and ≤ the state a restart reads, ≤ bytes sent; resume after a cut ≥ the last 104', async (_n, options) => {
    await start({ ...options, interimProgress: { bytes: 96 * KiB, interval: 0 } });
    disk({ delay: (_w, n) => (n % 3 === 0 ? rand(1, 8) : 0) });
    const data = randomBytes(5 * MiB + rand(1, 9999));
    const path = await create(data.length, { ...V8, 'Upload-Complete': '?0' });
    const c = raw();
    const seen: { offset: number; onDisk: number; state: number; sent: number }[] = [];
    let sent = 0;
    let parsed = 0;
    c.socket.on('data', () => {
      const text = c.response();
      const re = /HTTP\/1\.1 104[^]*?\r\n\r\n/g;
      re.lastIndex = parsed;
      for (let m = re.exec(text); m; m = re.exec(text)) {
        parsed = re.lastIndex;
        const o = /upload-offset: (\d+)/i.exec(m[0]);
        if (o) seen.push({ offset: Number(o[1]), onDisk: sizeOnDisk(path), state: stateOffset(path), sent });
      }
    });
    await c.write(
      `PATCH ${path} HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Offset: 0\r\nUpload-Complete: ?1\r\n` +
        `Content-Type: application/partial-upload\r\nContent-Length: ${data.length}\r\n\r\n`,
    );
    // Cut at a random point past 2 MiB once the server has announced a few offsets (the socket buffers let the
    // client run ahead of the server), never at the very end.
    const cutAfter = rand(2 * MiB, 4 * MiB);
    for (let at = 0; at < data.length - 1 && (at < cutAfter || seen.length < 3); ) {
      const n = Math.min(data.length - 1 - at, rand(1, 48 * KiB));
      await c.write(data.subarray(at, at + n));
      at += n;
      sent = at;
      if (n % 3 === 0) await sleep(1);
    }
    await sleep(50);
    c.socket.destroy();
    await c.closed;
    expect(seen.length).toBeGreaterThanOrEqual(3);
    const problems = seen.filter((s) => s.offset > s.onDisk || s.offset > s.state || s.offset > s.sent);
    expect(problems).toEqual([]);
    for (let i = 1; i < seen.length; i++) expect(seen[i].offset).toBeGreaterThanOrEqual(seen[i - 1].offset);
    const offset = await head(path, V8);
    expect(offset).toBeGreaterThanOrEqual(seen[seen.length - 1].offset);
    expect(offset).toBeLessThanOrEqual(sent);
    expect(sizeOnDisk(path)).toBe(offset);
    expect(sha(readFileSync(dataPath(path)).subarray(0, offset))).toBe(sha(data.subarray(0, offset)));
    const rest = await request(server().url + path, 'PATCH', { ...V8, 'Content-Type': 'application/partial-upload', 'Upload-Complete': '?1', 'Upload-Offset': offset }, data.subarray(offset));
    expect(rest.status).toBe(204);
    await eventually(() => expect(server().completed.length).toBe(1));
    expect(server().completed[0].readBack).toBe(sha(data));
    await settledResources();
  });
});

describe('checksummed (atomic) appends are all or nothing', () => {
  const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('base64');
  test('wrong checksum, a cut mid-body, ENOSPC mid-body, on a slow disk: offset and file unchanged each time; a right one lands', async () => {
    await start();
    let failNext = false;
    disk({
      delay: (_w, n) => (n % 2 === 0 ? 4 : 0),
      fail: () => {
        if (!failNext) return undefined;
        failNext = false;
        return enospc();
      },
    });
    const data = randomBytes(9 * MiB + 77);
    const path = await create(data.length);
    const first = rand(100 * KiB, 2 * MiB);
    expect((await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data.subarray(0, first))).status).toBe(204);
    const body = data.subarray(first, first + rand(2 * MiB, 5 * MiB));
    // 1. Wrong checksum: many batches were written before the body ended.
    const wrong = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': first, 'Upload-Checksum': `sha1 ${sha1(Buffer.from('x'))}` }, body);
    expect(wrong.status).toBe(460);
    expect(await expectConsistent(path, data)).toBe(first);
    // 2. Cut mid-body after the disk had many of its bytes.
    const c = raw();
    await c.write(patchHead(path, first, body.length, `Upload-Checksum: sha1 ${sha1(body)}\r\n`));
    const cut = rand(600 * KiB, body.length - 1);
    await sendIrregular(c, body.subarray(0, cut));
    await eventually(() => expect(sizeOnDisk(path)).toBeGreaterThan(first + 256 * KiB));
    c.socket.destroy();
    await c.closed;
    await settledResources();
    expect(await expectConsistent(path, data)).toBe(first);
    // 3. ENOSPC on a data write mid-body.
    const e = raw();
    await e.write(patchHead(path, first, body.length, `Upload-Checksum: sha1 ${sha1(body)}\r\n`));
    await sendIrregular(e, body.subarray(0, 700 * KiB));
    failNext = true;
    await sendIrregular(e, body.subarray(700 * KiB)).catch(() => undefined);
    expect(await e.status()).toMatch(/^HTTP\/1\.1 5\d\d/);
    e.socket.destroy();
    expect(failNext).toBe(false);
    await settledResources();
    expect(await head(path)).toBe(first);
    expect(sha(readFileSync(dataPath(path)).subarray(0, first))).toBe(sha(data.subarray(0, first)));
    // 4. A right checksum lands, then the rest.
    const right = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': first, 'Upload-Checksum': `sha1 ${sha1(body)}` }, body);
    expect([right.status, right.headers['upload-offset']]).toEqual([204, String(first + body.length)]);
    await finish(path, data);
    await settledResources();
  });
});

describe('many concurrent uploads', () => {
  test('12 uploads at once over an irregular disk, each cut at a random point then resumed: all byte-exact, no fd, budget back', async () => {
    await start();
    disk({ delay: (_w, n) => (n % 4 === 0 ? rand(1, 5) : 0) });
    const uploads = await Promise.all(
      Array.from({ length: 12 }, async () => {
        const data = randomBytes(rand(512 * KiB, 3 * MiB));
        return { data, path: await create(data.length) };
      }),
    );
    await Promise.all(
      uploads.map(async ({ data, path }) => {
        const cut = rand(1, data.length - 1);
        const c = raw();
        await c.write(patchHead(path, 0, data.length));
        await sendIrregular(c, data.subarray(0, cut), 48 * KiB);
        if (cut % 2 === 0) await eventually(() => expect(sizeOnDisk(path)).toBe(cut));
        c.socket.destroy();
        await c.closed;
        const offset = await expectConsistent(path, data);
        if (cut % 2 === 0) expect(offset).toBe(cut);
        else expect(offset).toBeLessThanOrEqual(cut);
      }),
    );
    await Promise.all(
      uploads.map(async ({ data, path }) => {
        const offset = await head(path);
        const res = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset));
        expect([res.status, res.headers['upload-offset']]).toEqual([204, String(data.length)]);
      }),
    );
    await eventually(() => expect(server().completed.length).toBe(uploads.length));
    expect(server().completed.map((c) => c.readBack).sort()).toEqual(uploads.map((u) => sha(u.data)).sort());
    await settledResources();
  });
});

describe('what a crash at any instant would find (state file vs data file)', () => {
  // README: "the offset is recorded ... at least every 8 MiB ..., so a crash loses at most that". A crash at
  // an instant keeps the state then on disk; the bytes written past it are cut by the next append. Here the
  // state writes are slowed (a busy disk for metadata): the data writes do not wait for them.
  // DEFECT (pre-existing, not introduced by ea99e0b; also fails at ea99e0b^): Checkpoints.written()/record()
  // (engines/checkpoints.ts) queue the state write and let the BatchedFileWriter go on (resumable-disk.ts
  // `written`), so while a checkpoint's readFile+writeFile+rename is under way the data file runs past the
  // last recorded offset by 8 MiB + whatever is written meanwhile: 20 MiB with 60 ms state writes, and
  // 11.4 MiB was measured once here with unslowed state writes. The 8 MiB bound holds between recorded
  // offsets (tested above), not for "what a crash loses" as README's "Semantics worth knowing" words it.
  test(
    'while a checkpoint state write is slow, the bytes on disk never run more than 8 MiB + 1 MiB (+ one read) past the recorded offset',
    async () => {
      await start();
      const data = randomBytes(20 * MiB);
      let path: string | undefined;
      watchStates(() => path, () => 60);
      let worst = 0;
      disk({
        before: () => {
          if (!path) return;
          const lost = sizeOnDisk(path) - stateOffset(path);
          worst = Math.max(worst, lost);
        },
      });
      path = await create(data.length);
      const res = await request(server().url + path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
      expect(res.status).toBe(204);
      await eventually(() => expect(server().completed.length).toBe(1));
      expect(server().completed[0].readBack).toBe(sha(data));
      // What a crash at the worst instant would have lost of what was on disk: the README's bound (a checkpoint
      // at least every 8 MiB, at most 1 MiB taken in while its state write is under way), plus one socket read.
      expect(worst).toBeLessThanOrEqual(CHECKPOINT + MiB + 128 * KiB);
      expect(worst).toBeGreaterThan(0);
    },
  );
});

describe('an append ended while an eager write is in flight on a very slow disk', () => {
  test('superseding HEAD and a cut mid-write, while other uploads open files: no byte lands in the wrong file, all byte-exact', async () => {
    await start();
    // 40 ms per data write: each cut / supersede below lands while a write is in flight.
    disk({ delay: () => 40 });
    const a = randomBytes(3 * MiB + 11);
    const pathA = await create(a.length);
    const others = await Promise.all([0, 1, 2].map(async () => {
      const data = randomBytes(rand(300 * KiB, 900 * KiB));
      return { data, path: await create(data.length) };
    }));
    for (let round = 0; round < 4; round++) {
      const offset = await head(pathA);
      const c = raw();
      await c.write(patchHead(pathA, offset, a.length - offset));
      const send = rand(200 * KiB, Math.min(700 * KiB, a.length - offset - 1));
      await sendIrregular(c, a.subarray(offset, offset + send));
      // While A's writes are out: other uploads open their files (the kernel reuses fd numbers freed early).
      const rest = Promise.all(others.map(async (o) => {
        const at = await head(o.path);
        // (never the last byte: the uploads complete at the end, in order)
        if (at >= o.data.length - 1) return;
        const piece = o.data.subarray(at, Math.min(o.data.length - 1, at + rand(1, 300 * KiB)));
        const res = await request(server().url + o.path, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': at }, piece);
        expect(res.status).toBe(204);
      }));
      if (round % 2 === 0) {
        // A superseding HEAD ends A's append: it must report every byte A's server side took.
        const now = await head(pathA);
        expect(now).toBeGreaterThanOrEqual(offset);
        expect(now).toBeLessThanOrEqual(offset + send);
      }
      c.socket.destroy();
      await rest;
      await c.closed;
      await expectConsistent(pathA, a);
    }
    await settledResources();
    for (const o of others) await expectConsistent(o.path, o.data);
    jest.restoreAllMocks();
    let done = 0;
    for (const o of [...others, { data: a, path: pathA }]) await finish(o.path, o.data, ++done);
    expect(server().completed.map((c) => c.readBack).sort()).toEqual([...others.map((o) => sha(o.data)), sha(a)].sort());
    await settledResources();
  });
});

describe('IETF creation with a body, cut after a progress 104', () => {
  test('the announced offset survives the cut; the resumed upload is byte-exact', async () => {
    const V8 = { 'Upload-Draft-Interop-Version': '8' };
    await start({ interimProgress: { bytes: 64 * KiB, interval: 0 } });
    disk({ delay: (_w, n) => (n % 2 === 0 ? 3 : 0) });
    const data = randomBytes(4 * MiB + 99);
    const c = raw();
    let location = '';
    let announced = -1;
    let stop = false;
    c.socket.on('data', () => {
      const text = c.response();
      location ||= /location: (\S+)/i.exec(text)?.[1] ?? '';
      const offsets = [...text.matchAll(/upload-offset: (\d+)/gi)].map((m) => Number(m[1]));
      if (offsets.length > 0 && offsets[offsets.length - 1] >= MiB && !stop) {
        announced = offsets[offsets.length - 1];
        stop = true;
        c.socket.destroy();
      }
    });
    await c.write(
      `POST /files HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n` +
        `Content-Type: application/octet-stream\r\nContent-Length: ${data.length}\r\n\r\n`,
    );
    for (let at = 0; at < data.length && !stop; at += 32 * KiB) {
      await c.write(data.subarray(at, at + 32 * KiB));
      await sleep(1);
    }
    await c.closed;
    expect(announced).toBeGreaterThanOrEqual(MiB);
    expect(location).not.toBe('');
    const path = new URL(location, server().url).pathname;
    const offset = await head(path, V8);
    expect(offset).toBeGreaterThanOrEqual(announced);
    expect(sizeOnDisk(path)).toBe(offset);
    expect(sha(readFileSync(dataPath(path)).subarray(0, offset))).toBe(sha(data.subarray(0, offset)));
    const rest = await request(server().url + path, 'PATCH', { ...V8, 'Content-Type': 'application/partial-upload', 'Upload-Complete': '?1', 'Upload-Offset': offset }, data.subarray(offset));
    expect(rest.status).toBe(204);
    await eventually(() => expect(server().completed.length).toBe(1));
    expect(server().completed[0].readBack).toBe(sha(data));
    await settledResources();
  });
});
