import { randomBytes } from 'node:crypto';
import { PassThrough, pipeline, Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StoredFile } from '../lib/core/engine';
import { SpoolError } from '../lib/core/errors';
import { countOption, describe, sizeOption, type Size } from '../lib/core/sizes';
import type { UploadFence } from '../lib/resumable/upload-locker';
import type { AppendContext, NewUpload, ResumableContext, ResumableGetOptions, ResumableStore, ResumableUpload, UploadChanges } from '../lib/resumable/upload-store';
import { appendToS3 } from './resumable-s3-append';
import { concatenateObjects } from './resumable-s3-concat';
import { bufferPool, type BufferPool } from '../lib/core/buffer-pool';
import { claimedOf, MAX_PARTS, MIN_PART_SIZE, offsetOf, s3ErrorName, UploadObjects, type Committed, type StoredPart, type UploadState } from './resumable-s3-objects';
import { locationOf, type S3Details } from './s3-object';
import { toS3Error } from './s3-errors';

export interface ResumableS3Options {
  /** An S3Client configured by the app (region, endpoint, forcePathStyle, credentials). */
  client: S3Client;
  bucket: string;
  /**
   * Prepended to every key. Per upload the store keeps its state as immutable `<prefix><id>.state.<n>`
   * objects (small JSON, each written create-only; the highest is current), while unfinished a
   * `<prefix><id>.tail.<random>` (the last < 5 MiB) and an open multipart upload on `<prefix><id>`, which
   * becomes the one object at completion, when every other object but the last state goes. A new store
   * over the same bucket and prefix (after a restart) resumes every upload where it stopped.
   * @default ''
   */
  prefix?: string;
  /**
   * Bytes per S3 part, held in memory reserved from the handler's memory budget while a part fills.
   * Memory: each append holds at most `partSize × (queueSize + 1)`; a budget of one part plus the requests'
   * 64 KiB shares lets every upload progress (they wait for memory, first come first served). Minimum 5 MiB.
   * An upload has at most 10,000 parts: 5 MiB parts allow ≥ 48 GiB.
   * @default '8MiB'
   */
  partSize?: Size;
  /** UploadParts in flight per append while the next part fills (0: fill, send, wait, fill…). @default 1 */
  queueSize?: number;
  /**
   * Many instances (README "Running many instances"): `redisLocker()`. Correctness does not depend on it —
   * every change is a create-only state commit, so a writer that was taken over can never make one count —
   * but with it a writer known to have lost its lock is refused before its next state commit or UploadPart,
   * and `sweep()` leaves alone the uploads another instance is working on.
   */
  fence?: UploadFence;
}

const ID = /^[A-Za-z0-9_-]{1,200}$/;
const KNOWN = new Set(['client', 'bucket', 'prefix', 'partSize', 'queueSize', 'fence']);
/** Completed objects' ETag and version for `file()` (which is synchronous), bounded. */
const MAX_DETAILS = 10_000;
/** Uploads whose last read or committed state a store remembers (what its next change is based on), bounded. */
const MAX_SEEN = 10_000;
/** Leftovers of a crash or of a writer that was taken over (objects of no upload) older than this are swept. */
const LEFTOVER_AGE = 60_000;
/** CompleteMultipartUpload attempts while new unnamed parts keep appearing (radosgw: see `#assemble`). */
const ASSEMBLE_ATTEMPTS = 5;
type Sdk = typeof import('@aws-sdk/client-s3');
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * A resumable store on S3 that never touches local disk: appends are cut into parts in memory reserved
 * from the memory budget, the short tail between requests is an object of its own, the state is a
 * sequence of small create-only objects per upload (S3 itself decides which of two writers commits), and
 * a completed upload is one ordinary object at `<prefix><id>`.
 */
export function s3ResumableStore(options: ResumableS3Options): ResumableStore {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected s3ResumableStore options to be an object, got ${describe(options)}`);
  }
  for (const key of Object.keys(options)) if (!KNOWN.has(key)) throw new TypeError(`Unknown s3ResumableStore option \`${key}\``);
  const { client, bucket, prefix = '' } = options;
  if (typeof client?.send !== 'function') throw new TypeError(`Expected \`client\` to be an S3Client, got ${describe(client)}`);
  if (typeof bucket !== 'string' || bucket === '') throw new TypeError(`Expected \`bucket\` to be a non-empty string, got ${describe(bucket)}`);
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${describe(prefix)}`);
  const partSize = sizeOption('partSize', options.partSize, 8 * 1024 * 1024);
  if (partSize < MIN_PART_SIZE) throw new TypeError(`Expected \`partSize\` to be at least 5 MiB, got ${partSize}`);
  const queueSize = countOption('queueSize', options.queueSize, 1);
  if (options.fence !== undefined && typeof options.fence?.check !== 'function') throw new TypeError(`Expected \`fence\` to be an upload fence, got ${describe(options.fence)}`);
  // Loaded here, not at import, so apps that never use S3 need not install the SDK.
  const sdk = require('@aws-sdk/client-s3') as Sdk;
  return new S3Store(new UploadObjects(client, sdk, bucket, prefix, options.fence), partSize, queueSize, options.fence);
}

