import { randomUUID } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { PutObjectCommandInput, S3Client } from '@aws-sdk/client-s3';
import { collectChunks, putBack } from '../lib/collect-chunks';
import type { AppRequest, IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/engine';
import { countOption, describe, sizeOption, type Size } from '../lib/sizes';
import { toS3Error } from './s3-errors';

/** PutObject parameters passed through to every upload (metadata, SSE, storage class, ACL, …). */
export type S3ExtraParams = Omit<PutObjectCommandInput, 'Bucket' | 'Key' | 'Body' | 'ContentLength'>;

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
   * Memory per upload is at most `partSize × (queueSize + 1)`. Minimum 5 MiB (S3's rule).
   * @default '8MiB'
   */
  partSize?: Size;
  /** Parts uploaded concurrently per file. @default 4 */
  queueSize?: number;
  /** Extra PutObject parameters; `ContentType` defaults to the part's mimetype. */
  params?: S3ExtraParams;
  /**
   * Where the streamed sha256 is recorded so readers can verify the object later:
   * `'metadata'` → `x-amz-meta-sha256` (multipart objects get it by a server-side self-copy after completion),
   * `'tag'` → object tag `sha256`, `'none'` → not recorded.
   * @default 'metadata'
   */
  integrity?: 'metadata' | 'tag' | 'none';
  /**
   * After a failure, how long (ms) to wait for lib-storage to abort the multipart upload before forcing it.
   * @default 30000
   */
  abortTimeout?: number;
}

/** Details an S3-stored file carries. */
export interface S3Details {
  readonly bucket: string;
  readonly key: string;
  readonly location: string;
  readonly etag?: string;
  readonly versionId?: string;
}

const MIN_PART_SIZE = 5 * 1024 * 1024;
/** When AbortMultipartUpload could not reach the store: try again after these delays (ms). */
const ABORT_RETRY_DELAYS = [500, 2_000, 10_000, 30_000, 120_000];
type Sdk = typeof import('@aws-sdk/client-s3');
type LibStorage = typeof import('@aws-sdk/lib-storage');

/** Streams files into S3 (or any S3-compatible store) with lib-storage's Upload. */
export function s3Engine(options: S3EngineOptions): StorageEngine {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`Expected s3Engine options to be an object, got ${describe(options)}`);
  }
  const { client, bucket, key, prefix = '', params = {}, integrity = 'metadata' } = options;
  if (typeof client?.send !== 'function') throw new TypeError(`Expected \`client\` to be an S3Client, got ${describe(client)}`);
  if (typeof bucket !== 'string' || bucket === '') throw new TypeError(`Expected \`bucket\` to be a non-empty string, got ${describe(bucket)}`);
  if (key !== undefined && typeof key !== 'function') throw new TypeError(`Expected \`key\` to be a function, got ${describe(key)}`);
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${describe(prefix)}`);
  if (!['metadata', 'tag', 'none'].includes(integrity)) {
    throw new TypeError(`Expected \`integrity\` to be 'metadata', 'tag' or 'none', got ${describe(integrity)}`);
  }
  const partSize = sizeOption('partSize', options.partSize, 8 * 1024 * 1024);
  if (partSize < MIN_PART_SIZE) throw new TypeError(`Expected \`partSize\` to be at least 5 MiB, got ${partSize}`);
  const queueSize = countOption('queueSize', options.queueSize, 4);
  if (queueSize < 1) throw new TypeError(`Expected \`queueSize\` to be at least 1, got ${queueSize}`);
  const abortTimeout = countOption('abortTimeout', options.abortTimeout, 30_000);
  // Loaded here, not at import, so apps that never use S3 need not install the SDK.
  const sdk = require('@aws-sdk/client-s3') as Sdk;
  const { Upload } = require('@aws-sdk/lib-storage') as LibStorage;

  const makeKey = async (file: IncomingFile, req: AppRequest): Promise<string> => {
    const value = key ? await key(file, req) : `${prefix}${randomUUID()}`;
    if (typeof value !== 'string' || value === '') throw new TypeError(`s3Engine \`key\` must return a non-empty string, got ${describe(value)}`);
    return value;
  };

  const storedFile = (Key: string, details: S3Details): StoredFile => ({
    storage: 's3',
    details,
    stream: () => {
      const out = new PassThrough();
      client.send(new sdk.GetObjectCommand({ Bucket: bucket, Key })).then(
        (res) => (res.Body as Readable).on('error', (err) => out.destroy(err)).pipe(out),
        (err: unknown) => out.destroy(toS3Error(err)),
      );
      return out;
    },
    remove: async () => {
      await client.send(new sdk.DeleteObjectCommand({ Bucket: bucket, Key }));
    },
  });

  /** One PutObject for a body that fits one part: the digest is known, so it goes in with the object. */
  const putSmall = async (Key: string, body: Buffer, file: IncomingFile, context: StoreContext): Promise<StoredFile> => {
    const sha256 = await context.sha256();
    const input: PutObjectCommandInput = { ContentType: file.mimetype, ...params, Bucket: bucket, Key, Body: body };
    if (sha256 && integrity === 'metadata') input.Metadata = { ...params.Metadata, sha256 };
    if (sha256 && integrity === 'tag') input.Tagging = joinTags(params.Tagging, sha256);
    // Not aborted mid-flight: an aborted PUT may still land on the server after we gave up on it. A small
    // body finishes quickly; if the request failed meanwhile, the core removes the object like any other.
    const res = await client.send(new sdk.PutObjectCommand(input));
    return storedFile(Key, { bucket, key: Key, location: await locationOf(client, bucket, Key), etag: res.ETag, versionId: res.VersionId });
  };

  const putMultipart = async (Key: string, stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> => {
    const upload = new Upload({
      client,
      partSize,
      queueSize,
      leavePartsOnError: false,
      params: { ContentType: file.mimetype, ...params, Bucket: bucket, Key, Body: stream },
    });
    // Failing the body makes lib-storage abort the multipart upload itself *before* done() rejects;
    // upload.abort() would reject at once and send AbortMultipartUpload later, unseen.
    let forced: NodeJS.Timeout | undefined;
    const onAbort = () => {
      stream.destroy(context.signal.reason instanceof Error ? context.signal.reason : new Error('aborted'));
      forced = setTimeout(() => void upload.abort(), abortTimeout).unref();
    };
    context.signal.addEventListener('abort', onAbort, { once: true });
    let completed = false;
    try {
      const done = await upload.done();
      completed = true;
      const head = await client.send(new sdk.HeadObjectCommand({ Bucket: bucket, Key }));
      const details: S3Details = {
        bucket,
        key: Key,
        location: await locationOf(client, bucket, Key),
        etag: done.ETag || head.ETag,
        versionId: done.VersionId ?? head.VersionId,
      };
      await recordDigest(Key, head, await context.sha256());
      return storedFile(Key, details);
    } catch (err) {
      // lib-storage sent AbortMultipartUpload unless the store was unreachable; then keep trying a while,
      // so an upload interrupted by an outage does not stay open once the store is back.
      const unaborted = (upload as unknown as { abortMultipartUploadCommand: unknown }).abortMultipartUploadCommand;
      if (upload.uploadId && unaborted) retryAbort(Key, upload.uploadId);
      // Completed, then a follow-up (HeadObject, the digest) failed: the object must not outlive the error.
      if (completed) await deleteQuietly(Key);
      throw context.signal.aborted ? context.signal.reason : toS3Error(err);
    } finally {
      clearTimeout(forced);
      context.signal.removeEventListener('abort', onAbort);
    }
  };

  const deleteQuietly = (Key: string): Promise<unknown> =>
    client.send(new sdk.DeleteObjectCommand({ Bucket: bucket, Key }), { abortSignal: AbortSignal.timeout(10_000) }).catch(() => undefined);

  const retryAbort = (Key: string, UploadId: string, delays = ABORT_RETRY_DELAYS): void => {
    const [delay, ...rest] = delays;
    if (delay === undefined) return;
    setTimeout(() => {
      client.send(new sdk.AbortMultipartUploadCommand({ Bucket: bucket, Key, UploadId })).catch((err: { name?: string }) => {
        if (err?.name !== 'NoSuchUpload') retryAbort(Key, UploadId, rest);
      });
    }, delay).unref();
  };

  /** Records the digest of a completed multipart object (known only now, after its last byte). */
  const recordDigest = async (Key: string, head: import('@aws-sdk/client-s3').HeadObjectCommandOutput, sha256: string | undefined) => {
    if (!sha256 || integrity === 'none') return;
    if (integrity === 'tag') {
      const TagSet = [...parseTags(params.Tagging), { Key: 'sha256', Value: sha256 }];
      await client.send(new sdk.PutObjectTaggingCommand({ Bucket: bucket, Key, Tagging: { TagSet } }));
      return;
    }
    await client.send(
      new sdk.CopyObjectCommand({
        ...copyableParams(params),
        Bucket: bucket,
        Key,
        CopySource: `${bucket}/${encodeURIComponent(Key).replace(/%2F/g, '/')}`,
        MetadataDirective: 'REPLACE',
        ContentType: head.ContentType,
        Metadata: { ...head.Metadata, sha256 },
      }),
    );
  };

  return {
    name: 's3',
    async store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      const Key = await makeKey(file, context.request);
      // Read up to one part first: a small file becomes one PutObject carrying its digest.
      const head = await collectChunks(stream, UNCOUNTED, partSize, context.signal);
      // Bytes lib-storage may buffer count against the budget while the upload runs (not the file's size).
      const buffered = head.overflow ? partSize * (queueSize + 1) : head.size;
      await context.memory.reserve(buffered, context.signal);
      try {
        if (!head.overflow) {
          try {
            return await putSmall(Key, Buffer.concat(head.chunks, head.size), file, context);
          } catch (err) {
            throw context.signal.aborted ? context.signal.reason : toS3Error(err);
          }
        }
        putBack(stream, head);
        return await putMultipart(Key, stream, file, context);
      } finally {
        context.memory.release(buffered);
      }
    },
  };
}

