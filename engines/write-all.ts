import { writev } from 'node:fs';

export type Callback = (error?: Error | null) => void;

/**
 * `writev` until every byte is written (a regular file rarely writes short, but it may), or `stopped()`;
 * at `position`, or at the file's own position when null.
 */
export function writeAll(fd: number, buffers: Buffer[], position: number | null, stopped: () => boolean, callback: Callback): void {
  writev(fd, buffers, position, (err, written) => {
    if (err || stopped()) return callback(err);
    let rest = written;
    let i = 0;
    while (i < buffers.length && rest >= buffers[i].length) rest -= buffers[i++].length;
    if (i === buffers.length) return callback();
    const remaining = buffers.slice(i);
    remaining[0] = remaining[0].subarray(rest);
    writeAll(fd, remaining, position === null ? null : position + written, stopped, callback);
  });
}