class S3Store implements ResumableStore {
  readonly name = 's3';
  readonly #objects: UploadObjects;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #fence: UploadFence | undefined;
  /** `<endpoint>/<bucket>/` or its host-style equivalent, known after the first async call. */
  #base: string | undefined;
  readonly #details = new Map<string, { etag?: string; versionId?: string }>();
  /**
   * The state this store last read (`get`, which the handler calls first in every request) or committed,
   * per upload: the base of its next change. A change commits the next number create-only, so it fails
   * when anyone committed on that base first; `update` also refuses when a higher state exists.
   */
  readonly #seen = new Map<string, Committed>();
  /**
   * Commits this store checked to be the latest state when it made them (an append's last commit, a
   * checked update): an `update` that would rewrite one unchanged writes nothing.
   */
  readonly #verified = new WeakSet<Committed>();
  /**
   * States this store committed at an append's clean end, with the part number each claimed for the next
   * append and nobody used: only this store knows it is unused, so only its next append on that very
   * state sends a part under it without a claim commit (appends to one upload never overlap in a process:
   * the handler's lock). Any other writer starts after it, as after every claimed number.
   */
  readonly #reserved = new WeakMap<Committed, number>();
  /** Part buffers, reused across appends: the process's pool of `partSize` buffers (README "The memory bound"). */
  readonly #pool: BufferPool;
  /** Completed uploads whose leftovers are being removed (`#heal`). */
  readonly #healing = new Set<string>();

  constructor(objects: UploadObjects, partSize: number, queueSize: number, fence: UploadFence | undefined) {
    this.#objects = objects;
    this.#partSize = partSize;
    this.#queueSize = queueSize;
    this.#fence = fence;
    this.#pool = bufferPool(partSize);
  }

  async create(upload: NewUpload): Promise<ResumableUpload> {
    // The multipart upload is created with the first part: an upload that stays small never has one.
    const state: UploadState = { upload: { ...upload, id: randomBytes(16).toString('base64url'), complete: false }, parts: [] };
    this.#base ??= await locationOf(this.#objects.client, this.#objects.bucket, '');
    await this.#commit(undefined, state);
    return this.#view(state);
  }

  async get(id: string, options?: ResumableGetOptions): Promise<ResumableUpload | undefined> {
    // About to append: the state this store last read or committed, unchecked — the append's create-only
    // commits and its last commit's check (`#commitLast`) refuse it if it was not the latest. Saves the three
    // HEADs of `#latest` per PATCH (each S3 request costs the SDK a few ms of CPU: bench/README.md).
    const remembered = options?.append === true && ID.test(id) ? this.#seen.get(id) : undefined;
    if (remembered && !remembered.state.object && !remembered.state.removed && !remembered.state.sealing) return this.#view(remembered.state);
    const current = await this.#latest(id);
    return current && !current.state.removed ? this.#view(current.state) : undefined;
  }

