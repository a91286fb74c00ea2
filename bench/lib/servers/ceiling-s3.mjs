// `ceiling-s3`: raw node:http, the whole request body streamed into one S3 object by @aws-sdk/lib-storage's
// Upload (its defaults: 5 MiB parts, 4 in flight; the library multer-s3 runs on), no multipart parsing. The
// limit for receiving to this S3 server from this machine, as `ceiling-disk` is for the local disk.

import http from 'node:http';
import { fail, require, sendJson } from './common.mjs';
import { s3Setup } from './s3.mjs';

export default function ceilingS3() {
  const { Upload } = require('@aws-sdk/lib-storage');
  const s3 = s3Setup('ceiling-s3');
  const server = http.createServer(async (req, res) => {
    const key = s3.newKey();
    try {
      let size = 0;
      req.on('data', (c) => (size += c.length));
      await new Upload({ client: s3.client, params: { Bucket: s3.bucket, Key: key, Body: req } }).done();
      sendJson(res, 200, { files: [{ size, storage: 's3', stored: await s3.record(key) }] });
    } catch (err) {
      fail(res, err);
    }
  });
  return { server, cleanup: s3.cleanup };
}
