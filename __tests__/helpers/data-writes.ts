// The disk writers' data writes, as tests see them: BatchedFileWriter and DirectFileWriter call `fs.writev(fd,
// buffers, position, callback)` on the module object, so a spy there sees (and may fail) every write the disk
// engine and the resumable disk store make.
import { Readable } from 'node:stream';

// The module object itself (not an ES namespace) so that its `writev` can be spied on.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof import('node:fs');

type Callback = (err: NodeJS.ErrnoException | null, written?: number) => void;

/**
 * Spies on the data writes: `inspect(bytes)` sees each call's size, and may return an error to fail that
 * call with (nothing is written then). Undone by `jest.restoreAllMocks()`.
 */
export function onDataWrites(inspect: (bytes: number) => NodeJS.ErrnoException | undefined | void): void {
  const real = fs.writev as unknown as (...a: unknown[]) => void;
  jest.spyOn(fs, 'writev').mockImplementation(((fd: number, buffers: Buffer[], position: number | null, cb: Callback) => {
    const err = inspect(buffers.reduce((n, b) => n + b.length, 0));
    if (err) return void setImmediate(() => cb(err));
    real(fd, buffers, position, cb);
  }) as never);
}

export const enospc = (): NodeJS.ErrnoException => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 });

/** The sizes of the data writes made while `run` runs (`onCall` after each is seen). */
export async function writevSizes(run: () => Promise<void>, onCall?: () => void): Promise<number[]> {
  const sizes: number[] = [];
  onDataWrites((bytes) => {
    sizes.push(bytes);
    onCall?.();
  });
  await run();
  return sizes;
}

/** `data` cut into chunks of random sizes between 1 byte and `max`, like a parser hands them out. */
export function chunked(data: Buffer, max: number): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; ) {
    const size = Math.min(data.length - at, 1 + Math.floor(Math.random() * max));
    chunks.push(data.subarray(at, at + size));
    at += size;
  }
  return Readable.from(chunks, { objectMode: false });
}
