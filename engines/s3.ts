import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { PutObjectCommandInput, S3Client } from '@aws-sdk/client-s3';
import type { AppRequest, IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/core/engine';
import { countOption, describe, sizeOption, type Size, durationOption } from '../lib/core/sizes';
import { CRC32C, CRC64NVME, type Crc, type S3ChecksumAlgorithm } from './s3-checksum';
import { toS3Error } from './s3-errors';
import { uploadMultipart } from './s3-multipart';
import { locationOf, removeIfLanded, s3StoredFile, type ReadParams, type S3Details } from './s3-object';
import { PartReader, type Part } from './s3-parts';
import { bytesCommand } from './s3-payload';

export type { S3Details } from './s3-object';

/** Members that describe one body (digests, lengths): the engine sets them per request, never the app. */
type PerBody = 'Bucket' | 'Key' | 'Body' | 'ContentLength' | 'ContentMD5'
  | Exclude<Extract<keyof PutObjectCommandInput, `Checksum${string}`>, 'ChecksumAlgorithm'>;

/** PutObject parameters passed through to every upload (metadata, SSE, storage class, ACL, …). */
export type S3ExtraParams = Omit<PutObjectCommandInput, PerBody>;

export interface S3EngineOptions {
  /** An S3Client configured by the app (region, endpoint, forcePathStyle, credentials). */
  client: S3Client;
  bucket: string;
  /**
   * Object key for a file. The client's filename is never used unless you use it here (sanitize it).
   * @default `${prefix}${randomUUID()}`
   */
  key?: (file: IncomingFile, req: AppRequest) => string | Promise<string>;
  /** Prefix for generated keys. @default '' */
  prefix?: string;
  /**
   * Bytes per multipart part; a file that ends within one part is sent with a single PutObject.
   * Memory: each upload holds at most `partSize × (queueSize + 1)` bytes, every one of them reserved on
   * the memory budget first (an upload waits while the budget is full); a budget of one part (plus the
   * requests' own shares) is enough. Minimum 5 MiB (S3's rule); at most 10,000 parts per file.
   * @default '8MiB'
   */
  partSize?: Size;
  /** Parts uploaded concurrently per file. @default 4 */
  queueSize?: number;
  /** Extra PutObject parameters (they win over `contentType`'s choice). */
  params?: S3ExtraParams;
  /**
   * The Content-Type objects are stored with. `'safe'`: `application/octet-stream` with
   * `Content-Disposition: attachment`, whatever the client claimed — an HTML or SVG upload served from the
   * bucket or a CDN can then not run script on that origin. `'client'`: the client's Content-Type verbatim
   * (only for buckets never served to browsers, or from a sandbox domain). A function: your choice per
   * file (e.g. the client's type if it is on an allow-list of inert types).
   * @default 'safe'
   */
  contentType?: 'safe' | 'client' | ((file: IncomingFile, req: AppRequest) => string);
  /**
   * Where the file's sha256 (the spool's `sha256: true`) is recorded for later readers:
   * `'tag'` → object tag `sha256` on every object (in the PutObject itself; after completion, by
   * PutObjectTagging, for multipart objects — no new version, any size, any encryption);
   * `'metadata'` → `x-amz-meta-sha256` on objects sent in one PutObject, and the `sha256` tag on
   * multipart objects (their metadata is fixed when the upload starts, before the digest is known);
   * `'none'` → not recorded.
   * @default 'tag'
   */
  integrity?: 'tag' | 'metadata' | 'none';
  /**
   * A checksum the store itself verifies: the engine sends each part's CRC and the whole object's
   * (checksum type FULL_OBJECT), so a store that checks them rejects a corrupted object instead of
   * keeping it; readers can ask for it with `ChecksumMode: 'ENABLED'`. Computed in JS (~800 MB/s for
   * CRC32C, ~400 MB/s for CRC64NVME). Stores that ignore checksums (Ceph RGW before 19) accept anything.
   * @default 'none'
   */
  checksum?: S3ChecksumAlgorithm | 'none';
  /**
   * After a failure, how long (ms) the AbortMultipartUpload request may take before the engine reports the
   * failure anyway; the abort is then retried in the background for a few minutes.
   * @default 10000
   */
  abortTimeout?: number;
}

const MIN_PART_SIZE = 5 * 1024 * 1024;
const CHECKSUMS: Readonly<Record<S3ChecksumAlgorithm, Crc>> = { CRC32C, CRC64NVME };
const READ_PARAMS = ['SSECustomerAlgorithm', 'SSECustomerKey', 'SSECustomerKeyMD5', 'RequestPayer', 'ExpectedBucketOwner'] as const;
type Sdk = typeof import('@aws-sdk/client-s3');

/** Streams files into S3 (or any S3-compatible store), one part at a time within the memory budget. */
export function s3Engine(options: S3EngineOptions): StorageEngine {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected s3Engine options to be an object, got ${describe(options)}`);
  }
  const { client, bucket, key, prefix = '', integrity = 'tag', contentType = 'safe', checksum = 'none' } = options;
  if (typeof client?.send !== 'function') throw new TypeError(`Expected \`client\` to be an S3Client, got ${describe(client)}`);
  if (typeof bucket !== 'string' || bucket === '') throw new TypeError(`Expected \`bucket\` to be a non-empty string, got ${describe(bucket)}`);
  if (key !== undefined && typeof key !== 'function') throw new TypeError(`Expected \`key\` to be a function, got ${describe(key)}`);
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${describe(prefix)}`);
  if (!['tag', 'metadata', 'none'].includes(integrity)) {
    throw new TypeError(`Expected \`integrity\` to be 'tag', 'metadata' or 'none', got ${describe(integrity)}`);
  }
  if (!['safe', 'client'].includes(contentType as string) && typeof contentType !== 'function') {
    throw new TypeError(`Expected \`contentType\` to be 'safe', 'client' or a function, got ${describe(contentType)}`);
  }
  if (checksum !== 'none' && !Object.hasOwn(CHECKSUMS, checksum)) {
    throw new TypeError(`Expected \`checksum\` to be 'CRC32C', 'CRC64NVME' or 'none', got ${describe(checksum)}`);
  }
  const params = appParams(options.params);
  const partSize = sizeOption('partSize', options.partSize, 8 * 1024 * 1024);
  if (partSize < MIN_PART_SIZE) throw new TypeError(`Expected \`partSize\` to be at least 5 MiB, got ${partSize}`);
  const queueSize = countOption('queueSize', options.queueSize, 4);
  if (queueSize < 1) throw new TypeError(`Expected \`queueSize\` to be at least 1, got ${queueSize}`);
  const abortTimeout = durationOption('abortTimeout', options.abortTimeout, 10_000);
  // Loaded here, not at import, so apps that never use S3 need not install the SDK.
  const sdk = require('@aws-sdk/client-s3') as Sdk;
  if (checksum !== 'none' && sdk.ChecksumType === undefined) {
    throw new TypeError('`checksum` needs an @aws-sdk/client-s3 that knows full-object checksums (ChecksumType): upgrade it');
  }
  const crc = checksum === 'none' ? undefined : CHECKSUMS[checksum];
  const read: ReadParams = Object.fromEntries(READ_PARAMS.filter((name) => params[name] !== undefined).map((name) => [name, params[name]]));

  const makeKey = async (file: IncomingFile, req: AppRequest): Promise<string> => {
    const value = key ? await key(file, req) : `${prefix}${randomUUID()}`;
    if (typeof value !== 'string' || value === '') throw new TypeError(`s3Engine \`key\` must return a non-empty string, got ${describe(value)}`);
    return value;
  };

  /** The object's settings, PutObject-shaped; the app's `params` win. */
  const objectInput = (Key: string, file: IncomingFile, req: AppRequest) => {
    const type = contentType === 'safe' ? 'application/octet-stream' : contentType === 'client' ? file.mimetype : contentType(file, req);
    if (typeof type !== 'string' || type === '') throw new TypeError(`s3Engine \`contentType\` must return a non-empty string, got ${describe(type)}`);
    const safety = contentType === 'safe' ? { ContentDisposition: 'attachment' } : {};
    return { ContentType: type, ...safety, ...params, Bucket: bucket, Key };
  };

  const details = async (Key: string, etag: string | undefined, versionId: string | undefined): Promise<S3Details> =>
    ({ bucket, key: Key, location: await locationOf(client, bucket, Key), etag, versionId });

  /** A file that ends within one part: one PutObject, carrying its digest. */
  const putSingle = async (part: Part, input: ReturnType<typeof objectInput>, context: StoreContext): Promise<StoredFile> => {
    let sent = false;
    try {
      const sha256 = await context.sha256();
      const put: PutObjectCommandInput = { ...input, Body: part.body, ContentLength: part.body.length };
      if (crc) Object.assign(put, { ChecksumAlgorithm: crc.name, [`Checksum${crc.name}`]: crc.toBase64(part.crc!) });
      if (sha256 && integrity === 'metadata') put.Metadata = { ...params.Metadata, sha256 };
      if (sha256 && integrity === 'tag') put.Tagging = joinTags(params.Tagging, sha256);
      let res;
      try {
        // Not cancelled when the request fails: an abandoned PUT may still land after we gave up on it.
        // A body of one part finishes soon; if the request failed meanwhile, the core removes the object.
        res = await client.send(bytesCommand(new sdk.PutObjectCommand(put)));
        sent = true;
      } catch (err) {
        if (noAnswer(err)) await removeIfLanded(client, sdk, input, read, `"${createHash('md5').update(part.body).digest('hex')}"`);
        throw toS3Error(err);
      }
      return s3StoredFile(client, sdk, await details(input.Key, res.ETag, res.VersionId), read);
    } finally {
      part.release(sent);
    }
  };

  /** Records the digest of a completed multipart object (known only after its last byte, so as a tag). */
  const tagDigest = async (stored: S3Details, sha256: string | undefined) => {
    if (!sha256 || integrity === 'none') return;
    const TagSet = [...parseTags(params.Tagging), { Key: 'sha256', Value: sha256 }];
    await client.send(new sdk.PutObjectTaggingCommand({ ...pickRead(read), Bucket: bucket, Key: stored.key, VersionId: stored.versionId, Tagging: { TagSet } }));
  };

  return {
    name: 's3',
    async store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      // Ours to abort on failure; the reader and the part requests follow both it and the request.
      const stop = new AbortController();
      const signal = AbortSignal.any([context.signal, stop.signal]);
      try {
        const input = objectInput(await makeKey(file, context.request), file, context.request);
        const reader = new PartReader(stream, { partSize, memory: context.memory, signal, crc });
        const first = await reader.next();
        if (first.last) return await putSingle(first, input, context);
        const result = await uploadMultipart(first, reader, { client, sdk, input, read, queueSize, crc, signal, stop, abortTimeout, ownKey: key === undefined });
        const stored = await details(input.Key, result.etag, result.versionId);
        const object = s3StoredFile(client, sdk, stored, read);
        try {
          await tagDigest(stored, await context.sha256());
        } catch (err) {
          // The object must not outlive the error (the tagging failure is what the app hears).
          await object.remove().catch(() => undefined);
          throw toS3Error(err);
        }
        return object;
      } catch (err) {
        throw context.signal.aborted ? context.signal.reason : err;
      } finally {
        stop.abort();
      }
    },
  };
}

/** The app's params without per-body members (a fixed ContentMD5 or checksum cannot describe every part). */
function appParams(params: S3ExtraParams | undefined): S3ExtraParams {
  if (params === undefined) return {};
  if (typeof params !== 'object' || params === null) throw new TypeError(`Expected \`params\` to be an object, got ${describe(params)}`);
  return Object.fromEntries(Object.entries(params).filter(([name]) => name !== 'ContentMD5' && !/^Checksum(?!Algorithm$)/.test(name)));
}

/** No HTTP answer came back (connection dropped, timed out): the write may or may not have landed. */
function noAnswer(err: unknown): boolean {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode === undefined;
}

function pickRead(read: ReadParams): Pick<ReadParams, 'RequestPayer' | 'ExpectedBucketOwner'> {
  return { RequestPayer: read.RequestPayer, ExpectedBucketOwner: read.ExpectedBucketOwner };
}

function joinTags(tagging: string | undefined, sha256: string): string {
  return tagging ? `${tagging}&sha256=${sha256}` : `sha256=${sha256}`;
}

function parseTags(tagging: string | undefined): { Key: string; Value: string }[] {
  if (!tagging) return [];
  return [...new URLSearchParams(tagging)].map(([Key, Value]) => ({ Key, Value }));
}
