/**
 * The multipart disk engine's writer (engines/direct-file-writer.ts): it writes the parser's chunks by
 * reference, queues what comes while a write is in flight, and gives back the chunks claimed for it once their
 * write has returned — never while the kernel may still read them.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import express from 'express';
import request from 'supertest';
import { diskEngine, MemoryBudget, spool, type IncomingFile, type StoreContext } from '../lib';
import { DirectFileWriter } from '../engines/direct-file-writer';
import { FileTap } from '../lib/core/file-tap';
import { claimChunk, markParsedOnly } from '../lib/core/chunk-release';
import { streamInto } from '../lib/core/chunk-sink';
import { tempDir } from './helpers/app';
import { chunked, writevSizes } from './helpers/data-writes';
import { randomData, sha256 } from './helpers/multipart';

// The module object itself (not an ES namespace) so that its `writev` can be spied on.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');

const dir = tempDir('spool-direct-');
afterAll(() => dir.remove());
afterEach(() => jest.restoreAllMocks());

const KiB = 1024;
let n = 0;
const newPath = () => join(dir.path, `f${++n}`);
const openFds = () => readdirSync('/proc/self/fd').length;

/** A chunk the parser alone read and the tap claimed for `writer` (what the multipart path does). */
function claimed(size: number, writer: DirectFileWriter): Buffer {
  const chunk = randomData(size);
  const own = Buffer.from(chunk); // its own ArrayBuffer: randomBytes may hand out a view of a shared pool
  markParsedOnly(own);
  claimChunk(own, writer);
  return own;
}

/** Holds every writev until `release()` (the callback runs then), recording the bytes of each. */
function slowWrites() {
  const held: (() => void)[] = [];
  const sizes: number[] = [];
  const real = fs.writev;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (...a: unknown[]) => void) => {
    sizes.push(buffers.reduce((total, b) => total + b.length, 0));
    (real as (...a: unknown[]) => void)(fd, buffers, position, (...args: unknown[]) => held.push(() => cb(...args)));
  }) as never);
  return {
    sizes,
    held: () => held.length,
    /** Runs the callbacks of the writes that returned so far. */
    async release() {
      while (held.length === 0) await new Promise((r) => setTimeout(r, 1));
      for (const done of held.splice(0)) done();
    },
  };
}

test('writes byte-exact whatever the chunk sizes: the first chunk at once, then what came meanwhile', async () => {
  const data = randomData(3 * 1024 * KiB + 4321);
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; ) {
    const size = Math.min(data.length - at, 1 + Math.floor(Math.random() * 100 * KiB));
    chunks.push(data.subarray(at, at + size));
    at += size;
  }
  const path = newPath();
  const sizes = await writevSizes(async () => {
    await streamInto(Readable.from(chunks, { objectMode: false }), new DirectFileWriter(await open(path, 'wx'), 448 * KiB));
  });
  expect(sha256(readFileSync(path))).toBe(sha256(data));
  expect(sizes[0]).toBe(chunks[0].length);
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(data.length);
});

test('the sender waits once maxQueued bytes wait behind the write in flight, and goes on when it returns', async () => {
  const writes = slowWrites();
  const path = newPath();
  const writer = new DirectFileWriter(await open(path, 'wx'), 100 * KiB);
  const chunk = () => randomData(40 * KiB);
  const sent: Buffer[] = [];
  let drained = 0;
  const send = () => (sent.push(chunk()), writer.write(sent[sent.length - 1], () => drained++));
  expect(send()).toBe(true); // written at once
  expect(send()).toBe(true); // 40 KiB wait
  expect(send()).toBe(true); // 80 KiB
  expect(send()).toBe(false); // 120 KiB: full
  expect(drained).toBe(0);
  await writes.release(); // the first write returns: the three queued go out in one writev
  expect(drained).toBe(1);
  expect(writes.sizes).toEqual([40 * KiB, 120 * KiB]);
  const ended = writer.end();
  await writes.release();
  await ended;
  expect(sha256(readFileSync(path))).toBe(sha256(Buffer.concat(sent)));
});

