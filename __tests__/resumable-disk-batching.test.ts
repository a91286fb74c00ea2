import { createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import net from 'node:net';
// The module object itself, so that its `writev` can be spied on (as helpers/data-writes does).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fsp = require('node:fs/promises') as typeof import('node:fs/promises');
import { eventually } from './helpers/app';
import { onDataWrites } from './helpers/data-writes';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';

// The disk store gathers an append's chunks into batches (one writev each) and writes what it holds as
// soon as the client pauses or the request is cut: batching must never cost a byte the client sent.

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let srv: ResumableServer;
beforeEach(async () => {
  srv = await startResumable();
});
afterEach(async () => {
  jest.restoreAllMocks();
  await srv.close();
});

async function create(length: number): Promise<string> {
  const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': length });
  expect(res.status).toBe(201);
  return srv.url + res.headers.location!;
}

/** Sizes of the data writes made while `run` runs. */
async function writeSizes(run: () => Promise<void>): Promise<number[]> {
  const sizes: number[] = [];
  onDataWrites((bytes) => void sizes.push(bytes));
  await run();
  return sizes;
}

test('an 8 MiB PATCH is written in batches of at most 128 KiB that grow to 128 KiB while the disk is busy, byte-exact', async () => {
  const data = randomBytes(8 * MiB + 3);
  const url = await create(data.length);
  // A disk that takes 5 ms per write: what arrives meanwhile goes out as one batch (eager batches).
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  const sizes: number[] = [];
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (...a: unknown[]) => void) => {
    sizes.push(buffers.reduce((n, b) => n + b.length, 0));
    setTimeout(() => real(fd, buffers, position, cb), 5);
  }) as never);
  const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
  expect(res.status).toBe(204);
  // (the state file is written with writeFile, not seen here)
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
  for (const n of sizes) expect(n).toBeLessThanOrEqual(128 * KiB);
  // Socket reads are at most 64 KiB: batches of 128 KiB exist only if the writer gathered while a write was out.
  expect(sizes.filter((n) => n === 128 * KiB).length).toBeGreaterThan(0);
  expect(sizes.length).toBeLessThan(data.length / (64 * KiB));
  expect(srv.completed[0].readBack).toBe(sha(data));
});

test('with a disk that keeps up, bytes go out as they come (no waiting for a full batch), byte-exact', async () => {
  const data = randomBytes(2 * MiB + 5);
  const url = await create(data.length);
  const sizes = await writeSizes(async () => {
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(res.status).toBe(204);
  });
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
  for (const n of sizes) expect(n).toBeLessThanOrEqual(128 * KiB);
  // The first bytes went out at once, not once a full batch had gathered.
  expect(sizes[0]).toBeLessThan(128 * KiB);
  expect(srv.completed[0].readBack).toBe(sha(data));
});

test('a client that pauses mid-batch: its bytes are written while it waits, and a cut keeps every byte received', async () => {
  const data = randomBytes(2 * MiB);
  const url = await create(data.length);
  const { port } = new URL(url);
  const path = new URL(url).pathname;
  const sent = 300 * KiB + 17; // less than a batch
  const socket = net.connect(Number(port), '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  socket.on('error', () => undefined);
  socket.write(
    `PATCH ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n` +
      `Upload-Offset: 0\r\nContent-Length: ${data.length}\r\n\r\n`,
  );
  socket.write(data.subarray(0, sent));
  // The client now pauses: the bytes it sent reach the file without waiting for a full batch.
  const file = `${srv.dir.path}/${path.split('/').pop()}`;
  await eventually(() => expect(statSync(file).size).toBe(sent));
  socket.destroy();
  await eventually(async () => {
    const head = await request(url, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(sent));
  });
  const rest = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': sent }, data.subarray(sent));
  expect(rest.status).toBe(204);
  expect(srv.completed[0].readBack).toBe(sha(data));
});

test('a long append records its offset at least every 8 MiB, never past the bytes on disk, byte-exact', async () => {
  const data = randomBytes(40 * MiB + 11);
  const url = await create(data.length);
  const file = `${srv.dir.path}/${new URL(url).pathname.split('/').pop()}`;
  // A disk that is slow at times, so that batches end at uneven offsets.
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  let n = 0;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (...a: unknown[]) => void) => {
    setTimeout(() => real(fd, buffers, position, cb), n++ % 3 === 0 ? 3 : 0);
  }) as never);
  // Every state write, read as it is renamed into place, beside the bytes on disk at that moment.
  const realRename = fsp.rename;
  const recorded: { offset: number; onDisk: number }[] = [];
  jest.spyOn(fsp, 'rename').mockImplementation(async (from, to) => {
    if (String(to).endsWith('.json')) {
      const state = JSON.parse(fs.readFileSync(String(from), 'utf8')) as { offset: number };
      recorded.push({ offset: state.offset, onDisk: fs.existsSync(file) ? fs.statSync(file).size : 0 });
    }
    return realRename(from, to);
  });
  const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
  expect(res.status).toBe(204);
  const offsets = recorded.map((r) => r.offset);
  expect(offsets[offsets.length - 1]).toBe(data.length);
  let last = 0;
  for (const { offset, onDisk } of recorded) {
    expect(offset).toBeLessThanOrEqual(onDisk);
    expect(offset - last).toBeLessThanOrEqual(8 * MiB);
    last = Math.max(last, offset);
  }
  expect(offsets.filter((o) => o > 0 && o < data.length).length).toBeGreaterThanOrEqual(4);
  expect(srv.completed[0].readBack).toBe(sha(data));
});
