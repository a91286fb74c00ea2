/**
 * The S3 part reader's buffers and the process's pool, without an S3 server: a part given back as sent is
 * the next part's buffer, one given back after a failure is not, the reservation follows each part, and
 * parts larger than the pool's idle cap (16 MiB) are never kept for reuse.
 */
import { Readable } from 'node:stream';
import { MemoryBudget } from '../lib';
import { PartReader } from '../engines/s3-parts';

const MiB = 1024 * 1024;
/** Every byte of `body` is `value`. */
const allBytes = (body: Buffer, value: number) => body.equals(Buffer.alloc(body.length, value));

/** A stream of `parts` × `partSize` bytes plus a few more, in 64 KiB chunks; each part's bytes are its number. */
function partsStream(partSize: number, parts: number): Readable {
  const total = partSize * parts + 10;
  return Readable.from(
    (function* () {
      for (let at = 0; at < total; at += 64 * 1024) {
        const chunk = Buffer.alloc(Math.min(64 * 1024, total - at));
        const edge = Math.min(chunk.length, partSize - (at % partSize)); // where the next part's bytes start
        chunk.fill(Math.floor(at / partSize) + 1, 0, edge);
        if (edge < chunk.length) chunk.fill(Math.floor(at / partSize) + 2, edge);
        yield chunk;
      }
    })(),
    { objectMode: false },
  );
}

function reader(partSize: number, parts: number) {
  const budget = new MemoryBudget(4 * partSize);
  const memory = budget.lease();
  return { budget, reader: new PartReader(partsStream(partSize, parts), { partSize, memory, signal: new AbortController().signal }) };
}

describe('S3 part reader buffers', () => {
  // A size of this file's own, so that no other test's buffers share its pool.
  const PART = 5 * MiB + 8192;

  test('a part released as sent lends its buffer to the next part; one released after a failure does not', async () => {
    const { budget, reader: parts } = reader(PART, 3);
    const first = await parts.next();
    expect(first.body.length).toBe(PART);
    expect(allBytes(first.body, 1)).toBe(true);
    const firstMemory = first.body.buffer;
    expect(budget.used).toBe(PART);
    first.release(true);
    expect(budget.used).toBe(0);
    expect(first.body.length).toBe(0); // the part no longer exposes the pooled bytes

    const second = await parts.next();
    expect(second.body.buffer).toBe(firstMemory);
    expect(allBytes(second.body, 2)).toBe(true);
    second.release(false); // as after a failed UploadPart
    second.release(true); // idempotent: a later call changes nothing
    expect(budget.used).toBe(0);

    const third = await parts.next();
    expect(third.body.buffer).not.toBe(firstMemory);
    expect(allBytes(third.body, 3)).toBe(true);
    const thirdMemory = third.body.buffer;
    third.release(true);

    // The short last part is an exact copy; its pooled buffer went back at once.
    const last = await parts.next();
    expect(last.last).toBe(true);
    expect(last.body.length).toBe(10);
    expect(last.body.buffer).not.toBe(thirdMemory);
    expect(budget.used).toBe(10);
    last.release(true);
    expect(budget.used).toBe(0);
    // The next upload's first part gets one of those buffers back, with its own bytes.
    const again = reader(PART, 1);
    const reused = await again.reader.next();
    expect([thirdMemory]).toContain(reused.body.buffer);
    expect(allBytes(reused.body, 1)).toBe(true);
    reused.release(true);
  });

  test('parts larger than 16 MiB are not kept for reuse', async () => {
    const big = 16 * MiB + 4096;
    const { reader: parts } = reader(big, 2);
    const first = await parts.next();
    const firstMemory = first.body.buffer;
    first.release(true);
    const second = await parts.next();
    expect(second.body.buffer).not.toBe(firstMemory);
    second.release(true);
  });
});
