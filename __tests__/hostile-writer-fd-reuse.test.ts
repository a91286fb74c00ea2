import { readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BatchedFileWriter } from '../engines/batched-file-writer';
import { tempDir } from './helpers/app';

// BatchedFileWriter.abort() must not close the file handle while a writev is still in flight (fs.WriteStream
// waits for its pending write before closing too): when that writev was short, writeAll() continues it from
// its callback with the same fd NUMBER — which by then may belong to a file another request opened.
// The kernel may write less than asked (a nearly full disk, RLIMIT_FSIZE); the short write is simulated
// here exactly as __tests__/batched-file-writer.test.ts does. Other requests open files all the time.

// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');
const dir = tempDir('review-fd-');
afterAll(() => dir.remove());
afterEach(() => jest.restoreAllMocks());

test('an aborted upload never writes into a file another request opened meanwhile', async () => {
  const real = fs.writev;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: (e: Error | null, n: number) => void) => {
    const limited: Buffer[] = [];
    let room = 100_000;
    for (const b of buffers) {
      if (room === 0) break;
      limited.push(b.subarray(0, room));
      room -= Math.min(room, b.length);
    }
    return (real as (...a: unknown[]) => void)(fd, limited, position, cb);
  }) as never);
  const contaminated: string[] = [];
  for (let round = 0; round < 200 && contaminated.length === 0; round++) {
    const handle = await open(join(dir.path, `aborted-${round}`), 'wx');
    const writer = new BatchedFileWriter(handle, 512 * 1024);
    writer.write(Buffer.alloc(512 * 1024, 0x41), () => undefined); // a full batch: one writev goes out
    void writer.abort(); // the request fails while it is in flight
    // Other requests open files meanwhile (a busy server).
    const others: FileHandle[] = [];
    const paths: string[] = [];
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setImmediate(r));
      paths.push(join(dir.path, `other-${round}-${i}`));
      others.push(await open(paths[i], 'w'));
    }
    await new Promise((r) => setTimeout(r, 5));
    for (const other of others) await other.close();
    for (const path of paths) if (readFileSync(path).length > 0) contaminated.push(`${path}: ${readFileSync(path).length} bytes of the aborted upload`);
  }
  expect(contaminated).toEqual([]);
});
