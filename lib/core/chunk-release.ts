import type { Readable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';

/**
 * Gives request chunks back as soon as their last reader is done with them, instead of at the next GC.
 *
 * Why: V8 counts the ArrayBuffer memory allocated since its last full GC against the old generation's
 * limit. Every socket read of a request body is a fresh 16–64 KiB ArrayBuffer, freed only by a GC; a
 * server that allocates few JS objects per chunk runs young GCs rarely, so chunks that outlive one (held
 * while their write is in flight, or waiting in the spool threshold) pile up, and on a small heap they
 * alone start full GCs. Measured on 16 resumable uploads to disk: a full GC every ~20 MB of body, about a
 * third of the server's user CPU (bench/README.md, "Session 21"); on multipart uploads written to disk by
 * reference, giving chunks back after their write took the copy into write batches and most full GCs
 * away (same file, "Session 22").
 *
 * A chunk is given back only when nobody else can hold it. Two ways of knowing that:
 * - A resumable append (`ownChunk` / `releaseChunk`): its stream marked the chunk (the request had no other
 *   reader), the chunk is the whole of its ArrayBuffer, and the consumer releasing it read it straight from
 *   that stream as its only reader — not through a tee, a PassThrough or a second listener an app's store
 *   wrapper may have added.
 * - A multipart file written by the disk engine (`markParsedOnly` / `claimChunk` / `giveBack`): the request
 *   handed the body chunk to the parser alone, the file's part is the whole of that chunk (no header or
 *   other part shares its memory), and the core's tap gave it straight to the writer, which gives it back
 *   once its write has returned.
 * A given-back chunk is empty.
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

/** Chunks that may be given back, and who may give each back: the stream that handed it out, or its claimer. */
const owned = new WeakMap<Buffer, object>();
/** Memory of request body chunks that the multipart parser alone read (see `markParsedOnly`). */
const parsedOnly = new WeakSet<ArrayBuffer>();

/** `chunk` is all of its ArrayBuffer (and not empty: a detached one is a zero-length whole). */
function isWhole(chunk: Buffer): boolean {
  return chunk.byteLength > 0 && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.byteLength;
}

/** `by` hands `chunk` out and nobody else got it: whoever reads it from `by` alone may give it back once copied. */
export function ownChunk(chunk: Buffer, by: Readable): void {
  if (detach !== undefined && isWhole(chunk)) owned.set(chunk, by);
}

/**
 * Frees `chunk`'s memory now if `from` owned it and the caller, having copied it, is `from`'s only reader
 * (one 'data' or 'readable' listener: its own); any other chunk is left to the GC.
 */
export function releaseChunk(chunk: Buffer, from: Readable): void {
  if (owned.get(chunk) !== from) return;
  owned.delete(chunk);
  if (from.listenerCount('data') + from.listenerCount('readable') !== 1) return;
  free(chunk);
}

/**
 * `chunk`, a request body chunk, goes to the multipart parser and to no other reader of the request: a file
 * part that turns out to be the whole of it may be claimed by the writer it goes to.
 */
export function markParsedOnly(chunk: Buffer): void {
  if (detach !== undefined && isWhole(chunk)) parsedOnly.add(chunk.buffer as ArrayBuffer);
}

/**
 * `holder` takes `chunk`, a file part's bytes straight from the parser, and no one else gets it: when it is
 * the whole of a body chunk only the parser read, `holder` may give it back (`giveBack`) once done with it.
 */
export function claimChunk(chunk: Buffer, holder: object): void {
  // (deleted either way: a part that is not the whole body chunk shares its memory, and no other may claim it)
  if (parsedOnly.delete(chunk.buffer as ArrayBuffer) && isWhole(chunk)) owned.set(chunk, holder);
}

/** `holder` claimed `chunk` and nothing reads it any more (no write in flight): its memory goes now. */
export function giveBack(chunk: Buffer, holder: object): void {
  if (owned.get(chunk) !== holder) return;
  owned.delete(chunk);
  free(chunk);
}

function free(chunk: Buffer): void {
  try {
    detach!(chunk.buffer as ArrayBuffer);
  } catch {
    // a buffer the runtime will not detach (a SharedArrayBuffer, one marked untransferable) stays for the GC
  }
}
