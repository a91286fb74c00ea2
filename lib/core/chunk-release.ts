import { MessageChannel } from 'node:worker_threads';

/**
 * Gives a request chunk's memory back as soon as a store has copied it, instead of at the next GC.
 *
 * Why: V8 counts the ArrayBuffer memory allocated since its last full GC against the old generation's
 * limit. Every socket read of a request body is a fresh 16–64 KiB ArrayBuffer; a server that copies each
 * chunk into reused write batches allocates few JS objects per chunk, so young GCs (which free dead
 * chunks) come rarely, and on a small heap the chunks alone reach the limit: measured on 16 resumable
 * uploads to disk, a full GC every ~20 MB of body (27–45 per GB, against 1 with the chunks given back)
 * and about a third of the server's user CPU (bench/README.md, "Session 21").
 *
 * Only a chunk its owner marked (`ownChunk`: nobody else holds it) and that is the whole of its
 * ArrayBuffer is given back. A given-back chunk is empty: the caller must not read it again.
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
 * detached and its memory freed at once (the message is dropped), about 1 µs a chunk. The port is unref'd:
 * it never keeps the process alive.
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

const owned = new WeakSet<Buffer>();

/** Marks `chunk` as one whose bytes nobody but the store will read: it may be given back once copied. */
export function ownChunk(chunk: Buffer): void {
  if (detach !== undefined && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.byteLength) owned.add(chunk);
}

/** Frees an owned chunk's memory now; any other chunk is left to the GC. Call once its bytes were copied. */
export function releaseChunk(chunk: Buffer): void {
  if (!owned.delete(chunk)) return;
  try {
    detach!(chunk.buffer as ArrayBuffer);
  } catch {
    // a buffer the runtime will not detach (a SharedArrayBuffer, one marked untransferable) stays for the GC
  }
}
