import { randomBytes } from 'node:crypto';
import { PassThrough, pipeline, type Readable } from 'node:stream';
import type { ChecksumAlgorithm, CompletedPart, S3Client } from '@aws-sdk/client-s3';
import type { UploadFence } from '../lib/resumable/upload-locker';
import { SpoolError } from '../lib/core/errors';
import type { ResumableUpload } from '../lib/resumable/upload-store';
import { toS3Error } from './s3-errors';
import { bytesCommand } from './s3-payload';

type Sdk = typeof import('@aws-sdk/client-s3');

/** S3's smallest part but the last, and its most parts per upload. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
export const MAX_PARTS = 10_000;
/** Digits of a state number in its key (`<key>.state.0000000001`). */
const STATE_DIGITS = 10;
const STATE_KEY = /^([A-Za-z0-9_-]{1,200})\.state\.(\d{10})$/;
const PART_CHECKSUMS = ['ChecksumCRC32', 'ChecksumCRC32C', 'ChecksumCRC64NVME', 'ChecksumSHA1', 'ChecksumSHA256'] as const;
/** How a completed upload is stored: never served as the client's claimed type (s3Engine's 'safe'). */
const OBJECT_SETTINGS = { ContentType: 'application/octet-stream', ContentDisposition: 'attachment' } as const;

/** A part S3 holds for the open multipart upload: what CompleteMultipartUpload needs, plus its size. */
export type StoredPart = CompletedPart & { readonly PartNumber: number; readonly size: number };

/**
 * Everything the store keeps about one upload, in immutable state objects `<key>.state.<n>`: each commit
 * writes the next number create-only (`If-None-Match: *`), so of two writers that based their work on the
 * same state exactly one commits and the other is fenced; the current state is the highest number. The
 * offset is derived, never stored: bytes in `parts` + bytes in `tail`, or the object's size.
 */
export interface UploadState {
  readonly upload: Omit<ResumableUpload, 'offset'>;
  /** The multipart upload the parts belong to (created with the first part). */
  readonly uploadId?: string;
  /**
   * The parts that count, in ascending PartNumber, each ≥ 5 MiB. Numbers need not be contiguous: the
   * numbers a writer claimed but did not use (it crashed, was fenced, or its atomic append failed) are
   * skipped for good.
   */
  readonly parts: readonly StoredPart[];
  /**
   * The highest part number any writer has claimed. A writer uploads a part only under a number that a
   * state it committed claimed, so numbers are never shared: the next writer starts after this one.
   */
  readonly claimed?: number;
  /** The bytes after the parts (< 5 MiB), as their own object. */
  readonly tail?: { readonly key: string; readonly size: number };
  /**
   * Completion in progress: committed before the bytes become one object, it fixes what the object is made
   * of (`parts`, then the tail copied as part `tailPart`). `assembled`: every part the multipart upload
   * held when a server that requires every uploaded part in CompleteMultipartUpload (Ceph radosgw) was
   * completed with them all, before the parts that count are copied out of that object.
   */
  readonly sealing?: { readonly tailPart?: number; readonly assembled?: readonly StoredPart[] };
  /** Set once the bytes are one object at the upload's key (completed, concatenated or read back). */
  readonly object?: { readonly size: number; readonly etag?: string; readonly versionId?: string };
  /** Committed by `remove()` before it deletes anything: every writer still working on an older state is fenced. */
  readonly removed?: true;
}

/** A state together with its number. */
export interface Committed {
  readonly n: number;
  readonly state: UploadState;
}

/** The highest part number in use or claimed. */
export function claimedOf(state: UploadState): number {
  return Math.max(state.claimed ?? 0, state.parts.at(-1)?.PartNumber ?? 0);
}

export function offsetOf(state: UploadState): number {
  if (state.object) return state.object.size;
  let size = state.tail?.size ?? 0;
  for (const part of state.parts) size += part.size;
  return size;
}

/** The name S3 gives an error, whether raw or wrapped by toS3Error. */
export function s3ErrorName(err: unknown): string | undefined {
  const e = err as { name?: string; cause?: { name?: string } } | null;
  return e?.cause?.name ?? e?.name;
}

/** One upload's objects in the bucket: `<key>` (the completed bytes), `<key>.state.<n>`, `<key>.tail.<random>`. */
export class UploadObjects {
  readonly client: S3Client;
  readonly bucket: string;
  readonly #sdk: Sdk;
  readonly #prefix: string;
  /** client.send with every failure typed by toS3Error. */
  readonly #send: S3Client['send'];
  /** Many instances: every write that makes bytes count first checks this writer still holds the lock. */
  readonly #fence: UploadFence | undefined;

