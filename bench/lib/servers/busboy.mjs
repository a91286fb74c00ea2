// `busboy-mem` / `busboy-drop` / `busboy-disk`: bare Express 5 + @fastify/busboy (the parser express-spool
// wraps), no limits, no bookkeeping. `keep: 'memory'`: the file's bytes are collected into one Buffer (the
// floor for any Express middleware that keeps small files in memory); `keep: 'disk'`: the textbook
// hand-written handler, `stream.pipeline(file, fs.createWriteStream(…))` under a random name (no cleanup on
// errors); `keep: 'stream'`: the same with `ceiling-disk`'s write path (a 1 MiB write-stream buffer, the
// parser's chunks written as they are, no copy): the fastest plain parse-and-write handler, the floor for a
// multipart server writing to disk; `keep: 'none'`: the bytes are counted and dropped.

import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { MiB, expressApp, require, sendJson, sha256Buffer, sha256File, state } from './common.mjs';

export default function busboyTarget({ keep, directory }) {
  const { Busboy } = require('@fastify/busboy');
  return expressApp((app) =>
    app.post('/upload', (req, res, next) => {
      let bb;
      try {
        bb = new Busboy({ headers: req.headers });
      } catch (err) {
        return next(err);
      }
      const files = [];
      let open = 1;
      const done = () => {
        if (--open === 0) sendJson(res, 200, { files });
      };
      bb.on('file', (_name, stream) => {
        const rec = { size: 0, storage: keep === 'stream' ? 'disk' : keep };
        files.push(rec);
        open++;
        if (keep === 'disk' || keep === 'stream') return void toDisk(stream, rec, directory, keep === 'stream').then(done, next);
        const chunks = [];
        const h = state.verify && keep === 'none' ? createHash('sha256') : null;
        stream.on('data', (c) => {
          if (keep === 'memory') chunks.push(c);
          else rec.size += c.length;
          h?.update(c);
        });
        stream.on('end', () => {
          if (keep === 'memory') {
            const buffer = Buffer.concat(chunks);
            rec.size = buffer.length;
            if (state.verify) rec.stored = sha256Buffer(buffer);
          } else if (h) rec.stored = h.digest('hex');
          done();
        });
      });
      bb.on('field', () => {});
      bb.on('error', next);
      bb.on('finish', done);
      req.pipe(bb);
    }),
  );
}

/**
 * What a hand-written handler does with @fastify/busboy's file stream: pipeline it into a new file
 * (`large`: through a 1 MiB buffer, as `ceiling-disk` writes).
 */
async function toDisk(stream, rec, directory, large) {
  const path = join(directory, randomUUID());
  const file = createWriteStream(path, large ? { highWaterMark: MiB } : undefined);
  await pipeline(stream, file);
  rec.size = file.bytesWritten;
  if (state.verify) rec.stored = await sha256File(path);
}
