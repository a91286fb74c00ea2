import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { streamInto, type ChunkSink } from '../lib/core/chunk-sink';
import { collectChunks, putBack } from '../lib/core/collect-chunks';
import { FileTap } from '../lib/core/file-tap';
import { MemoryBudget } from '../lib/core/memory-budget';

// streamInto() feeds a stream into a ChunkSink; on the core's tap it calls the sink from the parser's
// events directly (`forward()`), after what a collect gave back. Either way: every byte once and in
// order, backpressure, and failure on either side settles both.
const KiB = 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const tick = () => new Promise((r) => setImmediate(r));

/** A parser-like source: chunks written on later ticks. */
function feed(data: Buffer, chunk: number, { end = true } = {}): PassThrough {
  const source = new PassThrough();
  void (async () => {
    for (let i = 0; i < data.length; i += chunk) {
      await tick();
      if (source.destroyed) return;
      source.write(data.subarray(i, i + chunk));
    }
    if (end) source.end();
  })();
  return source;
}

function within<T>(promise: Promise<T>, ms = 2000): Promise<T> {
  let timer: NodeJS.Timeout;
  const hung = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)));
  return Promise.race([promise, hung]).finally(() => clearTimeout(timer));
}

/**
 * An in-memory sink that is full every `fullEvery` chunks (it calls `drained` on a later tick) and can be
 * made to fail; it records what it was told.
 */
class RecordingSink implements ChunkSink {
  readonly chunks: Buffer[] = [];
  ended = false;
  aborted = 0;
  /** Chunks given while the sink had said it was full: must stay 0. */
  overrun = 0;
  #full = false;
  #fail: ((err: Error) => void) | undefined;
  constructor(readonly fullEvery = 0) {}