  async update(id: string, changes: UploadChanges): Promise<ResumableUpload> {
    const seen = this.#seen.get(id);
    const completing = changes.complete === true && !seen?.state.object;
    // Completing checks first (it writes more than a state); a plain change checks while it commits.
    const current = seen && !completing ? seen : await this.#based(id);
    if (!current || current.state.removed) throw new SpoolError('UPLOAD_NOT_FOUND');
    // The append just recorded these values (e.g. the expiry) in a state it checked: nothing to write.
    if (current === seen && this.#verified.has(seen) && !completing && unchanged(seen.state.upload, changes)) return this.#view(seen.state);
    const { state } = current;
    const upload: Mutable<UploadState['upload']> = { ...state.upload };
    if (changes.length !== undefined) upload.length = changes.length;
    if (changes.complete !== undefined) upload.complete = changes.complete;
    if (changes.sha256 !== undefined) upload.sha256 = changes.sha256;
    if (changes.extra !== undefined) upload.extra = changes.extra;
    if (changes.expiresAt === null) delete upload.expiresAt;
    else if (changes.expiresAt !== undefined) upload.expiresAt = changes.expiresAt;
    // Completing makes the bytes one object; the new fields come with the state that names it.
    if (upload.complete && !state.object) return this.#view((await this.#seal(current, upload)).state);
    if (current !== seen) return this.#view((await this.#commit(current, { ...state, upload })).state);
    return this.#view((await this.#commitChecked(current, { ...state, upload })).state);
  }

  async append(upload: ResumableUpload, stream: Readable, context: AppendContext): Promise<number> {
    let current: Committed | undefined;
    try {
      // The state the handler's `get` just read (that is what `upload` shows); the first commit fails if it moved on.
      current = this.#seen.get(upload.id);
      if (!current || offsetOf(current.state) !== upload.offset) current = await this.#current(upload.id);
      if (!current || current.state.removed) throw new SpoolError('UPLOAD_NOT_FOUND', 'The upload was removed');
      if (current.state.object) throw new SpoolError('UPLOAD_COMPLETED', 'The upload was read back as one object: no byte can follow');
      const offset = offsetOf(current.state);
      if (offset !== upload.offset) throw new SpoolError('OFFSET_MISMATCH', `The stored offset is ${offset}, not ${upload.offset}`);
    } catch (err) {
      stream.destroy();
      throw err;
    }
    if (current.state.sealing) {
      // Its completion started (and will be finished by the next `update` or read): an empty append — a
      // client repeating its completing request — is fine, a byte is not.
      let bytes = false;
      try {
        for await (const chunk of stream) if ((bytes = (chunk as Buffer).length > 0)) break;
      } catch {
        // the request ended: nothing was appended either way
      }
      stream.destroy();
      if (bytes) throw new SpoolError('UPLOAD_COMPLETED', 'The upload is being completed: no byte can follow');
      return offsetOf(current.state);
    }
    // While it runs, an append may hold `queueSize + 1` part buffers at once: the pool keeps that many for it.
    const leave = this.#pool.enter(this.#queueSize + 1);
    // Taken by this append whatever happens: a number is used by one append at most.
    const reserved = this.#reserved.get(current);
    this.#reserved.delete(current);
    try {
      const committed = await appendToS3(current, stream, context, {
        objects: this.#objects,
        partSize: this.#partSize,
        queueSize: this.#queueSize,
        commit: (from, next) => this.#commit(from, next),
        commitLast: (base, from, next) => this.#commitLast(base, from, next),
        gone: (base) => this.#gone(base),
        forget: () => this.#seen.delete(upload.id),
        names: async (uploadId) => (await this.#current(upload.id))?.state.uploadId === uploadId,
        reserved,
        reserve: (state, number) => this.#reserved.set(state, number),
        pool: this.#pool,
      });
      return offsetOf(committed.state);
    } finally {
      leave();
    }
  }

  async concatenate(target: ResumableUpload, parts: readonly ResumableUpload[], context: ResumableContext): Promise<number> {
    const current = await this.#based(target.id);
    if (!current || current.state.removed) throw new SpoolError('UPLOAD_NOT_FOUND');
    const sources = [];
    for (const part of parts) {
      const source = await this.#current(part.id);
      if (!source?.state.object || source.state.removed) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Concat: final needs complete partial uploads');
      sources.push({ key: this.#objects.key(part.id), size: source.state.object.size });
    }
    const key = this.#objects.key(target.id);
    await concatenateObjects(this.#objects, key, sources, this.#partSize, context);
    const size = sources.reduce((sum, source) => sum + source.size, 0);
    const object = await this.#verify(key, size);
    const done = await this.#commit(current, { ...current.state, object });
    await this.#cleanUp(target.id, done.n).catch(() => undefined); // (complete: as after an append's completion)
    return size;
  }

  read(upload: ResumableUpload): Readable {
    if (upload.offset === 0) return Readable.from([]);
    const out = new PassThrough();
    // The bytes of an unfinished upload are in parts S3 cannot read back: reading seals them into the object.
    this.#readable(upload).then(
      (stream) => pipeline(stream, out, () => undefined /* errors already reach `out` */),
      (err: unknown) => out.destroy(err as Error),
    );
    return out;
  }

  file(upload: ResumableUpload): StoredFile {
    const key = this.#objects.key(upload.id);
    const known = this.#details.get(upload.id);
    const details: S3Details = {
      bucket: this.#objects.bucket,
      key,
      location: `${this.#base ?? ''}${key.split('/').map(encodeURIComponent).join('/')}`,
      etag: known?.etag,
      versionId: known?.versionId,
    };
    const remove = async () => {
      // The app's own removal waits (bounded) for a request another instance is answering about it.
      const done = this.#fence?.exclusive ? await this.#fence.exclusive(upload.id, () => this.#remove(upload.id), 10_000) : { value: await this.#remove(upload.id) };
      if (!done) throw new SpoolError('UPLOAD_LOCKED', 'Another request is working on this upload');
    };
    return { storage: 's3', details, stream: () => this.read(upload), remove };
  }

  /**
   * Removes the upload. Under the handler's lock (DELETE) directly; from `sweep()` — which holds no lock —
   * only when no instance is working on the upload (with a fence that can tell: `redisLocker()`).
   */
  async remove(id: string): Promise<void> {
    if (!ID.test(id)) return;
    if (this.#fence?.exclusive) await this.#fence.exclusive(id, () => this.#remove(id));
    else await this.#remove(id);
  }

  async *list(): AsyncIterable<ResumableUpload> {
    // One listing of the prefix, grouped by upload (an upload's keys are not contiguous: '-' sorts before '.').
    // Only keys this store names are ever swept (`<id>.state.<n>`, `<id>.tail.<hex>`): the prefix may be shared.
    const found = new Map<string, { top: number; ours: { key: string; modified: number }[] }>();
    for await (const object of this.#objects.objects()) {
      const id = this.#objects.idOfKey(object.key, ID);
      const kind = id && this.#objects.kindOfKey(object.key, id);
      if (!id || !kind) continue;
      const entry = found.get(id) ?? { top: 0, ours: [] };
      found.set(id, entry);
      if (kind === 'object') continue;
      entry.ours.push(object);
      if (kind === 'state') entry.top = Math.max(entry.top, this.#objects.parseStateKey(object.key, ID)!.n);
    }
    const now = Date.now();
    for (const [id, { top, ours }] of found) {
      if (top === 0) {
        // Tails of no upload: a crash between writing and recording them, or a writer taken over after a removal.
        const old = ours.filter((object) => now - object.modified > LEFTOVER_AGE).map((object) => object.key);
        if (old.length > 0) await this.#objects.deleteMany(old);
        continue;
      }
      const state = await this.#objects.loadState(id, top);
      if (!state) continue; // removed meanwhile
      if (state.removed) {
        await this.#remove(id); // a removal that stopped half-way
        continue;
      }
      if (state.object) {
        // Completed: the object and its last state; anything else is a leftover (of a writer taken over).
        const last = this.#objects.stateKey(id, top);
        const extra = ours.filter((object) => object.key !== last).map((object) => object.key);
        if (extra.length > 0) await this.#objects.deleteMany(extra);
      }
      yield { ...state.upload, offset: offsetOf(state) };
    }
  }

  /**
   * The latest state, without a LIST when the one this store last read or committed still is: three HEADs
   * (no body), two of them in parallel. `n` is still the latest when state `n + 1` does not exist, nothing
   * is at the upload's key, and — asked after those — state `n` still exists. Sound for every change
   * committed before the HEADs, whatever instance made it: a commit of `n + 1` stays until a completion or a
   * removal deletes it, and both keep an object at the upload's key while they delete states (completion:
   * the completed object; removal: the object or an empty placeholder, deleted after every state but its
   * `removed` one), then state `n` is gone. A change racing the HEADs is fenced like any other: its commit
   * or ours fails create-only, and an append's last commit is checked again (`#commitLast`). Not used for
   * a completed upload (read with a LIST, as before).
   */
  async #latest(id: string): Promise<Committed | undefined> {
    const seen = ID.test(id) ? this.#seen.get(id) : undefined;
    if (!seen || seen.state.object || seen.state.removed || seen.state.sealing) return this.#current(id);
    const objects = this.#objects;
    const [next, object] = await Promise.all([objects.head(objects.stateKey(id, seen.n + 1)), objects.head(objects.key(id))]);
    if (next === undefined && object === undefined && (await objects.head(objects.stateKey(id, seen.n))) !== undefined && this.#seen.get(id) === seen) return seen;
    return this.#current(id);
  }

  /** The latest state (one LIST; a GET only when it is not the one this store already knows). */
  async #current(id: string): Promise<Committed | undefined> {
    if (!ID.test(id)) return undefined;
    this.#base ??= await locationOf(this.#objects.client, this.#objects.bucket, '');
    for (let attempt = 0; attempt < 3; attempt++) {
      const seen = this.#seen.get(id);
      let numbers = await this.#objects.stateNumbers(id, seen?.n);
      if (seen && numbers.length === 0) numbers = await this.#objects.stateNumbers(id);
      const top = numbers.at(-1);
      if (top === undefined) {
        this.#seen.delete(id);
        return undefined;
      }
      if (seen?.n === top) return seen;
      const state = await this.#objects.loadState(id, top);
      if (state?.object && numbers.length > 1) this.#heal(id, top);
      if (state) return this.#remember(id, { n: top, state });
      // Removed (or completed and cleaned up) between the LIST and the GET: look again.
    }
    return undefined;
  }

  /**
   * The state this store's last read or commit left, if it is still the latest (else UPLOAD_LOCKED: another
   * request moved the upload on since); the latest when this store knows none.
   */
  async #based(id: string): Promise<Committed | undefined> {
    const seen = this.#seen.get(id);
    if (!seen) return this.#current(id);
    if (!(await this.#moved(seen))) return seen;
    this.#seen.delete(id);
    throw new SpoolError('UPLOAD_LOCKED', 'Another request changed this upload since this one read it');
  }

  /**
   * Whether `seen` is no longer the latest state: a higher one exists (other than the one right after it,
   * which a concurrent commit of ours may have written), or it is gone (the upload completed or removed).
   */
  async #moved(seen: Committed): Promise<boolean> {
    const numbers = await this.#objects.stateNumbers(seen.state.upload.id, seen.n);
    return numbers[0] !== seen.n || numbers.some((n) => n > seen.n + 1);
  }

  /**
   * A commit whose success the handler acts on (answers, `onComplete`): it must also be the latest state.
   * Create-only alone cannot tell when its number was free because completion had deleted it; so the
   * check that no state above it exists runs at the same time (one LIST beside the PUT). A commit the check
   * refuses is below the latest state (or of a removed upload), where it never counts; it is deleted again.
   */
  async #commitChecked(from: Committed, next: UploadState): Promise<Committed> {
    const [moved, committed] = await Promise.all([this.#moved(from), this.#commit(from, next)]);
    if (!moved) {
      this.#verified.add(committed);
      return committed;
    }
    this.#seen.delete(next.upload.id);
    // Below the latest state, or the only state of a removed upload: this one's own leftover.
    await this.#objects.delete(this.#objects.stateKey(next.upload.id, committed.n)).catch(() => undefined);
    throw new SpoolError('UPLOAD_LOCKED', 'Another request changed this upload since this one read it');
  }

  /**
   * An append's last commit (the handler answers with it, and its `update` after it writes nothing when the
   * append already recorded the expiry): like `#commitChecked` it must be the latest, checked with HEADs
   * instead of a LIST, after the commit succeeded. The append's commits took the numbers after `base` (the
   * state it started from) create-only, one after another; a number was free either because no one else
   * committed it, or because a completion or removal had deleted it. In the second case an object is at
   * the upload's key (asked first), or the completion/removal has finished and deleted state `base.n`
   * (asked second) — see `#latest`. Checking `base` rather than the state just before covers the whole
   * append: a removal that finished before its first commit, or before `get` read `base` from memory.
   */
  async #commitLast(base: Committed, from: Committed, next: UploadState): Promise<Committed> {
    const id = next.upload.id;
    const objects = this.#objects;
    const committed = await this.#commit(from, next);
    let latest: boolean;
    try {
      latest = (await objects.head(objects.key(id))) === undefined && (await objects.head(objects.stateKey(id, base.n))) !== undefined;
    } catch (err) {
      this.#seen.delete(id);
      throw err;
    }
    if (latest) {
      this.#verified.add(committed);
      return committed;
    }
    this.#seen.delete(id);
    await objects.delete(objects.stateKey(id, committed.n)).catch(() => undefined);
    throw new SpoolError('UPLOAD_LOCKED', 'Another request completed or removed this upload since this one read it');
  }

  /**
   * Whether state `base` is gone — deleted by a completion's clean-up or a removal, so that nothing an
   * append based on it committed can count. A failed HEAD says no (the append's commits are kept).
   */
  async #gone(base: Committed): Promise<boolean> {
    const objects = this.#objects;
    return (await objects.head(objects.stateKey(base.state.upload.id, base.n)).catch(() => true)) === undefined;
  }

  /** Commits `next` as the state after `from` (the first state when undefined), create-only. */
  async #commit(from: Committed | undefined, next: UploadState): Promise<Committed> {
    const id = next.upload.id;
    try {
      const committed = this.#remember(id, await this.#objects.commit(id, (from?.n ?? 0) + 1, next));
      // A completed upload keeps one state: the one before goes (no writer can base bytes on it any more).
      if (from?.state.object) await this.#objects.delete(this.#objects.stateKey(id, from.n));
      return committed;
    } catch (err) {
      if ((err as SpoolError).code === 'UPLOAD_LOCKED') this.#seen.delete(id);
      throw err;
    }
  }

  #remember(id: string, committed: Committed): Committed {
    this.#seen.delete(id);
    this.#seen.set(id, committed);
    if (this.#seen.size > MAX_SEEN) this.#seen.delete(this.#seen.keys().next().value!);
    return committed;
  }

  /**
   * Removes every object of the upload. First a create-only `removed` state: every writer still working on an
   * older state is fenced from then on; then the bytes, every other object, and that state last. A removal
   * that stops half-way leaves that state, so `get` answers nothing and `sweep()` finishes it.
   */
  async #remove(id: string): Promise<void> {
    const objects = this.#objects;
    const key = objects.key(id);
    let current: Committed | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      current = await this.#current(id);
      if (!current || current.state.removed) break;
      try {
        current = await this.#commit(current, { ...current.state, removed: true });
        break;
      } catch (err) {
        if ((err as SpoolError).code !== 'UPLOAD_LOCKED' || attempt === 4) throw err; // a writer committed meanwhile: this removal is newer
      }
    }
    await objects.abortAll(key);
    // Something stays at the upload's key while its states go (the object, else an empty placeholder), and
    // goes only after them but the last: what tells `#latest` and `#commitLast` that a state they do not
    // see any more was deleted by this removal (a removal that finished has deleted every state).
    let versionId = current?.state.object?.versionId;
    if (current && !current.state.object) versionId = (await objects.put(key, Buffer.alloc(0))).versionId;
    const last = current ? objects.stateKey(id, current.n) : undefined;
    const rest = [];
    for await (const object of objects.objects(`${key}.`)) if (object.key !== last && this.#ours(object.key, id)) rest.push(object.key);
    await objects.deleteMany(rest);
    await objects.delete(key, versionId);
    if (last) await objects.delete(last);
    // Anything a writer that was taken over wrote meanwhile.
    const late = [];
    for await (const object of objects.objects(`${key}.`)) if (this.#ours(object.key, id)) late.push(object.key);
    await objects.deleteMany(late);
    this.#seen.delete(id);
    this.#details.delete(id);
  }

  /**
   * Makes the bytes one object at the upload's key. A create-only `sealing` state first fixes what it is
   * made of (the parts that count, then the tail copied server-side as part `tailPart`, a number claimed by
   * that state); whoever takes over from that state completes the same object. Then CompleteMultipartUpload
   * (or a copy of the tail / an empty PutObject when there never was a part), the check of its size, and
   * one state naming the object, with `upload` (the handler's new fields). Every other object of the upload
   * goes once that state is committed.
   */
  async #seal(start: Committed, upload: UploadState['upload'] = start.state.upload): Promise<Committed> {
    const objects = this.#objects;
    const key = objects.key(upload.id);
    const size = offsetOf(start.state);
    let current = start;
    const multipart = current.state.uploadId !== undefined && current.state.parts.length > 0;
    if (!current.state.sealing) {
      const tailPart = multipart && current.state.tail ? claimedOf(current.state) + 1 : undefined;
      if (tailPart !== undefined && tailPart > MAX_PARTS) throw toS3Error(new Error(`The upload needs more than ${MAX_PARTS} parts: raise partSize`));
      current = await this.#commit(current, { ...current.state, claimed: tailPart ?? current.state.claimed, sealing: { tailPart } });
    }
    const { tail } = current.state;
    if (multipart) current = await this.#assemble(current, size);
    else if (tail) await objects.copy(key, tail.key);
    else await objects.put(key, Buffer.alloc(0));
    const object = await this.#verify(key, size);
    const done = await this.#commitChecked(current, { upload, parts: [], object });
    // Complete from here on: leftovers that cannot go now go with the next read (#heal) or the sweep.
    await this.#cleanUp(upload.id, done.n).catch(() => undefined);
    return done;
  }

  /**
   * A completed upload with states beside its last: the request that completed it stopped before cleaning
   * up (its process was killed). Cleaned up now, in the background (the sweep would, later).
   */
  #heal(id: string, n: number): void {
    if (this.#healing.has(id)) return;
    this.#healing.add(id);
    void this.#cleanUp(id, n)
      .catch(() => undefined)
      .finally(() => this.#healing.delete(id));
  }

  /**
   * Once the bytes are one object: every other object of the upload goes but state `n` and any later state,
   * and every multipart upload. A later state is another instance's commit after the completion (an update
   * of the upload's fields) whose own clean-up removes `n`: deleting it here too would leave no state at all.
   */
  async #cleanUp(id: string, n: number): Promise<void> {
    const objects = this.#objects;
    const key = objects.key(id);
    await objects.abortAll(key); // an upload a crash left open, a copy-out that was overtaken
    const rest = [];
    for await (const entry of objects.objects(`${key}.`)) {
      if (!this.#ours(entry.key, id)) continue;
      const state = objects.parseStateKey(entry.key, ID);
      if (state?.id === id && state.n >= n) continue;
      rest.push(entry.key);
    }
    await objects.deleteMany(rest);
  }

  /** A key this store names for the upload (a state, a tail): anything else under `<id>.` is the app's. */
  #ours(key: string, id: string): boolean {
    const kind = this.#objects.kindOfKey(key, id);
    return kind === 'state' || kind === 'tail';
  }

  /**
   * CompleteMultipartUpload with the sealing state's parts (and the tail as part `tailPart`). S3 completes
   * with any subset of the uploaded parts; radosgw insists on every one (InvalidPart otherwise), so when
   * a crashed or taken-over writer left parts under numbers it claimed but never committed, the upload is
   * completed with all of them — their list committed first — and the parts that count are then copied out
   * of that object server-side (#copyOut).
   */
  async #assemble(start: Committed, size: number): Promise<Committed> {
    const objects = this.#objects;
    let current = start;
    const { uploadId, parts, tail, sealing } = current.state;
    const key = objects.key(current.state.upload.id);
    const wanted: StoredPart[] = [...parts];
    try {
      if (tail) wanted.push(await objects.copyPart(key, uploadId!, sealing!.tailPart!, tail.key, 0, tail.size));
      await objects.complete(key, uploadId!, wanted);
      return current;
    } catch (err) {
      const name = s3ErrorName(err);
      if (name === 'NoSuchUpload' || name === 'NoSuchKey') return this.#completedElsewhere(current, size);
      if (name !== 'InvalidPart') {
        // Completed before (by a request that then stopped): radosgw answers a repeated completion with an error.
        if ((await objects.head(key))?.size === size) return current;
        throw err;
      }
    }
    for (let attempt = 1; ; attempt++) {
      let all: StoredPart[];
      try {
        all = await objects.listParts(key, uploadId!);
      } catch (err) {
        if (s3ErrorName(err) === 'NoSuchUpload') return this.#completedElsewhere(current, size);
        throw err;
      }
      const byNumber = new Map(all.map((part) => [part.PartNumber, part]));
      for (const part of wanted) {
        if (!sameETag(byNumber.get(part.PartNumber)?.ETag, part.ETag)) throw toS3Error(new Error(`Part ${part.PartNumber} of ${key} is not the part the upload recorded`));
      }
      current = await this.#commit(current, { ...current.state, sealing: { ...sealing, assembled: all } });
      try {
        await objects.complete(key, uploadId!, all);
      } catch (err) {
        if (s3ErrorName(err) === 'NoSuchUpload') return this.#completedElsewhere(current, size);
        if (s3ErrorName(err) === 'InvalidPart' && attempt < ASSEMBLE_ATTEMPTS) continue; // one more late part: list again
        throw err;
      }
      await this.#copyOut(current.state, all, size);
      return current;
    }
  }

  /**
   * The multipart upload is gone: someone completed it (this store before a crash, or a request that took
   * over from the same sealing state). Its object is either the upload's bytes already, or all of the
   * uploaded parts (radosgw), whose list a sealing state holds: the parts that count are copied out of it.
   */
  async #completedElsewhere(current: Committed, size: number): Promise<Committed> {
    const key = this.#objects.key(current.state.upload.id);
    const head = await this.#objects.head(key);
    if (head === undefined) throw new SpoolError('UPLOAD_NOT_FOUND', 'The upload was removed while it was being completed');
    if (head.size === size) return current;
    const id = current.state.upload.id;
    const numbers = await this.#objects.stateNumbers(id);
    for (const n of numbers.reverse()) {
      const state = n === current.n ? current.state : await this.#objects.loadState(id, n);
      if (!state?.sealing) break;
      const assembled = state.sealing.assembled;
      if (assembled && assembled.reduce((sum, part) => sum + part.size, 0) === head.size) {
        await this.#copyOut(current.state, assembled, size);
        return current;
      }
    }
    throw toS3Error(new Error(`${key} holds ${head.size} bytes, which no recorded list of parts explains`));
  }

