import type { Readable } from 'node:stream';
import type { AppendContext } from '../lib/resumable/upload-store';
import { toS3Error } from './s3-errors';
import { MAX_PARTS, MIN_PART_SIZE, type StoredPart, type UploadObjects, type UploadState } from './resumable-s3-objects';

export interface AppendSettings {
  readonly objects: UploadObjects;
  readonly partSize: number;
  /** UploadParts in flight per append while the next part fills. */
  readonly queueSize: number;
}

/**
 * Streams one request body after the upload's committed bytes, without touching local disk: the bytes
 * fill a part-sized buffer held on `context.memory` (reserved whole, before it is filled: concurrent
 * uploads wait, first come first served, instead of each holding half a part), which starts with the
 * persisted tail. A full buffer is an UploadPart, and its memory goes back as soon as S3 has it. What is
 * left when the body ends — cleanly or not — is either one more part (≥ 5 MiB) or the new tail object;
 * then one state PUT commits it. Non-atomic appends also commit after every part, so a crash loses at
 * most the part being filled.
 *
 * Atomic: nothing is committed until the body ended cleanly (the verifier fails the stream otherwise);
 * parts sent before that carry numbers the next append overwrites, and the old tail object stays as it was.
 *
 * Resolves with the committed state; rejects (the last committed state stands) when S3 fails.
 */
