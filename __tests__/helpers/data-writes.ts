// The disk writers' data writes, as tests see them: BatchedFileWriter calls `fs.writev(fd, buffers, position,
// callback)` on the module object, so a spy there sees (and may fail) every batch the disk engine and the
// resumable disk store write.

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
