// What the S3 targets (`spool-s3`, `multer-s3`) share: the S3 client from the environment the bench sets
// (BENCH_S3_ENDPOINT, …), the keys this process stored (deleted on the client's `cleanup` command,
// outside the timed run), and re-reading an object for verification mode.

import { randomUUID } from 'node:crypto';
import { require, sha256Stream, state } from './common.mjs';

export function s3Setup(target) {
  const { S3Client, DeleteObjectsCommand, GetObjectCommand } = require('@aws-sdk/client-s3');
  const env = process.env;
  for (const k of ['BENCH_S3_ENDPOINT', 'BENCH_S3_ACCESS_KEY_ID', 'BENCH_S3_SECRET_ACCESS_KEY', 'BENCH_S3_BUCKET']) {
    if (!env[k]) throw new Error(`${target}: ${k} is not set`);
  }
  // Path-style addressing; checksums only where an operation needs them (radosgw does not know the
  // x-amz-checksum headers newer SDKs send by default).
  const client = new S3Client({
    endpoint: env.BENCH_S3_ENDPOINT,
    region: env.BENCH_S3_REGION || 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.BENCH_S3_ACCESS_KEY_ID, secretAccessKey: env.BENCH_S3_SECRET_ACCESS_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const bucket = env.BENCH_S3_BUCKET;
  const prefix = `${target}-${process.pid}/`;
  const stored = new Set();
  return {
    client,
    bucket,
    prefix,
    newKey: () => `${prefix}${randomUUID()}`,
    /** Remembers the key for cleanup; in verification mode, the sha256 of the object as S3 has it. */
    async record(key) {
      stored.add(key);
      if (!state.verify) return undefined;
      const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      return sha256Stream(out.Body);
    },
    async cleanup() {
      const keys = [...stored];
      stored.clear();
      for (let i = 0; i < keys.length; i += 1000) {
        const Objects = keys.slice(i, i + 1000).map((Key) => ({ Key }));
        await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects, Quiet: true } }));
      }
    },
  };
}
