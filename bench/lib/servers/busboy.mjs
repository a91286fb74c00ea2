// `busboy-mem` / `busboy-drop`: bare Express 5 + @fastify/busboy (the parser express-spool wraps), no
// limits, no bookkeeping. `keep`: the file's bytes are collected into one Buffer (the floor for any
// Express middleware that keeps small files in memory); otherwise they are counted and dropped.

import { createHash } from 'node:crypto';
import { expressApp, require, sendJson, sha256Buffer, state } from './common.mjs';

export default function busboyTarget({ keep }) {
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
        const rec = { size: 0, storage: keep ? 'memory' : 'none' };
        files.push(rec);
        open++;
        const chunks = [];
        const h = state.verify && !keep ? createHash('sha256') : null;
        stream.on('data', (c) => {
          if (keep) chunks.push(c);
          else rec.size += c.length;
          h?.update(c);
        });
        stream.on('end', () => {
          if (keep) {
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