  /**
   * Rewrites the object at the upload's key as only the parts that count, copied server-side out of the
   * object that `assembled` (every uploaded part, in order) made. Each copied range must come back with the
   * ETag its part had: if the object is no longer that assembly (another request copied out first), nothing
   * is completed, and the object is accepted when it already has the upload's size.
   */
  async #copyOut(state: UploadState, assembled: readonly StoredPart[], size: number): Promise<void> {
    const objects = this.#objects;
    const key = objects.key(state.upload.id);
    const keep = new Set(state.parts.map((part) => part.PartNumber));
    if (state.sealing?.tailPart !== undefined) keep.add(state.sealing.tailPart);
    const pieces: { start: number; part: StoredPart }[] = [];
    let offset = 0;
    for (const part of assembled) {
      if (keep.has(part.PartNumber)) pieces.push({ start: offset, part });
      offset += part.size;
    }
    const head = await objects.head(key);
    if (head?.size === size) return;
    if (head?.size !== offset) throw toS3Error(new Error(`${key} holds ${head?.size ?? 'no'} bytes, not the ${offset} its parts add up to`));
    const uploadId = await objects.createMultipart(key);
    let overtaken = false;
    try {
      const copied: StoredPart[] = [];
      for (const [i, { start, part }] of pieces.entries()) {
        const copy = await objects.copyPart(key, uploadId, i + 1, key, start, part.size);
        if (!sameETag(copy.ETag, part.ETag)) {
          overtaken = true;
          throw toS3Error(new Error(`${key} changed while its parts were being copied out`));
        }
        copied.push(copy);
      }
      await objects.complete(key, uploadId, copied);
    } catch (err) {
      await objects.abort(key, uploadId).catch(() => undefined);
      if (overtaken && (await objects.head(key))?.size === size) return;
      throw err;
    }
  }

  /** HeadObject of the result: its size must be the bytes the state counted. */
  async #verify(key: string, size: number): Promise<NonNullable<UploadState['object']>> {
    const head = await this.#objects.head(key);
    if (head?.size !== size) throw toS3Error(new Error(`${key} holds ${head?.size ?? 'no'} bytes, not the ${size} the upload counted`));
    return { size, etag: head.etag, versionId: head.versionId };
  }

  async #readable(upload: ResumableUpload): Promise<Readable> {
    let current = await this.#current(upload.id);
    if (!current || current.state.removed) throw new SpoolError('UPLOAD_NOT_FOUND');
    const { state } = current;
    const key = this.#objects.key(upload.id);
    if (!state.object && !state.sealing && state.parts.length === 0 && state.tail) return this.#objects.stream(state.tail.key, Math.min(upload.offset, state.tail.size));
    if (!state.object) current = await this.#seal(current);
    return this.#objects.stream(key, Math.min(upload.offset, current.state.object!.size));
  }

  #view(state: UploadState): ResumableUpload {
    if (state.object) {
      this.#details.delete(state.upload.id);
      this.#details.set(state.upload.id, { etag: state.object.etag, versionId: state.object.versionId });
      if (this.#details.size > MAX_DETAILS) this.#details.delete(this.#details.keys().next().value!);
    }
    return { ...state.upload, offset: offsetOf(state) };
  }
}

/** Whether `changes` would leave `upload` as it is. */
function unchanged(upload: UploadState['upload'], changes: UploadChanges): boolean {
  if (changes.length !== undefined && changes.length !== upload.length) return false;
  if (changes.complete !== undefined && changes.complete !== upload.complete) return false;
  if (changes.sha256 !== undefined && changes.sha256 !== upload.sha256) return false;
  if (changes.expiresAt === null ? upload.expiresAt !== undefined : changes.expiresAt !== undefined && changes.expiresAt !== upload.expiresAt) return false;
  return changes.extra === undefined || JSON.stringify(changes.extra) === JSON.stringify(upload.extra);
}

/** ETags compared without their quotes (servers differ in quoting). */
function sameETag(a: string | undefined, b: string | undefined): boolean {
  return a !== undefined && b !== undefined && a.replace(/"/g, '') === b.replace(/"/g, '');
}