  constructor(client: S3Client, sdk: Sdk, bucket: string, prefix: string, fence?: UploadFence) {
    this.#fence = fence;
    this.client = client;
    this.#send = (async (command: never, options?: never) => {
      try {
        return await client.send(command, options);
      } catch (err) {
        throw toS3Error(err);
      }
    }) as unknown as S3Client['send'];
    this.#sdk = sdk;
    this.bucket = bucket;
    this.#prefix = prefix;
  }

  key(id: string): string {
    return this.#prefix + id;
  }

  /** `<key>.state.<n>`, zero-padded so that keys sort as numbers. */
  stateKey(id: string, n: number): string {
    return `${this.statePrefix(id)}${String(n).padStart(STATE_DIGITS, '0')}`;
  }

  statePrefix(id: string): string {
    return `${this.key(id)}.state.`;
  }

  /** A fresh name per tail: the state names the one that counts, so writing a new tail never tears the old. */
  newTailKey(id: string): string {
    return `${this.key(id)}.tail.${randomBytes(6).toString('hex')}`;
  }

  /** The id and state number of a state object's key; undefined for any other key under the prefix. */
  parseStateKey(key: string, valid: RegExp): { id: string; n: number } | undefined {
    const match = STATE_KEY.exec(key.slice(this.#prefix.length));
    if (!key.startsWith(this.#prefix) || !match || !valid.test(match[1])) return undefined;
    return { id: match[1], n: Number(match[2]) };
  }

  /** What `key` is for upload `id`: its object, a state, a tail, or none of this store's names. */
  kindOfKey(key: string, id: string): 'object' | 'state' | 'tail' | undefined {
    const rest = key.slice(this.key(id).length);
    if (rest === '') return 'object';
    if (/^\.state\.\d{10}$/.test(rest)) return 'state';
    if (/^\.tail\.[0-9a-f]{12}$/.test(rest)) return 'tail';
    return undefined;
  }

  /** The upload id of any key of an upload (`<id>`, `<id>.state.<n>`, `<id>.tail.<random>`, …). */
  idOfKey(key: string, valid: RegExp): string | undefined {
    if (!key.startsWith(this.#prefix)) return undefined;
    const id = key.slice(this.#prefix.length).split('.', 1)[0];
    return valid.test(id) ? id : undefined;
  }

  /** The numbers of the upload's state objects from `from` on, ascending (one LIST; more only past 1,000). */
  async stateNumbers(id: string, from = 1): Promise<number[]> {
    const numbers: number[] = [];
    const prefix = this.statePrefix(id);
    const StartAfter = from > 1 ? this.stateKey(id, from - 1) : undefined;
    for await (const { key } of this.objects(prefix, StartAfter)) {
      const n = Number(key.slice(prefix.length));
      if (Number.isSafeInteger(n) && n >= from) numbers.push(n);
    }
    return numbers;
  }

  async loadState(id: string, n: number): Promise<UploadState | undefined> {
    let text: string;
    try {
      const res = await this.client.send(new this.#sdk.GetObjectCommand({ Bucket: this.bucket, Key: this.stateKey(id, n) }));
      text = await res.Body!.transformToString('utf8');
    } catch (err) {
      if (s3ErrorName(err) === 'NoSuchKey') return undefined;
      throw toS3Error(err);
    }
    return JSON.parse(text) as UploadState;
  }

  /**
   * Writes state `n` create-only: the commit point of every change. Rejects with UPLOAD_LOCKED when state
   * `n` exists — another writer committed on the same base state first — so a writer that lost the upload
   * can never make a change count, however late its request arrives. With a fence (Redis), a writer known
   * to have lost its lock is refused before it even tries.
   */
  async commit(id: string, n: number, state: UploadState): Promise<Committed> {
    await this.#fence?.check(id);
    const Body = JSON.stringify(state);
    try {
      await this.client.send(
        new this.#sdk.PutObjectCommand({ Bucket: this.bucket, Key: this.stateKey(id, n), Body, ContentType: 'application/json', IfNoneMatch: '*' }),
      );
    } catch (err) {
      const name = s3ErrorName(err);
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (name === 'PreconditionFailed' || name === 'ConditionalRequestConflict' || status === 412) {
        throw new SpoolError('UPLOAD_LOCKED', 'Another request committed a change to this upload first: this one was superseded', { cause: err });
      }
      throw toS3Error(err);
    }
    return { n, state };
  }

  async put(Key: string, Body: Buffer): Promise<{ etag?: string; versionId?: string }> {
    const res = await this.#send(bytesCommand(new this.#sdk.PutObjectCommand({ ...OBJECT_SETTINGS, Bucket: this.bucket, Key, Body, ContentLength: Body.length })));
    return { etag: res.ETag, versionId: res.VersionId };
  }

  /** Server-side copy of a whole (small) object: no byte passes through this process. */
  async copy(Key: string, source: string): Promise<void> {
    await this.#send(
      new this.#sdk.CopyObjectCommand({ ...OBJECT_SETTINGS, MetadataDirective: 'REPLACE', Bucket: this.bucket, Key, CopySource: this.#source(source) }),
    );
  }

  /** Deletes an object; one that is already gone is fine. */
  async delete(Key: string, VersionId?: string): Promise<void> {
    try {
      await this.client.send(new this.#sdk.DeleteObjectCommand({ Bucket: this.bucket, Key, VersionId }));
    } catch (err) {
      if (s3ErrorName(err) !== 'NoSuchKey') throw toS3Error(err);
    }
  }

  /** Deletes objects, 1,000 per DeleteObjects; ones already gone are fine. */
  async deleteMany(keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const Objects = keys.slice(i, i + 1000).map((Key) => ({ Key }));
      const res = await this.#send(new this.#sdk.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects, Quiet: true } }));
      const failed = (res.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) throw toS3Error(new Error(`DeleteObjects: ${failed.length} not deleted, first ${failed[0].Key}: ${failed[0].Code}`));
    }
  }

  async head(Key: string): Promise<{ size: number; etag?: string; versionId?: string } | undefined> {
    try {
      const res = await this.client.send(new this.#sdk.HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { size: res.ContentLength ?? 0, etag: res.ETag, versionId: res.VersionId };
    } catch (err) {
      if (s3ErrorName(err) === 'NotFound' || s3ErrorName(err) === 'NoSuchKey') return undefined;
      throw toS3Error(err);
    }
  }

  /** Copies `length` bytes of `Key` from `start` into `target` at `at` (a GET streamed into the buffer). */
  async readInto(Key: string, target: Buffer, at: number, start: number, length: number, signal?: AbortSignal): Promise<void> {
    if (length === 0) return;
    const Range = `bytes=${start}-${start + length - 1}`;
    let copied = 0;
    try {
      const res = await this.client.send(new this.#sdk.GetObjectCommand({ Bucket: this.bucket, Key, Range }), { abortSignal: signal });
      for await (const chunk of res.Body as Readable) {
        const piece = chunk as Buffer;
        if (copied + piece.length > length) throw new Error(`GetObject ${Key} ${Range} returned more bytes than asked for`);
        piece.copy(target, at + copied);
        copied += piece.length;
      }
    } catch (err) {
      throw toS3Error(err);
    }
    if (copied !== length) throw toS3Error(new Error(`GetObject ${Key} ${Range} returned ${copied} bytes, not ${length}`));
  }

  /** A Readable of `Key` (its first `length` bytes when given); destroying it cancels the GET. */
  stream(Key: string, length?: number): Readable {
    const out = new PassThrough();
    const controller = new AbortController();
    out.once('close', () => {
      if (!out.readableEnded) controller.abort();
    });
    const Range = length === undefined ? undefined : `bytes=0-${length - 1}`;
    this.client.send(new this.#sdk.GetObjectCommand({ Bucket: this.bucket, Key, Range }), { abortSignal: controller.signal }).then(
      (res) => pipeline(res.Body as Readable, out, () => undefined /* errors already reach `out` */),
      (err: unknown) => out.destroy(toS3Error(err)),
    );
    return out;
  }

  async createMultipart(Key: string): Promise<string> {
    const checksum = await defaultChecksum(this.client);
    const res = await this.#send(new this.#sdk.CreateMultipartUploadCommand({ ...OBJECT_SETTINGS, ...checksum, Bucket: this.bucket, Key }));
    if (!res.UploadId) throw toS3Error(new Error('CreateMultipartUpload answered without an UploadId'));
    return res.UploadId;
  }

  async uploadPart(Key: string, UploadId: string, PartNumber: number, Body: Buffer, signal?: AbortSignal): Promise<StoredPart> {
    await this.#fence?.check(Key.slice(this.#prefix.length)); // an early refusal only: numbers are never shared
    const res = await this.#send(
      bytesCommand(new this.#sdk.UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body, ContentLength: Body.length })),
      { abortSignal: signal },
    );
    if (!res.ETag) throw toS3Error(new Error(`UploadPart ${PartNumber} answered without an ETag`));
    return withChecksums({ PartNumber, ETag: res.ETag, size: Body.length }, res);
  }

  /** UploadPartCopy of `source` (a byte range of it when given): server-side, no memory here. */
  async copyPart(Key: string, UploadId: string, PartNumber: number, source: string, start: number, size: number): Promise<StoredPart> {
    const CopySourceRange = `bytes=${start}-${start + size - 1}`;
    const res = await this.#send(
      new this.#sdk.UploadPartCopyCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, CopySource: this.#source(source), CopySourceRange }),
    );
    const result = res.CopyPartResult;
    if (!result?.ETag) throw toS3Error(new Error(`UploadPartCopy ${PartNumber} answered without an ETag`));
    return withChecksums({ PartNumber, ETag: result.ETag, size }, result);
  }

  async complete(Key: string, UploadId: string, parts: readonly StoredPart[]): Promise<void> {
    const Parts = parts.map(({ size: _size, ...part }) => part);
    await this.#send(new this.#sdk.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts } }));
  }

  async abort(Key: string, UploadId: string): Promise<void> {
    try {
      await this.client.send(new this.#sdk.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId }));
    } catch (err) {
      if (s3ErrorName(err) !== 'NoSuchUpload') throw toS3Error(err);
    }
  }

  /**
   * Aborts every open multipart upload of `Key` but `keep`: ours, and any a crash left between its
   * CreateMultipartUpload and the state that would have named it.
   */
  async abortAll(Key: string, keep?: string): Promise<void> {
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.#send(new this.#sdk.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: Key, KeyMarker, UploadIdMarker }));
      for (const upload of page.Uploads ?? []) {
        if (upload.Key === Key && upload.UploadId && upload.UploadId !== keep) await this.abort(Key, upload.UploadId);
      }
      if (!page.IsTruncated || (!page.NextKeyMarker && !page.NextUploadIdMarker)) return;
      KeyMarker = page.NextKeyMarker;
      UploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /** Every part S3 holds for an open multipart upload (ListParts, page by page), in ascending PartNumber. */
  async listParts(Key: string, UploadId: string): Promise<StoredPart[]> {
    const parts: StoredPart[] = [];
    let PartNumberMarker: string | undefined;
    for (;;) {
      const page = await this.#send(new this.#sdk.ListPartsCommand({ Bucket: this.bucket, Key, UploadId, PartNumberMarker }));
      for (const part of page.Parts ?? []) {
        if (part.PartNumber && part.ETag) parts.push(withChecksums({ PartNumber: part.PartNumber, ETag: part.ETag, size: part.Size ?? 0 }, part));
      }
      if (!page.IsTruncated || page.NextPartNumberMarker === undefined) break;
      PartNumberMarker = String(page.NextPartNumberMarker);
    }
    return parts.sort((a, b) => a.PartNumber - b.PartNumber);
  }

  /** Every object under `prefix` (ListObjectsV2, page by page), after `startAfter` when given. */
  async *objects(prefix = this.#prefix, StartAfter?: string): AsyncIterable<{ key: string; modified: number }> {
    let ContinuationToken: string | undefined;
    do {
      const page = await this.#send(
        new this.#sdk.ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken, StartAfter: ContinuationToken ? undefined : StartAfter }),
      );
      for (const object of page.Contents ?? []) if (object.Key) yield { key: object.Key, modified: object.LastModified?.getTime() ?? 0 };
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  #source(key: string): string {
    return `${this.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
  }

}

function withChecksums(part: StoredPart, res: Partial<Record<(typeof PART_CHECKSUMS)[number], string>>): StoredPart {
  const checksums: Record<string, string> = {};
  for (const name of PART_CHECKSUMS) if (res[name]) checksums[name] = res[name]!;
  return { ...part, ...checksums };
}

/**
 * lib-storage's (and s3Engine's) rule: when the client adds checksums to every request (the SDK's default),
 * the upload declares CRC32 and each part's checksum goes into the completion (kept in the state).
 */
async function defaultChecksum(client: S3Client): Promise<{ ChecksumAlgorithm?: ChecksumAlgorithm }> {
  const calculation = await client.config.requestChecksumCalculation?.();
  return calculation === 'WHEN_SUPPORTED' ? { ChecksumAlgorithm: 'CRC32' } : {};
}
