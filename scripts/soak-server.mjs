// The soak test's server: express-spool with the README defaults; re-reads every stored file through
// file.stream() and hashes it independently, so the client can check bytes end to end.
import { createHash } from 'node:crypto';
import express from 'express';
import { spool, diskEngine } from '../dist/lib/index.js';

const upload = spool({
  threshold: '1MiB',
  memoryBudget: process.env.SOAK_BUDGET ?? '64MiB',
  rollover: diskEngine({ directory: process.env.SOAK_DIR, lifetime: 'temporary' }),
  limits: { fileSize: '128MiB' },
});
const app = express();
app.post('/upload', upload.any(), async (req, res, next) => {
  try {
    const files = [];
    for (const file of req.files) {
      const hash = createHash('sha256');
      for await (const chunk of file.stream()) hash.update(chunk);
      files.push({ size: file.size, storage: file.storage, reread: hash.digest('hex'), streamed: file.sha256 });
    }
    res.json({ files });
  } catch (err) {
    next(err);
  }
});
app.use((err, _req, res, _next) => res.status(err.status ?? 500).json({ code: err.code, message: err.message }));
app.get('/budget', (_req, res) => res.json({ used: upload.memoryBudget.used }));
const server = app.listen(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
server.requestTimeout = 0; // long uploads are bounded by the middleware's idleTimeout instead