test('tiny chunks: at most 64 wait behind a write, however few bytes they hold', async () => {
  const writes = slowWrites();
  const path = newPath();
  const writer = new DirectFileWriter(await open(path, 'wx'), 448 * KiB);
  const bytes: Buffer[] = [];
  let accepted = 0;
  for (let i = 0; i < 200; i++) {
    const b = Buffer.from([i & 0xff]);
    bytes.push(b);
    if (!writer.write(b, () => undefined)) break;
    accepted++;
  }
  expect(accepted).toBe(64); // one written at once, 63 queued, the 65th refused
  await writes.release();
  const ended = writer.end();
  await writes.release();
  await ended;
  expect(readFileSync(path)).toEqual(Buffer.concat(bytes));
});

test('claimed chunks are given back once their write returned, never while it is in flight; others are left alone', async () => {
  const writes = slowWrites();
  const path = newPath();
  const writer = new DirectFileWriter(await open(path, 'wx'), 448 * KiB);
  const mine = claimed(64 * KiB, writer);
  const copy = Buffer.from(mine);
  const notMine = Buffer.from(randomData(64 * KiB)); // whole, but never marked or claimed
  const notMineCopy = Buffer.from(notMine);
  writer.write(mine, () => undefined);
  writer.write(notMine, () => undefined);
  await new Promise((r) => setTimeout(r, 20));
  expect(mine.length).toBe(64 * KiB); // the kernel may still be reading it
  await writes.release();
  expect(mine.length).toBe(0); // given back
  const ended = writer.end();
  await writes.release();
  await ended;
  expect(notMine).toEqual(notMineCopy);
  expect(readFileSync(path)).toEqual(Buffer.concat([copy, notMineCopy]));
});

test('a chunk claimed for another writer is not given back by this one', async () => {
  const path = newPath();
  const writer = new DirectFileWriter(await open(path, 'wx'), 448 * KiB);
  const other = new DirectFileWriter(await open(newPath(), 'wx'), 448 * KiB);
  const chunk = claimed(32 * KiB, other);
  const copy = Buffer.from(chunk);
  writer.write(chunk, () => undefined);
  await writer.end();
  await other.end();
  expect(chunk).toEqual(copy);
});

test('abort during a write closes the file only after that write returns, and gives its chunks back then', async () => {
  const writes = slowWrites();
  const fdsBefore = openFds();
  const writer = new DirectFileWriter(await open(newPath(), 'wx'), 448 * KiB);
  const chunk = claimed(64 * KiB, writer);
  writer.write(chunk, () => undefined);
  writer.write(randomData(10 * KiB), () => undefined); // queued: dropped by the abort
  const ending = writer.end();
  const aborted = writer.abort();
  await expect(ending).rejects.toThrow(/aborted/);
  await new Promise((r) => setTimeout(r, 20));
  expect(openFds()).toBe(fdsBefore + 1); // the write in flight still uses the descriptor
  expect(chunk.length).toBe(64 * KiB);
  await writes.release();
  await aborted;
  expect(openFds()).toBe(fdsBefore);
  expect(chunk.length).toBe(0);
  expect(writes.sizes).toEqual([64 * KiB]); // the queued chunk never went out
});

test('a failing write reports the error once, closes the file, and end() rejects with it', async () => {
  const path = newPath();
  await (await open(path, 'wx')).close(); // opened read-only below: every write fails with EBADF
  const fdsBefore = openFds();
  const writer = new DirectFileWriter(await open(path, 'r'), 448 * KiB);
  const failures: Error[] = [];
  writer.failed((err) => failures.push(err));
  writer.write(randomData(KiB), () => undefined);
  await new Promise((r) => setTimeout(r, 50));
  expect(failures).toHaveLength(1);
  expect((failures[0] as NodeJS.ErrnoException).code).toBe('EBADF');
  await expect(writer.end()).rejects.toThrow(/stopped/);
  expect(writer.write(randomData(KiB), () => undefined)).toBe(true); // dropped
  expect(openFds()).toBe(fdsBefore);
});

