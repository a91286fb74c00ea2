/**
 * Helpers for tests that talk to the S3 server provided by the jest global
 * setup (__tests__/setup/s3-global-setup.ts, run from global-setup.ts): either an external
 * S3-compatible server named by S3_ENDPOINT, or a local Ceph radosgw started
 * by scripts/local-s3.sh.
 *
 * Environment (set by the global setup, inherited by the test workers):
 *   S3_ENDPOINT            e.g. http://127.0.0.1:7480
 *   S3_ACCESS_KEY_ID
 *   S3_SECRET_ACCESS_KEY
 *   S3_REGION              optional, default us-east-1
 *   S3_BUCKET_PREFIX       optional, default 'spool-test-'
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  GetObjectCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  S3Client,
  type MultipartUpload,
  type ObjectIdentifier,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';

export interface S3TestEnv {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  bucketPrefix: string;
}

/** Reads the S3_* variables; throws a clear error when they are missing. */
export function s3TestEnv(): S3TestEnv {
  const endpoint = process.env.S3_ENDPOINT;
  const accessKeyId = process.env.S3_ACCESS_KEY_ID;
  const secretAccessKey = process.env.S3_SECRET_ACCESS_KEY;
  const missing = [
    ['S3_ENDPOINT', endpoint],
    ['S3_ACCESS_KEY_ID', accessKeyId],
    ['S3_SECRET_ACCESS_KEY', secretAccessKey],
  ]
    .filter(([, v]) => !v)
    .map(([k]) => k);
  if (missing.length > 0 || !endpoint || !accessKeyId || !secretAccessKey) {
    throw new Error(
      `S3 test environment missing ${missing.join(', ')}: run jest with ` +
        `globalSetup __tests__/setup/global-setup.ts, or set S3_ENDPOINT, ` +
        `S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY for an external server`,
    );
  }
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region: process.env.S3_REGION || 'us-east-1',
    bucketPrefix: process.env.S3_BUCKET_PREFIX || 'spool-test-',
  };
}

/**
 * An S3Client for the test server: path-style addressing, and checksums only
 * when an operation requires them (radosgw 16 does not know the x-amz-checksum
 * headers that newer SDKs send by default).
 */
export function s3TestClient(
  overrides: { accessKeyId?: string; secretAccessKey?: string } & Partial<S3ClientConfig> = {},
): S3Client {
  const env = s3TestEnv();
  const { accessKeyId, secretAccessKey, ...config } = overrides;
  return new S3Client({
    endpoint: env.endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: {
      accessKeyId: accessKeyId ?? env.accessKeyId,
      secretAccessKey: secretAccessKey ?? env.secretAccessKey,
    },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...config,
  });
}

/** Creates a bucket with a unique name (S3_BUCKET_PREFIX + random) and returns its name. */
export async function createTestBucket(client: S3Client): Promise<string> {
  const prefix = s3TestEnv().bucketPrefix;
  const name = `${prefix}${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`
    .toLowerCase()
    .slice(0, 63);
  await client.send(new CreateBucketCommand({ Bucket: name }));
  return name;
}

/** The sha256 (hex) of the object at `key`, read back whole. */
export async function storedSha256(client: S3Client, bucket: string, key: string): Promise<string> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  for await (const chunk of res.Body as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('hex');
}

/** Whether `key` holds an object now (a HEAD that succeeds; not found, or any error, is false). */
export async function objectExists(client: S3Client, bucket: string, key: string): Promise<boolean> {
  try {
    await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

/** All multipart uploads that are still open in the bucket. */
export async function listOpenMultipartUploads(
  client: S3Client,
  bucket: string,
): Promise<MultipartUpload[]> {
  const uploads: MultipartUpload[] = [];
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListMultipartUploadsCommand({
        Bucket: bucket,
        KeyMarker: keyMarker,
        UploadIdMarker: uploadIdMarker,
      }),
    );
    uploads.push(...(page.Uploads ?? []));
    if (!page.IsTruncated) break;
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
    if (!keyMarker && !uploadIdMarker) break;
  }
  return uploads;
}

/**
 * Aborts every open multipart upload, deletes every object (all versions and
 * delete markers, should a test have turned versioning on) and the bucket.
 */
export async function emptyAndDeleteBucket(client: S3Client, bucket: string): Promise<void> {
  for (const upload of await listOpenMultipartUploads(client, bucket)) {
    await client.send(
      new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }),
    );
  }

  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        KeyMarker: keyMarker,
        VersionIdMarker: versionIdMarker,
      }),
    );
    const objects: ObjectIdentifier[] = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])]
      .filter((v) => v.Key !== undefined)
      .map((v) => ({ Key: v.Key as string, VersionId: v.VersionId }));
    for (let i = 0; i < objects.length; i += 1000) {
      const res = await client.send(
        new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: { Objects: objects.slice(i, i + 1000), Quiet: true },
        }),
      );
      if (res.Errors && res.Errors.length > 0) {
        const e = res.Errors[0];
        throw new Error(
          `emptyAndDeleteBucket(${bucket}): could not delete ${res.Errors.length} objects, ` +
            `first: ${e.Key}: ${e.Code} ${e.Message}`,
        );
      }
    }
    if (!page.IsTruncated) break;
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }

  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/**
 * Registers beforeAll/afterAll hooks that create a fresh bucket with its own client for the enclosing
 * describe (or file) and delete it afterwards; `onReady` receives both once they exist.
 */
export function useTestBucket(onReady: (client: S3Client, bucket: string) => void): void {
  let client: S3Client;
  let bucket: string;
  beforeAll(async () => {
    client = s3TestClient();
    bucket = await createTestBucket(client);
    onReady(client, bucket);
  }, 60_000);
  afterAll(async () => {
    await emptyAndDeleteBucket(client, bucket);
    client.destroy();
  });
}
