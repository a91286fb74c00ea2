import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { FileTap } from '../lib/core/file-tap';

// The tap hashes small files inline and large ones in the background thread, with backpressure.
const MiB = 1024 * 1024;

function source(data: Buffer, chunk: number): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
  })());
}

test.each([
  [0, 65536],
  [1, 65536],
  [MiB, 65536],
  [MiB + 1, 65536],
  [MiB + 1, 7],
  [3 * MiB + 12345, 65536],
  [24 * MiB, 65536],
  [5 * MiB, 1024 * 1024 + 3],
])('%i bytes in %i-byte chunks: every byte passes, digest matches', async (size, chunk) => {
  const data = randomBytes(size);
  const tap = new FileTap(source(data, chunk), true);
  const out: Buffer[] = [];
  for await (const c of tap) out.push(c as Buffer);
  expect(Buffer.concat(out).equals(data)).toBe(true);
  expect(tap.bytes).toBe(size);
  expect(await tap.digest()).toBe(createHash('sha256').update(data).digest('hex'));
});

test('a slow reader (the tap paused while batches are in flight): result intact', async () => {
  const data = randomBytes(16 * MiB);
  const tap = new FileTap(source(data, 65536), true);
  const hash = createHash('sha256');
  for await (const c of tap) {
    hash.update(c as Buffer);
    await new Promise((r) => setImmediate(r));
  }
  expect(await tap.digest()).toBe(hash.digest('hex'));
});

test('hashing off: no digest', async () => {
  const tap = new FileTap(source(randomBytes(2 * MiB), 65536), false);
  for await (const _ of tap) void _;
  expect(await tap.digest()).toBeUndefined();
});

test('a tap destroyed mid-file does not hang or keep the process alive', async () => {
  const data = randomBytes(8 * MiB);
  const tap = new FileTap(source(data, 65536), true);
  tap.on('error', () => undefined);
  let seen = 0;
  for await (const c of tap) {
    seen += (c as Buffer).length;
    if (seen > 3 * MiB) {
      tap.destroy(new Error('client went away'));
      break;
    }
  }
  expect(tap.destroyed).toBe(true);
  expect(await tap.digest()).toBeUndefined();
});

test('the spool hand-over (pause, unshift 1 MiB, slow rollover reader) never stalls the background hash', async () => {
  for (let round = 0; round < 8; round++) {
    const data = randomBytes(6 * MiB);
    const tap = new FileTap(source(data, 65536), true);
    // Like the spool: read to the threshold in flowing mode, pause, put it back, hand the stream on.
    const head: Buffer[] = [];
    let held = 0;
    await new Promise<void>((resolve) => {
      const onData = (c: Buffer) => {
        head.push(c);
        held += c.length;
        if (held > MiB) {
          tap.pause();
          tap.off('data', onData);
          resolve();
        }
      };
      tap.on('data', onData);
    });
    for (let i = head.length - 1; i >= 0; i--) tap.unshift(head[i]);
    await new Promise((r) => setTimeout(r, 5));
    const out: Buffer[] = [];
    for await (const c of tap) {
      out.push(c as Buffer);
      if (out.length % 4 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    expect(Buffer.concat(out).equals(data)).toBe(true);
    expect(await tap.digest()).toBe(createHash('sha256').update(data).digest('hex'));
  }
}, 60_000);

describe('the file size limit', () => {
  test('a file of exactly maxBytes passes whole; one byte more stops at the chunk that passes it, once', async () => {
    const data = randomBytes(200_000);
    const exact = new FileTap(source(data, 65536), false, { maxBytes: data.length, onExceeded: () => exact.destroy(new Error('over')) });
    const out: Buffer[] = [];
    for await (const c of exact) out.push(c as Buffer);
    expect(Buffer.concat(out).equals(data)).toBe(true);

    let exceeded = 0;
    const over: FileTap = new FileTap(source(data, 65536), false, {
      maxBytes: data.length - 1,
      onExceeded: () => {
        exceeded++;
        over.destroy(new Error('over'));
      },
    });
    const seen: Buffer[] = [];
    await expect(
      (async () => {
        for await (const c of over) seen.push(c as Buffer);
      })(),
    ).rejects.toThrow('over');
    expect(exceeded).toBe(1);
    // The last chunk (the one that passes the limit) never reached the reader.
    expect(Buffer.concat(seen).equals(data.subarray(0, 3 * 65536))).toBe(true);
  });
});
