import { createHash } from 'node:crypto';
import type { ChecksumAlgorithm, CompletedPart, S3Client } from '@aws-sdk/client-s3';
import { SpoolError } from '../lib/core/errors';
import type { Crc } from './s3-checksum';
import { toS3Error } from './s3-errors';
import { removeIfLanded, type ReadParams } from './s3-object';
import type { Part, PartReader } from './s3-parts';
import { bytesCommand } from './s3-payload';

type Sdk = typeof import('@aws-sdk/client-s3');

/** S3's limit on parts per upload. */
const MAX_PARTS = 10_000;
const PART_CHECKSUMS = ['ChecksumCRC32', 'ChecksumCRC32C', 'ChecksumCRC64NVME', 'ChecksumSHA1', 'ChecksumSHA256'] as const;

export interface MultipartOptions {
  readonly client: S3Client;
  readonly sdk: Sdk;
  /** Bucket, Key and the object's settings, PutObject-shaped: each command takes the members it knows. */
  readonly input: { readonly Bucket: string; readonly Key: string } & Record<string, unknown>;
  /** What a HeadObject of the result needs (SSE-C keys, …). */
  readonly read: ReadParams;
  readonly queueSize: number;
  readonly crc?: Crc;
  /** The reader's signal: the request's, joined with `stop`. Cancels part requests still running. */
  readonly signal: AbortSignal;
  /** Aborted on any failure here, which ends `signal` (the reader stops). */
  readonly stop: AbortController;
  /** Bounds the AbortMultipartUpload request; past it (or when the store is unreachable) it is retried in the background. */
  readonly abortTimeout: number;
  /**
   * The key is the engine's own random one: any multipart upload open at it is this request's, so one that a
   * CreateMultipartUpload left without an answer can be found and aborted. (An app-chosen key may have another
   * request's upload open at it: those are left to the bucket's lifecycle rule.)
   */
  readonly ownKey?: boolean;
}

export interface MultipartResult {
  /** From the completion, or (stores that answer an empty one, like Ceph RGW 16) computed from the parts' MD5s. */
  readonly etag?: string;
  readonly versionId?: string;
}

/**
 * Uploads `first` and the reader's following parts as one multipart upload, `queueSize` parts at a time.
 * Each part's memory is released as soon as its UploadPart settles; while `queueSize` parts are in
 * flight, one more may be read and wait, so an upload holds at most `partSize × (queueSize + 1)`.
 * On any failure the part requests still running are cancelled and the upload is aborted *before* this
 * rejects (retried in the background if the store cannot be reached): nothing is left open.
 */