  write(chunk: Buffer, drained: () => void): boolean {
    if (this.#full) this.overrun++;
    this.chunks.push(chunk);
    if (this.fullEvery === 0 || this.chunks.length % this.fullEvery !== 0) return true;
    this.#full = true;
    setImmediate(() => {
      this.#full = false;
      drained();
    });
    return false;
  }
  async end(): Promise<void> {
    await tick();
    this.ended = true;
  }
  async abort(): Promise<void> {
    this.aborted++;
  }
  failed(fail: (err: Error) => void): void {
    this.#fail = fail;
  }
  breakDown(err: Error): void {
    this.#fail?.(err);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

describe('a tap nobody reads: chunks go from the source straight into the sink', () => {
  test('byte-exact, counted and hashed once, with backpressure; the tap counts as consumed', async () => {
    const data = randomBytes(300 * KiB + 5);
    const tap = new FileTap(feed(data, 16 * KiB), true);
    expect(tap.forwardable).toBe(true);
    const sink = new RecordingSink(3);
    await within(streamInto(tap, sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(sink.ended).toBe(true);
    expect(sink.overrun).toBe(0);
    expect(sink.aborted).toBe(0);
    expect(tap.bytes).toBe(data.length);
    expect(tap.sha256).toBe(sha256(data));
    expect(tap.consumed).toBe(true);
    expect(tap.listenerCount('data')).toBe(0); // no stream hop was used
  });

  test('after a collect that stopped at the threshold: the collected chunks first, then the rest, in order', async () => {
    const data = randomBytes(200 * KiB + 3);
    const lease = new MemoryBudget('1MiB').lease();
    const tap = new FileTap(feed(data, 10 * KiB), true);
    const collected = await within(collectChunks(tap, lease, 64 * KiB));
    expect(collected.overflow).toBeDefined();
    lease.release(collected.size);
    putBack(tap, collected);
    const sink = new RecordingSink(2);
    await within(streamInto(tap, sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(sink.chunks[0]).toBe(collected.chunks[0]); // handed on by reference, not copied
    expect(sink.overrun).toBe(0);
    expect(tap.bytes).toBe(data.length);
    expect(tap.sha256).toBe(sha256(data));
  });

  test('a source that ends while collected chunks still wait for a full sink: nothing lost, the sink ended once', async () => {
    const data = randomBytes(40 * KiB);
    const source = new PassThrough();
    const tap = new FileTap(source, false);
    const collecting = collectChunks(tap, new MemoryBudget('1MiB').lease(), 20 * KiB);
    for (let i = 0; i < data.length; i += 8 * KiB) source.write(data.subarray(i, i + 8 * KiB));
    source.end();
    const collected = await within(collecting);
    putBack(tap, collected);
    const sink = new RecordingSink(1); // full after every chunk
    await within(streamInto(tap, sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(sink.ended).toBe(true);
    expect(sink.overrun).toBe(0);
  });

  test('the tap holds nothing before a consumer comes, even when its source has ended meanwhile', async () => {
    const data = randomBytes(100 * KiB);
    const source = new PassThrough();
    const tap = new FileTap(source, true);
    source.end(data);
    await tick();
    await tick();
    expect(tap.readableLength).toBe(0);
    expect(source.isPaused()).toBe(true);
    const sink = new RecordingSink(1);
    await within(streamInto(tap, sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(tap.sha256).toBe(sha256(data));
    expect(sink.ended).toBe(true);
  });

  test('a tap with chunks in its own buffer (someone read and unshifted) goes the generic way, in order', async () => {
    const data = randomBytes(100 * KiB);
    const tap = new FileTap(feed(data, 10 * KiB), false);
    const first = await new Promise<Buffer>((resolve) => tap.once('data', (c: Buffer) => (tap.pause(), resolve(c))));
    tap.unshift(first);
    expect(tap.forwardable).toBe(false);
    const sink = new RecordingSink(2);
    await within(streamInto(tap, sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(sink.overrun).toBe(0);
  });

  test('the tap destroyed mid-file (the request failed): the sink is aborted, the promise rejects, the source goes on', async () => {
    const source = feed(randomBytes(512 * KiB), 8 * KiB, { end: false });
    const tap = new FileTap(source, false);
    tap.on('error', () => undefined);
    const sink = new RecordingSink();
    const done = streamInto(tap, sink);
    await tick();
    await tick();
    const boom = new Error('client went away');
    tap.destroy(boom);
    await expect(within(done)).rejects.toBe(boom);
    expect(sink.aborted).toBe(1);
    expect(sink.ended).toBe(false);
    expect(source.isPaused()).toBe(false); // the parser can move past the part
  });

  test('a tap destroyed without an error rejects (premature close) instead of hanging', async () => {
    const tap = new FileTap(feed(randomBytes(64 * KiB), 8 * KiB, { end: false }), false);
    const sink = new RecordingSink();
    const done = streamInto(tap, sink);
    await tick();
    tap.destroy();
    await expect(within(done)).rejects.toThrow(/premature close/i);
    expect(sink.aborted).toBe(1);
  });

  test('a sink that fails on its own destroys the tap with its error and rejects', async () => {
    const source = feed(randomBytes(256 * KiB), 8 * KiB, { end: false });
    const tap = new FileTap(source, false);
    const seen: Error[] = [];
    tap.on('error', (err) => seen.push(err));
    const sink = new RecordingSink();
    const done = streamInto(tap, sink);
    await tick();
    await tick();
    const enospc = Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    sink.breakDown(enospc);
    await expect(within(done)).rejects.toBe(enospc);
    expect(tap.destroyed).toBe(true);
    await tick();
    expect(seen).toEqual([enospc]);
    expect(sink.aborted).toBe(1);
  });

  test('a tap someone reads is not forwarded; a destroyed one neither', () => {
    const read = new FileTap(new PassThrough(), false);
    read.on('data', () => undefined);
    expect(read.forwardable).toBe(false);
    const destroyed = new FileTap(new PassThrough(), false);
    destroyed.destroy();
    expect(destroyed.forwardable).toBe(false);
  });
});

describe('any other stream: data events, the same contract', () => {
  test('ends while the rest of its last chunk waits for room: every byte, in order, then end', async () => {
    const data = randomBytes(100 * KiB);
    const pieces = Array.from({ length: 10 }, (_, i) => data.subarray(i * 10 * KiB, (i + 1) * 10 * KiB));
    const sink = new RecordingSink(1);
    await within(streamInto(Readable.from(pieces, { objectMode: false }), sink));
    expect(sha256(sink.bytes)).toBe(sha256(data));
    expect(sink.ended).toBe(true);
    expect(sink.overrun).toBe(0);
  });

  test('a stream error aborts the sink and rejects with it', async () => {
    const source = new PassThrough();
    const sink = new RecordingSink();
    const done = streamInto(source, sink);
    source.write(randomBytes(KiB));
    const boom = new Error('malformed part');
    source.destroy(boom);
    await expect(within(done)).rejects.toBe(boom);
    expect(sink.aborted).toBe(1);
  });

  test('a failing sink destroys the stream (no unhandled error) and rejects', async () => {
    const source = new PassThrough();
    const sink = new RecordingSink();
    const done = streamInto(source, sink);
    source.write(randomBytes(KiB));
    const enospc = new Error('no space left on device');
    sink.breakDown(enospc);
    await expect(within(done)).rejects.toBe(enospc);
    expect(source.destroyed).toBe(true);
  });

  test('an already destroyed stream rejects at once', async () => {
    const source = new PassThrough();
    source.destroy();
    const sink = new RecordingSink();
    await expect(within(streamInto(source, sink))).rejects.toThrow(/premature close/i);
    expect(sink.aborted).toBe(1);
  });
});
