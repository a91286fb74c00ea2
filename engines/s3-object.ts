import { PassThrough, pipeline, type Readable } from 'node:stream';
import type { PutObjectCommandInput, S3Client } from '@aws-sdk/client-s3';
import type { StoredFile } from '../lib/core/engine';
import { SpoolError } from '../lib/core/errors';
import { toS3Error } from './s3-errors';

type Sdk = typeof import('@aws-sdk/client-s3');

/** Details an S3-stored file carries. */
export interface S3Details {
  readonly bucket: string;
  readonly key: string;
  readonly location: string;
  readonly etag?: string;
  /** The version the upload created, on a versioned bucket; `remove()` deletes exactly this version. */
  readonly versionId?: string;
}

/** What reading an object back needs besides its name: SSE-C keys, requester-pays, bucket owner. */
export type ReadParams = Pick<PutObjectCommandInput, 'SSECustomerAlgorithm' | 'SSECustomerKey' | 'SSECustomerKeyMD5' | 'RequestPayer' | 'ExpectedBucketOwner'>;

/** The stored file the engine returns: reads back and deletes exactly the version it wrote. */
export function s3StoredFile(client: S3Client, sdk: Sdk, details: S3Details, read: ReadParams): StoredFile {
  const target = { Bucket: details.bucket, Key: details.key, VersionId: details.versionId };
  return {
    storage: 's3',
    details,
    stream: () => {
      const out = new PassThrough();
      const controller = new AbortController();
      // Destroyed before the end (the consumer gave up): cancel the GetObject, or free its connection.
      out.once('close', () => {
        if (!out.readableEnded) controller.abort();
      });
      client.send(new sdk.GetObjectCommand({ ...read, ...target }), { abortSignal: controller.signal }).then(
        // pipeline, not pipe: destroying `out` destroys the SDK's body, which gives the socket back.
        (res) => pipeline(res.Body as Readable, out, () => undefined /* errors already reach `out` */),
        (err: unknown) => out.destroy(toS3Error(err)),
      );
      return out;
    },
    remove: async () => {
      const owner = pick(read, 'RequestPayer', 'ExpectedBucketOwner');
      try {
        // With the version id, a versioned bucket loses exactly what we wrote (no delete marker is left).
        if (details.versionId !== undefined || details.etag === undefined) return void (await client.send(new sdk.DeleteObjectCommand({ ...owner, ...target })));
        // Unversioned: the key may hold another request's object by now (an app-chosen key written again):
        // that one stays. A HEAD tells on any S3; `If-Match` closes the gap on stores that honour it (AWS).
        // Without the HEAD (credentials that may delete but not read) the object is left: If-Match alone is
        // ignored by some stores (radosgw 16), and someone else's object is never removed.
        const head = await client.send(new sdk.HeadObjectCommand({ ...read, Bucket: details.bucket, Key: details.key })).catch((err: unknown) => {
          if (statusOf(err) !== 403) throw err;
          throw new SpoolError('STORAGE_FAILED', `S3 HeadObject was denied (403): cannot tell that ${details.key} is still this upload's object, so it is left in place (allow s3:GetObject to remove it)`, { cause: err, status: 502 });
        });
        if (head.ETag !== details.etag) return;
        await client.send(new sdk.DeleteObjectCommand({ ...owner, ...target, IfMatch: details.etag }));
      } catch (err) {
        // Gone already (NotFound), or replaced between the HEAD and the delete (412): nothing of ours is left.
        if (isGone(err)) return;
        throw err instanceof SpoolError ? err : toS3Error(err);
      }
    },
  };
}

/**
 * After a write failed without a clear answer (the connection dropped), the object may exist anyway.
 * Deletes it if the key's current object has the ETag our write would have produced. Best effort: the
 * caller is already failing with the write's error, which is what the app needs to hear.
 */
export async function removeIfLanded(
  client: S3Client,
  sdk: Sdk,
  target: { readonly Bucket: string; readonly Key: string },
  read: ReadParams,
  etag: string | undefined,
): Promise<void> {
  if (!etag) return;
  const { Bucket, Key } = target;
  try {
    const head = await client.send(new sdk.HeadObjectCommand({ ...read, Bucket, Key }), { abortSignal: AbortSignal.timeout(10_000) });
    if (head.ETag !== etag) return;
    await client.send(new sdk.DeleteObjectCommand({ ...pick(read, 'RequestPayer', 'ExpectedBucketOwner'), Bucket, Key, VersionId: head.VersionId }));
  } catch {
    // NotFound: it did not land. Anything else: the store is still unreachable; the lifecycle rule is the backstop.
  }
}

/** The object's URL: on the configured endpoint (path- or host-style), else AWS's regional host. */
export async function locationOf(client: S3Client, bucket: string, key: string): Promise<string> {
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

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function isGone(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return name === 'NotFound' || name === 'NoSuchKey' || statusOf(err) === 404 || statusOf(err) === 412;
}

function pick<T extends object, K extends keyof T>(from: T, ...keys: K[]): Pick<T, K> {
  return Object.fromEntries(keys.filter((k) => from[k] !== undefined).map((k) => [k, from[k]])) as Pick<T, K>;
}
