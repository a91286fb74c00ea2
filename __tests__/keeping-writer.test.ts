import { readFileSync, readdirSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { BatchedFileWriter } from '../engines/batched-file-writer';
import { Checkpoints } from '../engines/checkpoints';
import { streamIntoKeeping } from '../lib/core/chunk-sink';
import { enospc, onDataWrites } from './helpers/data-writes';
import { eventually, tempDir } from './helpers/app';
import { randomData, sha256 } from './helpers/multipart';

// What the resumable disk store builds its appends on: a writer that starts at a position, reports what it
// wrote and writes a partial batch on demand; a feed that keeps the bytes of an interrupted stream; and the
// state writes (checkpoints) that follow the data writes, one at a time.

const KiB = 1024;
const dir = tempDir('keeping-writer-');
afterAll(() => dir.remove());
afterEach(() => jest.restoreAllMocks());
const openFds = () => readdirSync('/proc/self/fd').length;

test('a writer with a start position writes there (the bytes before it stay), and reports each batch written', async () => {
  const path = join(dir.path, 'positioned');
  const head = randomData(100 * KiB);
  const handle = await open(path, 'w+');
  await handle.write(head, 0, head.length, 0);
  const data = randomData(1300 * KiB);
  const reported: number[] = [];
  const writer = new BatchedFileWriter(handle, 512 * KiB, undefined, { position: head.length, written: (n) => reported.push(n) });
  const source = Readable.from(Array.from({ length: 13 }, (_, i) => data.subarray(i * 100 * KiB, (i + 1) * 100 * KiB)));
  await expect(streamIntoKeeping(source, writer)).resolves.toBe(false);
  expect(sha256(readFileSync(path))).toBe(sha256(Buffer.concat([head, data])));
  expect(reported).toEqual([512 * KiB, 1024 * KiB, 1300 * KiB]);
  expect(writer.bytesWritten).toBe(data.length);
});

test('flush() writes a partial batch now; while a write is in flight, right after it', async () => {
  const path = join(dir.path, 'flushed');
  const sizes: number[] = [];
  onDataWrites((bytes) => void sizes.push(bytes));
  const writer = new BatchedFileWriter(await open(path, 'w'), 256 * KiB);
  writer.write(randomData(10 * KiB), () => undefined);
  writer.flush();
  expect(sizes).toEqual([10 * KiB]); // went out at once
  writer.write(randomData(20 * KiB), () => undefined);
  writer.flush(); // the first write is still in flight
  expect(sizes).toEqual([10 * KiB]);
  await eventually(() => expect(sizes).toEqual([10 * KiB, 20 * KiB]));
  writer.flush(); // nothing filling: no write
  await writer.end();
  expect(sizes).toEqual([10 * KiB, 20 * KiB]);
  expect(readFileSync(path).length).toBe(30 * KiB);
});

test('an interrupted stream: every byte it handed over is written and the feed says "interrupted"', async () => {
  const path = join(dir.path, 'interrupted');
  const fds = openFds();
  const source = new PassThrough();
  const sent = randomData(700 * KiB + 5);
  const done = streamIntoKeeping(source, new BatchedFileWriter(await open(path, 'w'), 512 * KiB));
  source.write(sent);
  setImmediate(() => source.destroy(new Error('client went away')));
  await expect(done).resolves.toBe(true);
  expect(sha256(readFileSync(path))).toBe(sha256(sent));
  await eventually(() => expect(openFds()).toBeLessThanOrEqual(fds));
});

test('an interrupted stream with discard: nothing more is written, the file is closed', async () => {
  const path = join(dir.path, 'discarded');
  const fds = openFds();
  const source = new PassThrough();
  const done = streamIntoKeeping(source, new BatchedFileWriter(await open(path, 'w'), 512 * KiB), { discard: true });
  source.write(randomData(100 * KiB)); // less than a batch: held, never written
  setImmediate(() => source.destroy(new Error('checksum mismatch')));
  await expect(done).resolves.toBe(true);
  expect(readFileSync(path).length).toBe(0);
  await eventually(() => expect(openFds()).toBeLessThanOrEqual(fds));
});

test('a failing write rejects the feed with its error and destroys the stream, whatever is kept', async () => {
  const fds = openFds();
  onDataWrites(() => enospc());
  const source = new PassThrough();
  const done = streamIntoKeeping(source, new BatchedFileWriter(await open(join(dir.path, 'full'), 'w'), 64 * KiB));
  source.write(randomData(200 * KiB));
  await expect(done).rejects.toMatchObject({ code: 'ENOSPC' });
  expect(source.destroyed).toBe(true);
  await eventually(() => expect(openFds()).toBeLessThanOrEqual(fds));
});

test('the chunk hook sees every chunk handed to the writer, in order', async () => {
  const seen: number[] = [];
  const chunks = [randomData(1000), randomData(70 * KiB), randomData(3)];
  const writer = new BatchedFileWriter(await open(join(dir.path, 'hooked'), 'w'), 64 * KiB);
  await streamIntoKeeping(Readable.from(chunks), writer, { chunk: (c) => void seen.push(c.length) });
  expect(seen).toEqual(chunks.map((c) => c.length));
});

describe('Checkpoints', () => {
  test('records at most one state at a time, in order, every `every` bytes, and settles with the last', async () => {
    const log: string[] = [];
    let inFlight = 0;
    const save = async (offset: number) => {
      inFlight++;
      expect(inFlight).toBe(1);
      log.push(`start ${offset}`);
      await new Promise((r) => setTimeout(r, 5));
      log.push(`done ${offset}`);
      inFlight--;
    };
    const c = new Checkpoints(0, 100, save, undefined, () => undefined);
    c.written(50); // not due
    c.written(100); // due
    c.written(150); // not due: 50 since the last one asked
    c.written(250); // due
    await c.record(260);
    expect(log).toEqual(['start 100', 'done 100', 'start 250', 'done 250', 'start 260', 'done 260']);
    await c.record(260); // already recorded: no new write
    expect(log.length).toBe(6);
  });

  test('a failing state write stops the append (failed) and rejects settled(); later ones are not tried', async () => {
    const saved: number[] = [];
    const failed = jest.fn();
    const c = new Checkpoints(0, 10, async (offset) => {
      if (offset === 10) throw new Error('EIO');
      saved.push(offset);
    }, undefined, failed);
    c.written(10);
    c.written(20);
    await expect(c.settled()).rejects.toThrow('EIO');
    await expect(c.record(30)).rejects.toThrow('EIO');
    expect(saved).toEqual([]);
    expect(failed).toHaveBeenCalledTimes(1);
  });

  test('progress: a state write when the handler wants a progress point and none is under way, persisted() after it', async () => {
    const persisted: number[] = [];
    const saved: number[] = [];
    const progress = { wanted: (at: number) => at % 2 === 0, persisted: (at: number) => void persisted.push(at) };
    const c = new Checkpoints(0, 1_000_000, async (at) => void saved.push(at), progress, () => undefined);
    c.written(3);
    c.written(4);
    expect(c.recording).toBe(true);
    c.written(6); // 4 is still being recorded: one progress record at a time
    await c.settled();
    expect(c.recording).toBe(false);
    c.written(8);
    await c.settled();
    expect(saved).toEqual([4, 8]);
    expect(persisted).toEqual([4, 8]);
  });
});
