// Resumable-upload targets (issue #14), tus 1.0 at /files, each in its own process (resumable-main.mjs):
//   spool-tus-disk  express-spool from the BUILT package (dist/lib/index.js): Express 5 +
//                   resumable({ store: resumableDiskStore({ directory }) }), the rest default (64 MiB budget,
//                   whole-upload sha256 off)
//   spool-tus-s3    the same with s3ResumableStore({ client, bucket, prefix }) (8 MiB parts, queueSize 1)
//   tus-file        @tus/server + @tus/file-store (its defaults), mounted in Express 5 as its README shows
//   tus-s3          @tus/server + @tus/s3-store (its defaults: 8 MiB parts staged in os.tmpdir(), up to 60
//                   part uploads in flight), on the same S3 server and bucket
//   ceiling-tus     raw node:http, each PATCH body piped into the upload's file (ceiling-tus.mjs): the limit
//   ceiling-tus-s3  raw node:http, each PATCH body one UploadPart (ceiling-tus-s3.mjs): the limit on S3
//
// Every completed upload is recorded (express-spool's onComplete, @tus/server's onUploadFinish) so that the
// client can check over IPC that each upload completed with the right size; in verification mode the record
// carries `stored`, the sha256 of what the store kept (the disk file, or the S3 object read back).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import ceilingTus from './ceiling-tus.mjs';
import ceilingTusS3 from './ceiling-tus-s3.mjs';
import { expressApp, require, sha256File, sha256Stream, state } from './common.mjs';
import { s3Setup } from './s3.mjs';

export const MOUNT = '/files';

export default async function resumableTarget({ kind, directory }) {
  const uploads = join(directory, 'uploads');
  const completed = [];
  const s3 = kind.endsWith('-s3') && kind !== 'ceiling-tus-s3' ? s3Setup(kind) : null;
  const s3Keys = new Set(); // key prefixes to delete on `cleanup` (an upload's object, its .info, …)
  const stored = async ({ path, key }) => {
    if (!state.verify) return undefined;
    if (path) return sha256File(path);
    const { GetObjectCommand } = require('@aws-sdk/client-s3');
    const out = await s3.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    return sha256Stream(out.Body);
  };
  const express = require('express');
  let mount;

  if (kind === 'ceiling-tus-s3') {
    const made = ceilingTusS3({ mount: MOUNT, completed: async (record) => void completed.push(record) });
    return { server: made.server, takeCompleted: () => completed.splice(0), cleanup: made.cleanup };
  }
  if (kind === 'ceiling-tus') {
    mkdirSync(uploads, { recursive: true });
    const server = ceilingTus({ directory: uploads, mount: MOUNT, completed: async (record) => void completed.push(record) });
    return { server, takeCompleted: () => completed.splice(0), cleanup: async () => {} };
  }
  if (kind === 'spool-tus-disk' || kind === 'spool-tus-s3') {
    const { resumable, resumableDiskStore, s3ResumableStore } = require('../../../dist/lib/index.js');
    const store = s3 ? s3ResumableStore({ client: s3.client, bucket: s3.bucket, prefix: s3.prefix }) : resumableDiskStore({ directory: uploads });
    if (s3) s3Keys.add(s3.prefix);
    const files = resumable({
      store,
      onComplete: async (file) => {
        completed.push({ size: file.size, sha256: file.sha256, storage: file.storage, stored: await stored(s3 ? { key: file.key } : { path: file.path }) });
      },
    });
    mount = (app) => app.use(MOUNT, files);
  } else if (kind === 'tus-file' || kind === 'tus-s3') {
    const { Server } = require('@tus/server');
    let datastore;
    if (s3) {
      const { S3Store } = require('@tus/s3-store');
      const env = process.env;
      datastore = new S3Store({
        // The same client configuration as the express-spool side (path-style; checksums only where an
        // operation needs them: radosgw does not know the x-amz-checksum headers newer SDKs send).
        s3ClientConfig: {
          bucket: s3.bucket,
          endpoint: env.BENCH_S3_ENDPOINT,
          region: env.BENCH_S3_REGION || 'us-east-1',
          forcePathStyle: true,
          credentials: { accessKeyId: env.BENCH_S3_ACCESS_KEY_ID, secretAccessKey: env.BENCH_S3_SECRET_ACCESS_KEY },
          requestChecksumCalculation: 'WHEN_REQUIRED',
          responseChecksumValidation: 'WHEN_REQUIRED',
        },
      });
    } else {
      const { FileStore } = require('@tus/file-store');
      datastore = new FileStore({ directory: uploads });
    }
    const server = new Server({
      path: MOUNT,
      datastore,
      onUploadFinish: async (_req, upload) => {
        if (s3) s3Keys.add(upload.id); // the object and `<id>.info`
        completed.push({ size: upload.offset, storage: s3 ? 's3' : 'disk', stored: await stored(s3 ? { key: upload.id } : { path: join(uploads, upload.id) }) });
        return {};
      },
    });
    // @tus/server's README: `uploadApp.all("*", server.handle.bind(server)); app.use("/uploads", uploadApp)`
    // ("*" is "/{*splat}" in Express 5's path syntax).
    const uploadApp = express();
    uploadApp.all('/{*splat}', server.handle.bind(server));
    mount = (app) => app.use(MOUNT, uploadApp);
  } else {
    throw new Error(`unknown resumable target ${kind}`);
  }

  return {
    server: expressApp(mount),
    /** Completed uploads since the last call. */
    takeCompleted: () => completed.splice(0),
    /** Deletes what this process stored in S3 (every object under the recorded prefixes, open multipart uploads). */
    async cleanup() {
      if (!s3) return;
      const { ListObjectsV2Command, DeleteObjectsCommand, ListMultipartUploadsCommand, AbortMultipartUploadCommand } = require('@aws-sdk/client-s3');
      const prefixes = [...s3Keys];
      s3Keys.clear();
      if (s3.prefix) s3Keys.add(s3.prefix);
      for (const Prefix of prefixes) {
        const open = await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket, Prefix }));
        for (const u of open.Uploads ?? []) await s3.client.send(new AbortMultipartUploadCommand({ Bucket: s3.bucket, Key: u.Key, UploadId: u.UploadId }));
        for (;;) {
          const page = await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix }));
          const Objects = (page.Contents ?? []).map((o) => ({ Key: o.Key }));
          if (!Objects.length) break;
          await s3.client.send(new DeleteObjectsCommand({ Bucket: s3.bucket, Delete: { Objects, Quiet: true } }));
        }
      }
    },
  };
}
