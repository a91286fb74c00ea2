import type { Readable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';

/**
 * Gives a resumable append's request chunks back as soon as the store has copied them, instead of at the
 * next GC.
 *
 * Why: V8 counts the ArrayBuffer memory allocated since its last full GC against the old generation's
 * limit. Every socket read of a request body is a fresh 16–64 KiB ArrayBuffer; a server that copies each
 * chunk into reused write batches allocates few JS objects per chunk, so young GCs (which free dead
 * chunks) come rarely, and on a small heap the chunks alone reach the limit: measured on 16 resumable
 * uploads to disk, a full GC every ~20 MB of body (27–45 per GB, against 1 with the chunks given back)
 * and about a third of the server's user CPU (bench/README.md, "Session 21"). Multipart requests are not
 * touched: their parser allocates enough per chunk that young GCs keep up (measured, same section).
 *
 * A chunk is given back only when nobody else can hold it: its stream marked it (`ownChunk`: the request
 * had no other reader), the chunk is the whole of its ArrayBuffer, and the consumer releasing it read it
 * straight from that stream as its only reader (`releaseChunk`) — not through a tee, a PassThrough or a
 * second listener an app's store wrapper may have added. A given-back chunk is empty.
 */

type Detach = (memory: ArrayBuffer) => void;

const detach: Detach | undefined = nativeDetach() ?? portDetach();

/** Node 21 and later: `ArrayBuffer.prototype.transfer(0)` detaches the buffer and frees its memory. */
function nativeDetach(): Detach | undefined {
  const transfer = (ArrayBuffer.prototype as { transfer?: (this: ArrayBuffer, length: number) => ArrayBuffer }).transfer;
  return transfer && ((memory) => void transfer.call(memory, 0));
}

/**
 * Node 20 has no `transfer`: a buffer in the transfer list of a message to a closed MessagePort is
 * detached and its memory freed (the message is dropped), about 1–2 µs a chunk. The port is unref'd: it
 * never keeps the process alive.
 */
function portDetach(): Detach | undefined {
  try {
    const { port1, port2 } = new MessageChannel();
    port2.close();
    port1.unref();
    return (memory) => port1.postMessage(null, [memory]);
  } catch {
    return undefined; // (no worker_threads here: chunks are left to the GC)
  }
}

/** Chunks that may be given back, and the stream that handed each of them out. */
const owned = new WeakMap<Buffer, Readable>();

/** `by` hands `chunk` out and nobody else got it: whoever reads it from `by` alone may give it back once copied. */
export function ownChunk(chunk: Buffer, by: Readable): void {
  if (detach !== undefined && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.byteLength) owned.set(chunk, by);
}

/**
 * Frees `chunk`'s memory now if `from` owned it and the caller, having copied it, is `from`'s only reader
 * (one 'data' or 'readable' listener: its own); any other chunk is left to the GC.
 */
export function releaseChunk(chunk: Buffer, from: Readable): void {
  if (owned.get(chunk) !== from) return;
  owned.delete(chunk);
  if (from.listenerCount('data') + from.listenerCount('readable') !== 1) return;
  try {
    detach!(chunk.buffer as ArrayBuffer);
  } catch {
    // a buffer the runtime will not detach (a SharedArrayBuffer, one marked untransferable) stays for the GC
  }
}
