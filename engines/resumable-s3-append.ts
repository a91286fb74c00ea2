import type { Readable } from 'node:stream';
import { releaseChunk } from '../lib/core/chunk-release';
import { SpoolError } from '../lib/core/errors';
import type { AppendContext } from '../lib/resumable/upload-store';
import type { BufferPool } from '../lib/core/buffer-pool';
import { toS3Error } from './s3-errors';
import { claimedOf, MAX_PARTS, MIN_PART_SIZE, s3ErrorName, type Committed, type StoredPart, type UploadObjects, type UploadState } from './resumable-s3-objects';

export interface AppendSettings {
  readonly objects: UploadObjects;
  readonly partSize: number;
  /** UploadParts in flight per append while the next part fills. */
  readonly queueSize: number;
  /** Commits `next` as the state after `from`, create-only; rejects with UPLOAD_LOCKED when another writer got there first. */
  readonly commit: (from: Committed, next: UploadState) => Promise<Committed>;
  /**
   * The append's last commit, the one the handler answers with: `commit`, and also still the latest state
   * (UPLOAD_LOCKED otherwise: a number after `base`, the state the append started from, was free because a
   * completion or removal had deleted it).
   */
  readonly commitLast: (base: Committed, from: Committed, next: UploadState) => Promise<Committed>;
  /** Whether state `base` was deleted (the upload completed or removed since): what the append committed is void. */
  readonly gone: (base: Committed) => Promise<boolean>;
  /** Forgets the state the store remembers for the upload (it was one of this append's void commits). */
  readonly forget: () => void;
  /**
   * Whether the latest state on S3 names multipart upload `uploadId`: a commit whose answer was lost may have
   * landed, and then the upload must not be aborted (every later part would find it gone).
   */
  readonly names: (uploadId: string) => Promise<boolean>;
  /**
   * The part number `start` claimed, unused, for this store's next append (see `reserve`): the append may
   * send its first part under it without committing a claim first. Undefined: it claims as usual.
   */
  readonly reserved?: number;
  /** After a clean end: `state` claims `number`, unused, for the next append this store makes on it. */
  readonly reserve: (state: Committed, number: number) => void;
  /** The store's part buffers (reserved on `context.memory` before one is taken, given back once no send can read it). */
  readonly pool: BufferPool;
}

/**
 * Streams one request body after the upload's committed bytes, without touching local disk: the bytes
 * fill a part-sized buffer held on `context.memory` (reserved whole, before it is filled: concurrent
 * uploads wait, first come first served, instead of each holding half a part), which starts with the
 * persisted tail. A full buffer is an UploadPart, and its memory goes back as soon as S3 has it. What is
 * left when the body ends — cleanly or not — is either one more part (≥ 5 MiB) or the new tail object;
 * then one state commit records it. Non-atomic appends also commit after every part, so a crash loses at
 * most the part being filled; each such commit that names new parts is reported to `context.progress`
 * (the IETF draft's progress 104s carry that offset).
 *
 * Fencing: every commit is the next state number, written create-only, so a writer that lost the upload
 * fails its next commit and nothing it does afterwards counts. Part numbers are never shared: a part is
 * uploaded only under a number that a state this append committed has claimed (the first claim is made
 * while the first part fills, and every commit claims the next `queueSize + 1` numbers, so in a steady
 * stream no commit is added), and the append starts after every number claimed before it. A writer that
 * was taken over can therefore only ever land a late UploadPart on a number nobody else uses and no
 * committed state names. A clean end gives back the numbers this append claimed but did not use.
 *
 * Atomic: nothing but claims is committed until the body ended cleanly (the verifier fails the stream
 * otherwise); parts sent before that are left unnamed (their numbers are skipped), the old tail stays.
 *
 * The last commit (when the body ended, cleanly or not) also records `context.expiresAt`, and is checked
 * to be the latest state: the handler answers with it.
 *
 * Buffers come from the store's pool: taken after their memory was reserved, given back (with the
 * reservation) once their UploadPart or tail PUT settled, an aborted one included — never while a send may
 * still read them.
 *
 * Resolves with the last committed state; rejects (that state stands) when S3 fails or the upload was
 * taken over.
 */
