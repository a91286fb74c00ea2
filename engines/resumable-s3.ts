import { randomBytes } from 'node:crypto';
import { PassThrough, pipeline, Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import type { StoredFile } from '../lib/engine';
import { SpoolError } from '../lib/errors';
import { countOption, describe, sizeOption, type Size } from '../lib/sizes';
import type { UploadFence } from '../lib/resumable/upload-locker';
import type { AppendContext, NewUpload, ResumableContext, ResumableStore, ResumableUpload, UploadChanges } from '../lib/resumable/upload-store';
import { appendToS3 } from './resumable-s3-append';
import { concatenateObjects } from './resumable-s3-concat';
import { MIN_PART_SIZE, offsetOf, s3ErrorName, UploadObjects, type UploadState } from './resumable-s3-objects';
import { locationOf, type S3Details } from './s3-object';
import { toS3Error } from './s3-errors';

export interface ResumableS3Options {
  /** An S3Client configured by the app (region, endpoint, forcePathStyle, credentials). */
  client: S3Client;
  bucket: string;
  /**
   * Prepended to every key. Per upload the store keeps `<prefix><id>.info` (its state, a small JSON), while
   * unfinished at most one `<prefix><id>.tail.<random>` (the last < 5 MiB) and an open multipart upload on
   * `<prefix><id>`, which becomes the one object at completion. A new store over the same bucket and
   * prefix (after a restart) resumes every upload where it stopped.
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
   * Checked before every state write, UploadPart and completion; with `redisLocker()` a writer that lost its
   * lock is refused there (README "Running many instances").
   */
  fence?: UploadFence;
}

const ID = /^[A-Za-z0-9_-]{1,200}$/;
const KNOWN = new Set(['client', 'bucket', 'prefix', 'partSize', 'queueSize', 'fence']);
/** Completed objects' ETag and version for `file()` (which is synchronous), bounded. */
const MAX_DETAILS = 10_000;
type Sdk = typeof import('@aws-sdk/client-s3');
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/**
 * A resumable store on S3 that never touches local disk: appends are cut into parts in memory reserved
 * from the memory budget, the short tail between requests is an object of its own, the state is one
 * small object per upload, and a completed upload is one ordinary object at `<prefix><id>`.
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
  return new S3Store(new UploadObjects(client, sdk, bucket, prefix, options.fence), partSize, queueSize);
}

class S3Store implements ResumableStore {
  readonly name = 's3';
  readonly #objects: UploadObjects;
  readonly #partSize: number;
  readonly #queueSize: number;
  /** `<endpoint>/<bucket>/` or its host-style equivalent, known after the first async call. */
  #base: string | undefined;
  readonly #details = new Map<string, { etag?: string; versionId?: string }>();

  constructor(objects: UploadObjects, partSize: number, queueSize: number) {
    this.#objects = objects;
    this.#partSize = partSize;
    this.#queueSize = queueSize;
  }

  async create(upload: NewUpload): Promise<ResumableUpload> {
    // The multipart upload is created with the first part: an upload that stays small never has one.
    const state: UploadState = { upload: { ...upload, id: randomBytes(16).toString('base64url'), complete: false }, parts: [] };
    await this.#objects.save(state);
    return this.#view(state);
  }

  async get(id: string): Promise<ResumableUpload | undefined> {
    const state = await this.#load(id);
    return state && this.#view(state);
  }

  async update(id: string, changes: UploadChanges): Promise<ResumableUpload> {
    const state = await this.#load(id);
    if (!state) throw new SpoolError('UPLOAD_NOT_FOUND');
    const upload: Mutable<UploadState['upload']> = { ...state.upload };
    if (changes.length !== undefined) upload.length = changes.length;
    if (changes.complete !== undefined) upload.complete = changes.complete;
    if (changes.sha256 !== undefined) upload.sha256 = changes.sha256;
    if (changes.extra !== undefined) upload.extra = changes.extra;
    if (changes.expiresAt === null) delete upload.expiresAt;
    else if (changes.expiresAt !== undefined) upload.expiresAt = changes.expiresAt;
    // Completing makes the bytes one object; sealing and the new fields are one state PUT.
    if (upload.complete && !state.object) return this.#view(await this.#seal({ ...state, upload }));
    const next: UploadState = { ...state, upload };
    await this.#objects.save(next);
    return this.#view(next);
  }

  async append(upload: ResumableUpload, stream: Readable, context: AppendContext): Promise<number> {
    let state: UploadState | undefined;
    try {
      state = await this.#load(upload.id);
      if (!state) throw new SpoolError('UPLOAD_NOT_FOUND', 'The upload was removed');
      if (state.object) throw new SpoolError('UPLOAD_COMPLETED', 'The upload was read back as one object: no byte can follow');
      if (offsetOf(state) !== upload.offset) throw new SpoolError('OFFSET_MISMATCH', `The stored offset is ${offsetOf(state)}, not ${upload.offset}`);
    } catch (err) {
      stream.destroy();
      throw err;
    }
    const committed = await appendToS3(state, stream, context, { objects: this.#objects, partSize: this.#partSize, queueSize: this.#queueSize });
    return offsetOf(committed);
  }

  async concatenate(target: ResumableUpload, parts: readonly ResumableUpload[], context: ResumableContext): Promise<number> {
    const state = await this.#load(target.id);
    if (!state) throw new SpoolError('UPLOAD_NOT_FOUND');
    const sources = [];
    for (const part of parts) {
      const source = await this.#load(part.id);
      if (!source?.object) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Concat: final needs complete partial uploads');
      sources.push({ key: this.#objects.key(part.id), size: source.object.size });
    }
    const key = this.#objects.key(target.id);
    await concatenateObjects(this.#objects, key, sources, this.#partSize, context);
    const size = sources.reduce((sum, source) => sum + source.size, 0);
    const object = await this.#verify(key, size);
    await this.#objects.save({ ...state, object });
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
    return { storage: 's3', details, stream: () => this.read(upload), remove: () => this.remove(upload.id) };
  }

  async remove(id: string): Promise<void> {
    if (!ID.test(id)) return;
    const key = this.#objects.key(id);
    const state = await this.#objects.load(id);
    // Bytes first, state last: a remove that fails half-way is still an upload, which the next remove or sweep finishes.
    await this.#objects.abortAll(key);
    await this.#objects.delete(key, state?.object?.versionId);
    const stateKey = this.#objects.stateKey(id);
    for await (const name of this.#objects.keys(`${key}.`)) if (name !== stateKey) await this.#objects.delete(name);
    await this.#objects.delete(stateKey);
    this.#details.delete(id);
  }

  async *list(): AsyncIterable<ResumableUpload> {
    for await (const key of this.#objects.keys()) {
      const id = this.#objects.idOfStateKey(key, ID);
      const upload = id && (await this.get(id));
      if (upload) yield upload;
    }
  }

  /**
   * Makes the bytes one object at the upload's key: CompleteMultipartUpload with the tail as the last part
   * (UploadPartCopy), or a copy of the tail / an empty PutObject when there never was a part. Returns the
   * sealed state, saved (one PUT, with whatever else `state` changed); the tail object goes once that
   * state no longer names it.
   */
  async #seal(state: UploadState): Promise<UploadState> {
    const objects = this.#objects;
    const key = objects.key(state.upload.id);
    const size = offsetOf(state);
    if (state.uploadId && state.parts.length > 0) {
      const parts = [...state.parts];
      if (state.tail) parts.push(await objects.copyPart(key, state.uploadId, parts.length + 1, state.tail.key, 0, state.tail.size));
      try {
        await objects.complete(key, state.uploadId, parts);
      } catch (err) {
        // A completion whose answer was lost, or a crash before its state was saved: the object is there.
        const head = s3ErrorName(err) === 'NoSuchUpload' ? await objects.head(key) : undefined;
        if (head?.size !== size) throw err;
      }
    } else if (state.tail) {
      await objects.copy(key, state.tail.key);
    } else {
      await objects.put(key, Buffer.alloc(0));
    }
    const object = await this.#verify(key, size);
    const next: UploadState = { ...state, uploadId: undefined, parts: [], tail: undefined, object };
    await objects.save(next);
    if (state.tail) await objects.delete(state.tail.key);
    await objects.abortAll(key); // an upload a crash left open (or one without parts) must not outlive the object
    return next;
  }

  /** HeadObject of the result: its size must be the bytes the state counted. */
  async #verify(key: string, size: number): Promise<NonNullable<UploadState['object']>> {
    const head = await this.#objects.head(key);
    if (head?.size !== size) throw toS3Error(new Error(`${key} holds ${head?.size ?? 'no'} bytes, not the ${size} the upload counted`));
    return { size, etag: head.etag, versionId: head.versionId };
  }

  async #readable(upload: ResumableUpload): Promise<Readable> {
    let state = await this.#load(upload.id);
    if (!state) throw new SpoolError('UPLOAD_NOT_FOUND');
    const key = this.#objects.key(upload.id);
    if (!state.object && state.parts.length === 0 && state.tail) return this.#objects.stream(state.tail.key, Math.min(upload.offset, state.tail.size));
    if (!state.object) state = await this.#seal(state);
    return this.#objects.stream(key, Math.min(upload.offset, state.object!.size));
  }

  async #load(id: string): Promise<UploadState | undefined> {
    if (!ID.test(id)) return undefined;
    this.#base ??= await locationOf(this.#objects.client, this.#objects.bucket, '');
    return this.#objects.load(id);
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