export async function uploadMultipart(first: Part, reader: PartReader, options: MultipartOptions): Promise<MultipartResult> {
  const { client, sdk, input, queueSize, crc, signal, stop } = options;
  const checksum = crc ? { ChecksumAlgorithm: crc.name, ChecksumType: 'FULL_OBJECT' as const } : await defaultChecksum(client, input);
  let uploadId: string | undefined;
  // Not cancellable: an upload created after we stopped listening would stay open, unknown to us.
  try {
    ({ UploadId: uploadId } = await client.send(new sdk.CreateMultipartUploadCommand({ ...input, ...checksum })));
  } catch (err) {
    first.release();
    // Without an answer it may have landed, or land later; and the SDK retries what found no answer or a
    // 5xx, so an earlier attempt may have landed whatever the last one heard.
    if (options.ownKey && mayHaveLanded(err)) abortLandedCreations(options);
    throw toS3Error(err);
  }
  if (!uploadId) {
    first.release();
    throw new SpoolError('STORAGE_FAILED', 'S3 CreateMultipartUpload answered without an UploadId', { status: 502 });
  }

  const parts: CompletedPart[] = [];
  const running = new Set<Promise<void>>();
  let failure: unknown;
  let whole = 0n;
  const send = (part: Part, PartNumber: number) => {
    const value = crc && crc.toBase64(part.crc!);
    if (crc) whole = crc.combine(whole, part.crc!, part.body.length);
    const partChecksum = crc && { ChecksumAlgorithm: crc.name, [`Checksum${crc.name}`]: value };
    const command = bytesCommand(new sdk.UploadPartCommand({ ...input, ...partChecksum, UploadId: uploadId, PartNumber, Body: part.body }));
    let sent = false;
    const request: Promise<void> = client.send(command, { abortSignal: signal }).then(
      (res) => {
        sent = true;
        // (Behind a browser-facing proxy, a missing ETag usually means CORS does not expose it.)
        if (!res.ETag) throw new SpoolError('STORAGE_FAILED', `S3 UploadPart ${PartNumber} answered without an ETag`, { status: 502 });
        const completed: CompletedPart = { PartNumber, ETag: res.ETag };
        if (crc) completed[`Checksum${crc.name}`] = value;
        for (const name of PART_CHECKSUMS) if (res[name]) completed[name] = res[name];
        parts[PartNumber - 1] = completed;
      },
    ).catch((err: unknown) => {
      failure ??= toS3Error(err);
      stop.abort(failure);
    }).finally(() => {
      part.release(sent);
      running.delete(request);
    });
    running.add(request);
  };

  try {
    let part = first;
    for (let number = 1; ; number++) {
      if (number > MAX_PARTS) {
        part.release();
        throw new SpoolError('STORAGE_FAILED', `The file needs more than ${MAX_PARTS} parts of partSize: raise partSize`);
      }
      send(part, number);
      if (part.last) break;
      part = await reader.next();
      // The part just read waits for a free slot: queueSize in flight, one waiting.
      while (running.size >= queueSize && failure === undefined) await Promise.race(running);
      if (failure !== undefined) {
        part.release();
        throw failure;
      }
    }
    await Promise.all(running);
    if (failure !== undefined) throw failure;
    signal.throwIfAborted();
  } catch (err) {
    stop.abort(err);
    await Promise.allSettled([...running]);
    await abortUpload(uploadId, options);
    throw err;
  }

  const wholeChecksum = crc && { ChecksumType: 'FULL_OBJECT' as const, [`Checksum${crc.name}`]: crc.toBase64(whole) };
  const computedEtag = multipartEtag(parts);
  try {
    // Not cancellable either: a completion that lands after we gave up would leave an object behind.
    const done = await client.send(
      new sdk.CompleteMultipartUploadCommand({ ...input, ...wholeChecksum, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
    );
    return { etag: done.ETag || computedEtag, versionId: done.VersionId };
  } catch (err) {
    // Its answer may have been lost after it landed: then the upload is gone and the object is ours to remove
    // (now, or when an abort retried in the background finds it gone).
    const landed = () => removeIfLanded(client, sdk, input, options.read, computedEtag);
    if ((await abortUpload(uploadId, options, landed)) === 'gone') await landed();
    throw toS3Error(err);
  }
}

/**
 * Sends AbortMultipartUpload. Resolves 'aborted', 'gone' (NoSuchUpload: completed or aborted already) or
 * 'retrying' (the store did not answer in time: retried in the background for a few minutes, and
 * `gone` called if a retry finds the upload gone).
 */
async function abortUpload(UploadId: string, options: MultipartOptions, gone?: () => Promise<void>): Promise<'aborted' | 'gone' | 'retrying'> {
  const { client, sdk, input, abortTimeout } = options;
  const command = new sdk.AbortMultipartUploadCommand({ ...input, UploadId });
  try {
    // 0: no bound of our own (the client's own timeouts still apply), as for the middleware's other timeouts.
    await client.send(command, abortTimeout > 0 ? { abortSignal: AbortSignal.timeout(abortTimeout) } : {});
    return 'aborted';
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchUpload') return 'gone';
    retryAbort(client, command, gone);
    return 'retrying';
  }
}

/** When AbortMultipartUpload could not reach the store: try again after these delays (ms). */
const ABORT_RETRY_DELAYS = [500, 2_000, 10_000, 30_000, 120_000];

/**
 * After a CreateMultipartUpload without an answer, at the engine's own key: aborts every multipart upload open
 * there, now and after each of ABORT_RETRY_DELAYS (a creation still on its way may land later), in the background.
 */
function abortLandedCreations(options: MultipartOptions, delays = [0, ...ABORT_RETRY_DELAYS]): void {
  const { client, sdk, input } = options;
  const [delay, ...rest] = delays;
  if (delay === undefined) return;
  setTimeout(() => {
    void (async () => {
      const { Bucket, Key: Prefix, ExpectedBucketOwner, RequestPayer } = input as typeof input & Pick<import('@aws-sdk/client-s3').ListMultipartUploadsRequest, 'ExpectedBucketOwner' | 'RequestPayer'>;
      const listed = await client.send(new sdk.ListMultipartUploadsCommand({ Bucket, Prefix, ExpectedBucketOwner, RequestPayer }));
      for (const upload of listed.Uploads ?? []) {
        if (upload.Key === input.Key && upload.UploadId) await abortUpload(upload.UploadId, options);
      }
    })()
      .catch(() => undefined)
      .finally(() => abortLandedCreations(options, rest));
  }, delay).unref();
}

/** A request that got no answer, a 5xx, or was sent more than once (the SDK's retries) may have landed. */
function mayHaveLanded(err: unknown): boolean {
  const metadata = (err as { $metadata?: { httpStatusCode?: number; attempts?: number } } | null)?.$metadata;
  const status = metadata?.httpStatusCode;
  return status === undefined || status >= 500 || (metadata?.attempts ?? 1) > 1;
}

function retryAbort(
  client: S3Client,
  command: import('@aws-sdk/client-s3').AbortMultipartUploadCommand,
  gone?: () => Promise<void>,
  delays = ABORT_RETRY_DELAYS,
): void {
  const [delay, ...rest] = delays;
  if (delay === undefined) return;
  setTimeout(() => {
    client.send(command).catch((err: { name?: string }) => {
      if (err?.name === 'NoSuchUpload') void gone?.().catch(() => undefined);
      else retryAbort(client, command, gone, rest);
    });
  }, delay).unref();
}

/**
 * lib-storage's rule, kept so default clients behave the same on AWS: when the client adds checksums to
 * every request (the SDK's default), the upload declares CRC32 and the parts' checksums go into the completion.
 */
async function defaultChecksum(client: S3Client, input: Record<string, unknown>): Promise<{ ChecksumAlgorithm?: ChecksumAlgorithm }> {
  if (input.ChecksumAlgorithm) return {};
  const calculation = await client.config.requestChecksumCalculation?.();
  return calculation === 'WHEN_SUPPORTED' ? { ChecksumAlgorithm: 'CRC32' } : {};
}

/** `"md5(part MD5s)-N"`, what S3 reports for unencrypted multipart objects; undefined if a part ETag is no MD5. */
function multipartEtag(parts: CompletedPart[]): string | undefined {
  const hash = createHash('md5');
  for (const { ETag } of parts) {
    const hex = /^"?([0-9a-f]{32})"?$/i.exec(ETag ?? '')?.[1];
    if (!hex) return undefined;
    hash.update(Buffer.from(hex, 'hex'));
  }
  return `"${hash.digest('hex')}-${parts.length}"`;
}