/** A reservation target that never refuses: the S3 engine accounts for its buffers itself. */
const UNCOUNTED = { tryReserve: () => true, release: () => undefined };

/** The object's URL: on the configured endpoint (path- or host-style), else AWS's regional host. */
async function locationOf(client: S3Client, bucket: string, key: string): Promise<string> {
  const path = key.split('/').map(encodeURIComponent).join('/');
  const endpoint = await client.config.endpoint?.();
  if (endpoint) {
    const port = endpoint.port ? `:${endpoint.port}` : '';
    const base = `${endpoint.protocol}//`;
    return client.config.forcePathStyle
      ? `${base}${endpoint.hostname}${port}/${bucket}/${path}`
      : `${base}${bucket}.${endpoint.hostname}${port}/${path}`;
  }
  return `https://${bucket}.s3.${await client.config.region()}.amazonaws.com/${path}`;
}

function joinTags(tagging: string | undefined, sha256: string): string {
  return tagging ? `${tagging}&sha256=${sha256}` : `sha256=${sha256}`;
}

function parseTags(tagging: string | undefined): { Key: string; Value: string }[] {
  if (!tagging) return [];
  return [...new URLSearchParams(tagging)].map(([Key, Value]) => ({ Key, Value }));
}

/** The passed-through params a CopyObject accepts (it rewrites the object, so it must keep them). */
function copyableParams(params: S3ExtraParams): Partial<import('@aws-sdk/client-s3').CopyObjectCommandInput> {
  const { ContentType: _type, Metadata: _meta, ...rest } = params;
  const allowed = ['ACL', 'CacheControl', 'ContentDisposition', 'ContentEncoding', 'ContentLanguage', 'Expires',
    'ServerSideEncryption', 'StorageClass', 'SSEKMSKeyId', 'SSECustomerAlgorithm', 'SSECustomerKey', 'SSECustomerKeyMD5',
    'BucketKeyEnabled', 'ObjectLockMode', 'ObjectLockRetainUntilDate', 'ObjectLockLegalHoldStatus'] as const;
  return Object.fromEntries(Object.entries(rest).filter(([name]) => (allowed as readonly string[]).includes(name)));
}