export async function appendToS3(start: UploadState, stream: Readable, context: AppendContext, settings: AppendSettings): Promise<UploadState> {
  const { objects, partSize, queueSize } = settings;
  const { memory, signal, atomic } = context;
  const id = start.upload.id;
  const key = objects.key(id);
  const base = start.parts.reduce((sum, part) => sum + part.size, 0);
  // Bytes this append may hold from the parts' end: the old tail plus what the declared length leaves.
  const room = start.upload.length === undefined ? Infinity : start.upload.length - base;
  let committed = start;
  let uploadId = start.uploadId;
  const sent = new Map<number, StoredPart>();
  let nextNumber = start.parts.length + 1;
  // Ours: aborted when S3 fails, which cancels the other part requests. A client going away does not: parts
  // already on their way are counted, and even an atomic append's parts are let finish, so that a late one
  // can never land over the part a later append sends under the same number.
  const stop = new AbortController();
  const running = new Set<Promise<void>>();
  let failure: unknown;
  let buffer: Buffer | undefined;
  let size = 0;
  let placed = 0; // bytes put into buffers by this append, the old tail included
  let interrupted = false;

  const releaseBuffer = () => {
    if (buffer) memory.release(buffer.length);
    buffer = undefined;
    size = 0;
  };

  /** Reserves and allocates the next buffer (the first one starts with the tail); false when the request ended meanwhile. */
  const allocate = async (): Promise<boolean> => {
    const want = Math.max(0, Math.min(partSize, room - placed));
    try {
      await memory.reserve(want, signal);
    } catch (err) {
      if (signal.aborted) return false;
      throw err;
    }
    buffer = Buffer.allocUnsafe(want);
    if (placed === 0 && start.tail) {
      await objects.readInto(start.tail.key, buffer, 0, 0, start.tail.size);
      size = placed = start.tail.size;
    }
    return true;
  };

  const send = (body: Buffer, reserved: number, number: number) => {
    const request: Promise<void> = objects
      .uploadPart(key, uploadId!, number, body, stop.signal)
      .then((part) => void sent.set(number, part))
      .catch((err: unknown) => {
        failure ??= err;
        stop.abort(err);
      })
      .finally(() => {
        memory.release(reserved);
        running.delete(request);
      });
    running.add(request);
  };

  /** Hands the full buffer to an UploadPart (its memory goes back when it settles). */
  const flush = async () => {
    const body = buffer!.subarray(0, size);
    const reserved = buffer!.length;
    buffer = undefined;
    size = 0;
    try {
      if (nextNumber > MAX_PARTS) throw toS3Error(new Error(`The upload needs more than ${MAX_PARTS} parts: raise partSize`));
      uploadId ??= await objects.createMultipart(key);
    } catch (err) {
      memory.release(reserved);
      throw err;
    }
    send(body, reserved, nextNumber++);
  };

  /** Parts 1…n that S3 has, in order: the committed ones and the contiguous run sent since. */
  const partsSoFar = (): StoredPart[] => {
    const parts = [...start.parts];
    for (let n = start.parts.length + 1; sent.has(n); n++) parts.push(sent.get(n)!);
    return parts;
  };

  /** One state PUT; the parts it names replace the old tail (the first new part began with it). */
  const commit = async (tail: UploadState['tail'] | 'keep') => {
    const parts = partsSoFar();
    const next: UploadState = {
      ...committed,
      uploadId,
      parts,
      tail: tail === 'keep' ? (parts.length === start.parts.length ? start.tail : undefined) : tail,
    };
    if (next.parts.length === committed.parts.length && next.tail === committed.tail && next.uploadId === committed.uploadId) return;
    await objects.save(next);
    committed = next;
  };

  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let carry: Buffer | undefined;
  try {
    for (;;) {
      let chunk = carry;
      carry = undefined;
      if (!chunk) {
        try {
          const next = await chunks.next();
          if (next.done) break;
          chunk = next.value;
        } catch {
          interrupted = true; // the client went away, a limit or the checksum failed it, or it was superseded
          break;
        }
      }
      if (failure !== undefined) break;
      if (!buffer && !(await allocate())) {
        interrupted = true;
        break;
      }
      const n = Math.min(chunk.length, buffer!.length - size);
      chunk.copy(buffer!, size, 0, n);
      size += n;
      placed += n;
      if (n < chunk.length) carry = chunk.subarray(n);
      if (size < buffer!.length) continue;
      // The buffer is smaller than a part only when the declared length ends within it: no byte may follow.
      if (size < MIN_PART_SIZE) {
        if (carry) throw toS3Error(new Error('More bytes than the upload length reached the store'));
        continue;
      }
      await flush();
      // queueSize parts may be in flight while the next one fills: at most (queueSize + 1) × partSize held.
      while (running.size > queueSize && failure === undefined) await Promise.race(running);
      if (!atomic && failure === undefined) await commit('keep');
    }
    await Promise.all(running);
    if (failure !== undefined) throw failure;
    if (interrupted && atomic) {
      releaseBuffer();
      if (uploadId !== start.uploadId) await objects.abort(key, uploadId!);
      return start;
    }
    // What is left: one more part when it may be one, else the new tail (kept as it was when nothing came).
    let tail: UploadState['tail'];
    if (buffer && size >= MIN_PART_SIZE) {
      await flush();
      await Promise.all(running);
      if (failure !== undefined) throw failure;
    } else if (buffer && size > 0) {
      const unchanged = start.tail !== undefined && size === start.tail.size && nextNumber === start.parts.length + 1;
      tail = unchanged ? start.tail : { key: objects.newTailKey(id), size };
      if (!unchanged) await objects.put(tail!.key, buffer.subarray(0, size));
    } else if (!buffer && nextNumber === start.parts.length + 1) {
      tail = start.tail; // not a byte arrived
    }
    releaseBuffer();
    await commit(tail);
    if (start.tail && committed.tail !== start.tail) await objects.delete(start.tail.key);
    return committed;
  } catch (err) {
    stop.abort(err);
    stream.destroy();
    releaseBuffer();
    await Promise.allSettled([...running]);
    // Parts that S3 has are still worth a commit (not atomic); a failure here adds nothing to the first.
    if (!atomic) {
      await commit('keep').then(
        () => (start.tail && committed.tail !== start.tail ? objects.delete(start.tail.key) : undefined),
        () => undefined,
      ).catch(() => undefined);
    }
    if (uploadId !== committed.uploadId) await objects.abort(key, uploadId!).catch(() => undefined);
    throw err;
  }
}