test('a failure while end() waits rejects end() with the error', async () => {
  const path = newPath();
  await (await open(path, 'wx')).close();
  const writer = new DirectFileWriter(await open(path, 'r'), 448 * KiB);
  const failures: Error[] = [];
  writer.failed((err) => failures.push(err));
  writer.write(randomData(KiB), () => undefined);
  await expect(writer.end()).rejects.toMatchObject({ code: 'EBADF' });
  expect(failures).toHaveLength(0); // reported through end(), not twice
});


describe('diskEngine: 1 MiB of queued chunks reserved from the memory budget, only while it is at most half used', () => {
  const file: IncomingFile = { fieldname: 'f', originalname: 'a.bin', encoding: '7bit', mimetype: 'application/octet-stream' } as IncomingFile;

  async function store(budget: MemoryBudget, preload: number, data: Buffer) {
    const lease = budget.lease();
    const other = budget.lease();
    expect(other.tryReserve(preload)).toBe(true);
    let heldWhileWriting = 0;
    const source = chunked(data, 64 * KiB);
    const context = { signal: new AbortController().signal, memory: lease, sha256: async () => undefined, request: {} } as unknown as StoreContext;
    let stored!: Awaited<ReturnType<ReturnType<typeof diskEngine>['store']>>;
    const sizes = await writevSizes(async () => {
      stored = await diskEngine({ directory: join(dir.path, 'engine') }).store(source, file, context);
    }, () => (heldWhileWriting = Math.max(heldWhileWriting, lease.held)));
    const details = stored.details as { path: string };
    expect(sha256(readFileSync(details.path))).toBe(sha256(data));
    const leaseAfter = lease.held;
    other.close();
    return { sizes, heldWhileWriting, leaseAfter, budgetAfter: budget.used };
  }

  test('room in the budget: 1 MiB reserved while writing, eager writes of at most 448 KiB and a chunk, all given back', async () => {
    const r = await store(new MemoryBudget('64MiB'), 0, randomData(4 * 1024 * KiB));
    expect(r.heldWhileWriting).toBe(1024 * KiB);
    expect(r.sizes.reduce((a, b) => a + b, 0)).toBe(4 * 1024 * KiB);
    expect(Math.max(...r.sizes)).toBeLessThan(448 * KiB + 64 * KiB);
    expect(r.sizes[0]).toBeLessThanOrEqual(64 * KiB); // eager: the first chunk went out alone, at once
    expect(r.leaseAfter).toBe(0);
    expect(r.budgetAfter).toBe(0);
  });

  test('budget more than half used: nothing reserved, one chunk per write', async () => {
    const r = await store(new MemoryBudget('8MiB'), 3.5 * 1024 * KiB, randomData(2 * 1024 * KiB));
    expect(r.heldWhileWriting).toBe(0);
    expect(Math.max(...r.sizes)).toBeLessThanOrEqual(64 * KiB);
    expect(r.budgetAfter).toBe(0);
  });
});

test('through the middleware: a 3 MiB upload goes from the parser into the writer with no stream between, byte-exact; the budget is back to 0 after the response', async () => {
  const forward = jest.spyOn(FileTap.prototype, 'forward');
  const budget = new MemoryBudget('64MiB');
  const app = express();
  app.post('/u', spool({ storage: diskEngine({ directory: join(dir.path, 'mw') }), memoryBudget: budget }).single('f'), (req, res) => {
    res.json({ path: (req.file as unknown as { path: string }).path, used: budget.used });
  });
  const data = randomData(3 * 1024 * KiB);
  const res = await request(app).post('/u').attach('f', data, 'big.bin');
  expect(res.status).toBe(200);
  expect(sha256(readFileSync(res.body.path))).toBe(sha256(data));
  expect(budget.used).toBe(0);
  expect(forward).toHaveBeenCalledTimes(1); // the tap fed the writer itself (spool's first MiB, then the rest)
});

