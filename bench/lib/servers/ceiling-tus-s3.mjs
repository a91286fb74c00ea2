// `ceiling-tus-s3`: the least a tus 1.0 server on S3 can do, as `ceiling-tus` is on disk: raw node:http,
// uploads known only in this process's memory, one S3 multipart upload per upload, each PATCH body streamed
// as one UploadPart (the bench's PATCHes are 8 MiB, the size of express-spool's parts), the last PATCH
// completing the object. No state objects, no locks, no checks beyond the offset.

import http from 'node:http';
import { fail, require } from './common.mjs';
import { s3Setup } from './s3.mjs';

/** @param {{ mount: string, completed: (record: object) => Promise<void> }} options */
export default function ceilingTusS3({ mount, completed }) {
  const { CreateMultipartUploadCommand, UploadPartCommand, CompleteMultipartUploadCommand } = require('@aws-sdk/client-s3');
  const s3 = s3Setup('ceiling-tus-s3');
  const uploads = new Map(); // id → { key, uploadId, length, offset, parts }
  let next = 0;
  const server = http.createServer(async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === mount) {
        req.resume();
        const key = s3.newKey();
        const { UploadId } = await s3.client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }));
        const id = String(++next);
        uploads.set(id, { key, uploadId: UploadId, length: Number(req.headers['upload-length']), offset: 0, parts: [] });
        res.writeHead(201, { Location: `${mount}/${id}`, 'Tus-Resumable': '1.0.0', 'Content-Length': 0 });
        return void res.end();
      }
      const id = req.method === 'PATCH' && req.url.startsWith(`${mount}/`) ? req.url.slice(mount.length + 1) : '';
      const upload = uploads.get(id);
      if (!upload || Number(req.headers['upload-offset']) !== upload.offset) {
        req.resume();
        res.writeHead(upload ? 409 : 404, { 'Content-Length': 0 });
        return void res.end();
      }
      const length = Number(req.headers['content-length']);
      const PartNumber = upload.parts.length + 1;
      const { ETag } = await s3.client.send(new UploadPartCommand({ Bucket: s3.bucket, Key: upload.key, UploadId: upload.uploadId, PartNumber, Body: req, ContentLength: length }));
      upload.parts.push({ ETag, PartNumber });
      upload.offset += length;
      if (upload.offset === upload.length) {
        uploads.delete(id);
        await s3.client.send(new CompleteMultipartUploadCommand({ Bucket: s3.bucket, Key: upload.key, UploadId: upload.uploadId, MultipartUpload: { Parts: upload.parts } }));
        await completed({ size: upload.offset, storage: 's3', stored: await s3.record(upload.key) });
      }
      res.writeHead(204, { 'Upload-Offset': String(upload.offset), 'Tus-Resumable': '1.0.0' });
      res.end();
    } catch (err) {
      fail(res, err);
    }
  });
  return { server, cleanup: s3.cleanup };
}
