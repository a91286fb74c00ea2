// `ceiling-tus`: the least a tus 1.0 server on disk can do, as `ceiling-disk` is for multipart: raw node:http,
// uploads known only in this process's memory (no info files, no locks, no checks beyond the offset), each
// PATCH body piped into the upload's file at its offset through a write stream with a 1 MiB buffer. The limit
// for receiving resumable uploads to disk on this machine, beside which express-spool's and @tus/server's
// stores are judged (bench/README.md, "Resumable").

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { closeSync, createWriteStream, openSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { MiB, fail, sha256File, state } from './common.mjs';

/** @param {{ directory: string, mount: string, completed: (record: object) => Promise<void> }} options */
export default function ceilingTus({ directory, mount, completed }) {
  const uploads = new Map(); // id → { path, length, offset }
  return http.createServer(async (req, res) => {
    try {
      if (req.method === 'POST' && req.url === mount) {
        const id = randomUUID();
        const path = join(directory, id);
        closeSync(openSync(path, 'wx'));
        uploads.set(id, { path, length: Number(req.headers['upload-length']), offset: 0 });
        req.resume();
        res.writeHead(201, { Location: `${mount}/${id}`, 'Tus-Resumable': '1.0.0', 'Content-Length': 0 });
        return void res.end();
      }
      const upload = req.method === 'PATCH' && req.url.startsWith(`${mount}/`) ? uploads.get(req.url.slice(mount.length + 1)) : undefined;
      if (!upload || Number(req.headers['upload-offset']) !== upload.offset) {
        req.resume();
        res.writeHead(upload ? 409 : 404, { 'Content-Length': 0 });
        return void res.end();
      }
      const out = createWriteStream(upload.path, { flags: 'r+', start: upload.offset, highWaterMark: MiB });
      await pipeline(req, out);
      upload.offset += out.bytesWritten;
      if (upload.offset === upload.length) {
        uploads.delete(req.url.slice(mount.length + 1));
        await completed({ size: upload.offset, storage: 'disk', stored: state.verify ? await sha256File(upload.path) : undefined });
      }
      res.writeHead(204, { 'Upload-Offset': String(upload.offset), 'Tus-Resumable': '1.0.0' });
      res.end();
    } catch (err) {
      fail(res, err);
    }
  });
}
