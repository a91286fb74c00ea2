/** What a test bucket holds, read with the admin client: keys under a prefix, open multipart uploads, object bytes. */
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { listOpenMultipartUploads } from '../setup/s3-env';

/** `where()` is asked at each call: test files learn their client and bucket in `beforeAll`. */
export function bucketInspector(where: () => { client: S3Client; bucket: string }) {
  return {
    /** Keys under `prefix`, without it, sorted. */
    async keysUnder(prefix: string): Promise<string[]> {
      const { client, bucket } = where();
      const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (res.Contents ?? []).map((o) => o.Key!.slice(prefix.length)).sort();
    },
    /** Keys of the multipart uploads still open under `prefix`. */
    async openUploads(prefix: string): Promise<string[]> {
      const { client, bucket } = where();
      return (await listOpenMultipartUploads(client, bucket)).map((u) => u.Key!).filter((key) => key.startsWith(prefix));
    },
    async objectBytes(key: string): Promise<Buffer> {
      const { client, bucket } = where();
      const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return Buffer.from(await (res.Body as Readable & { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
    },
  };
}