export async function appendToS3(start: Committed, stream: Readable, context: AppendContext, settings: AppendSettings): Promise<Committed> {
  const { objects, partSize, queueSize, pool } = settings;
  const { memory, signal, atomic } = context;
  const progress = atomic ? undefined : context.progress;
  const first = start.state;
  const id = first.upload.id;
  const key = objects.key(id);
  const base = first.parts.reduce((sum, part) => sum + part.size, 0);
  // Bytes this append may hold from the parts' end: the old tail plus what the declared length leaves.
  const room = first.upload.length === undefined ? Infinity : first.upload.length - base;
  // After every number claimed before — except one this store's previous append claimed for it and never used.
  const firstNumber = settings.reserved === claimedOf(first) ? settings.reserved : claimedOf(first) + 1;
  let committed = start;
  let uploadId = first.uploadId;
  const sent = new Map<number, StoredPart>();
  let nextNumber = firstNumber;
  // Ours: aborted when S3 fails, which cancels the other part requests. A client going away does not: parts
  // already on their way are counted, and even an atomic append's parts are let finish.
  const stop = new AbortController();
  const running = new Set<Promise<void>>();
  let failure: unknown;
  let buffer: Buffer | undefined;
  let size = 0;
  let placed = 0; // bytes put into buffers by this append, the old tail included
  let interrupted = false;
  /** Commits run one after another, each on the state the previous one committed. */
  let chain: Promise<void> = Promise.resolve();
  /** The claim (and CreateMultipartUpload) made ahead, while the first part fills. */
  let preparing: Promise<void> | undefined;

  /** Gives back the buffer being filled (call it only once no request reads it: its tail PUT settled). */
  const releaseBuffer = () => {
    if (buffer) {
      memory.release(buffer.length);
      pool.give(buffer);
    }
    buffer = undefined;
    size = 0;
  };

  /** Queues a commit of `make(current state)` (nothing when it returns undefined). */
  const commitWith = (make: (state: UploadState) => UploadState | undefined, last = false): Promise<void> => {
    const run = chain.then(async () => {
      const next = make(committed.state);
      if (next) committed = await (last ? settings.commitLast(start, committed, next) : settings.commit(committed, next));
    });
    chain = run.catch(() => undefined);
    return run;
  };

  /** Creates the multipart upload if there is none, and claims the numbers up to `number + queueSize`. */
  const claim = (number: number): Promise<void> =>
    (async () => {
      if (number > MAX_PARTS) throw toS3Error(new Error(`The upload needs more than ${MAX_PARTS} parts: raise partSize`));
      uploadId ??= await objects.createMultipart(key);
      const upTo = Math.min(MAX_PARTS, number + queueSize);
      await commitWith((state) =>
        claimedOf(state) >= number && state.uploadId === uploadId ? undefined : { ...state, uploadId, claimed: Math.max(claimedOf(state), upTo) },
      );
    })();

  /** Reserves and allocates the next buffer (the first one starts with the tail); false when the request ended meanwhile. */
  const allocate = async (): Promise<boolean> => {
    const want = Math.max(0, Math.min(partSize, room - placed));
    try {
      await memory.reserve(want, signal);
    } catch (err) {
      if (signal.aborted) return false;
      throw err;
    }
    // A short last part (before the declared length ends) gets a buffer of its own: the pool holds whole parts.
    buffer = want === partSize ? pool.take() : Buffer.allocUnsafe(want);
    if (placed === 0 && first.tail) {
      try {
        await objects.readInto(first.tail.key, buffer, 0, 0, first.tail.size);
      } catch (err) {
        // Appended to, completed or removed since: the tail goes once no latest state names it.
        if (s3ErrorName(err) === 'NoSuchKey') throw new SpoolError('UPLOAD_LOCKED', 'Another request changed this upload since this one read it');
        throw err;
      }
      size = placed = first.tail.size;
    }
    return true;
  };

  /** UploadPart of `body` (a view of `owner`); `owner` and its reservation go back once the send settled. */
  const send = (owner: Buffer, body: Buffer, reserved: number, number: number) => {
    const request: Promise<void> = objects
      .uploadPart(key, uploadId!, number, body, stop.signal)
      .then((part) => void sent.set(number, part))
      .catch((err: unknown) => {
        failure ??= err;
        stop.abort(err);
      })
      .finally(() => {
        // Settled: the SDK no longer reads the body (an aborted send settles only once it let go of it).
        memory.release(reserved);
        pool.give(owner);
        running.delete(request);
      });
    running.add(request);
  };

  /** Hands the full buffer to an UploadPart under a claimed number (its memory goes back when it settles). */
  const flush = async () => {
    const owner = buffer!;
    const body = owner.subarray(0, size);
    const reserved = owner.length;
    buffer = undefined;
    size = 0;
    const number = nextNumber;
    try {
      await preparing;
      preparing = undefined;
      if (claimedOf(committed.state) < number || committed.state.uploadId !== uploadId || uploadId === undefined) await claim(number);
    } catch (err) {
      memory.release(reserved);
      pool.give(owner); // never sent
      throw err;
    }
    nextNumber++;
    send(owner, body, reserved, number);
  };

  /** The parts that count: the committed ones and the contiguous run this append has sent since. */
  const partsSoFar = (): StoredPart[] => {
    const parts = [...first.parts];
    for (let n = firstNumber; sent.has(n); n++) parts.push(sent.get(n)!);
    return parts;
  };

  /**
   * One state commit; the parts it names replace the old tail (the first new part began with it). The last
   * one (`release`) gives back unused claims, records the new expiry and is checked to be the latest.
   */
  const commit = (tail: UploadState['tail'] | 'keep', release = false) =>
    commitWith((state) => {
      const parts = partsSoFar();
      const expiresAt = release ? context.expiresAt?.() : undefined;
      const next: UploadState = {
        ...state,
        upload: expiresAt === undefined ? state.upload : { ...state.upload, expiresAt },
        uploadId,
        parts,
        tail: tail === 'keep' ? (parts.length === first.parts.length ? first.tail : undefined) : tail,
        // A clean end gives back what it did not use; otherwise the numbers up to the next flush stay claimed.
        claimed: release ? Math.max(claimedOf(first), reserving()) : Math.max(claimedOf(state), Math.min(MAX_PARTS, nextNumber + queueSize)),
      };
      // Claims alone are not worth a commit: the next flush claims if it must, and at the end at most
      // queueSize + 1 numbers stay claimed unused (skipped by the next writer).
      const same =
        next.parts.length === state.parts.length && next.tail === state.tail && next.uploadId === state.uploadId && next.upload.expiresAt === state.upload.expiresAt;
      return same ? undefined : next;
    }, release);

  /**
   * What a clean end leaves claimed: the numbers used, and the next one, reserved for this store's next
   * append (`settings.reserve`), so that a PATCH on the same instance sends its first part without a claim
   * commit of its own. Another writer starts after it, as after any claimed number.
   */
  const reserving = () => Math.min(MAX_PARTS, nextNumber);

  let reported = base;
  /** Tells the handler the offset the committed state names, when it grew. */
  const reportDurable = () => {
    if (!progress) return;
    const durable = committed.state.parts.reduce((sum, part) => sum + part.size, 0);
    if (durable > reported) progress.persisted((reported = durable));
  };

  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let carry: Buffer | undefined;
  let tailWrite: Promise<unknown> | undefined;
  let newTail: string | undefined;
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
      else releaseChunk(chunk, stream); // copied whole: its memory goes back now (lib/core/chunk-release.ts)
      // Half a minimum part in: claim the next number (and create the multipart upload) while the rest comes.
      if (!preparing && size >= MIN_PART_SIZE / 2 && buffer!.length >= MIN_PART_SIZE && claimedOf(committed.state) < nextNumber) {
        preparing = claim(nextNumber);
        preparing.catch(() => undefined); // awaited by the flush
      }
      if (size < buffer!.length) continue;
      // The buffer is smaller than a part only when the declared length ends within it: no byte may follow.
      if (size < MIN_PART_SIZE) {
        if (carry) throw toS3Error(new Error('More bytes than the upload length reached the store'));
        continue;
      }
      await flush();
      // queueSize parts may be in flight while the next one fills: at most (queueSize + 1) × partSize held.
      while (running.size > queueSize && failure === undefined) await Promise.race(running);
      if (!atomic && failure === undefined) {
        await commit('keep');
        // Its parts are named by a committed state now: a durable offset for the IETF progress 104s.
        reportDurable();
      }
    }
    if (interrupted && atomic) {
      await Promise.all(running);
      await preparing;
      if (failure !== undefined) throw failure;
      releaseBuffer();
      // The parts sent stay unnamed under numbers no one will use again; the multipart upload stays if a state names it.
      if (uploadId !== undefined && uploadId !== committed.state.uploadId) await objects.abort(key, uploadId);
      return committed;
    }
    // What is left — one more part when it may be one, else the new tail (kept as it was when nothing came) —
    // goes to S3 while the parts still in flight finish: a request that ends (or is superseded) waits for one
    // round trip there, not two.
    let tail: UploadState['tail'];
    if (failure === undefined && buffer && size >= MIN_PART_SIZE) {
      await flush();
    } else if (failure === undefined && buffer && size > 0) {
      const unchanged = first.tail !== undefined && size === first.tail.size && nextNumber === firstNumber;
      tail = unchanged ? first.tail : { key: objects.newTailKey(id), size };
      if (!unchanged) {
        newTail = tail!.key;
        tailWrite = objects.put(newTail, buffer.subarray(0, size));
        tailWrite.catch(() => undefined); // awaited below, once the parts in flight are in
      }
    } else if (!buffer && nextNumber === firstNumber) {
      tail = first.tail; // not a byte arrived
    }
    await Promise.all(running);
    await preparing;
    await tailWrite;
    if (failure !== undefined) throw failure;
    releaseBuffer();
    await commit(tail, true);
    if (committed !== start && claimedOf(committed.state) === nextNumber && reserving() === nextNumber) settings.reserve(committed, nextNumber);
    // The old tail is no longer named by the current state: removed off the answer's path (completion and
    // removal delete every object of the upload anyway, should this fail).
    if (first.tail && committed.state.tail !== first.tail) void objects.delete(first.tail.key).catch(() => undefined);
    return committed;
  } catch (err) {
    stop.abort(err);
    stream.destroy();
    await Promise.allSettled([...running, chain, preparing, tailWrite]);
    releaseBuffer();
    if ((committed !== start || newTail !== undefined) && (await settings.gone(start))) {
      // The upload was completed or removed (before this append began, or during it): the states it committed
      // would bring it back, the tail and the multipart upload it made would be orphans. All of them go.
      settings.forget();
      const mine: string[] = [];
      for (let n = start.n + 1; n <= committed.n; n++) mine.push(objects.stateKey(id, n));
      if (newTail !== undefined) mine.push(newTail);
      await objects.deleteMany(mine).catch(() => undefined);
      if (uploadId !== undefined && uploadId !== first.uploadId) await objects.abort(key, uploadId).catch(() => undefined);
      throw err;
    }
    // Parts that S3 has are still worth a commit (not atomic); a failure here adds nothing to the first.
    if (!atomic && !isLockLost(err)) {
      await commit('keep').then(
        () => (first.tail && committed.state.tail !== first.tail ? objects.delete(first.tail.key) : undefined),
        () => undefined,
      ).catch(() => undefined);
    }
    // Not named by what this append knows it committed; but a commit without an answer may have named it. (When
    // S3 cannot say, it stays: completion, removal and the sweep abort every multipart upload at the key.)
    if (uploadId !== undefined && uploadId !== committed.state.uploadId && !(await settings.names(uploadId).catch(() => true))) {
      await objects.abort(key, uploadId).catch(() => undefined);
    }
    throw err;
  }
}

function isLockLost(err: unknown): boolean {
  return (err as { code?: string } | null)?.code === 'UPLOAD_LOCKED';
}
