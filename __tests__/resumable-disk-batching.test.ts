import { createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import net from 'node:net';
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

test('an 8 MiB PATCH is written in 512 KiB batches, byte-exact', async () => {
  const data = randomBytes(8 * MiB + 3);
  const url = await create(data.length);
  const sizes = await writeSizes(async () => {
    const res = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(res.status).toBe(204);
  });
  const dataWrites = sizes; // (the state file is written with writeFile, not seen here)
  expect(dataWrites.reduce((a, b) => a + b, 0)).toBe(data.length);
  for (const n of dataWrites.slice(0, -1)) expect(n).toBeGreaterThanOrEqual(512 * KiB);
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
