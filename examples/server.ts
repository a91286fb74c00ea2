// Minimal demo: POST files to /upload and get back what was stored where.
import express from 'express';
import { diskEngine, spool, SpoolError, type UploadedFile } from '../lib';

const port = Number(process.env.PORT ?? 3000);
const upload = spool({
  threshold: '1MiB',
  rollover: diskEngine({ directory: process.env.UPLOAD_DIR ?? './uploads' }),
  memoryBudget: '64MiB',
});

const app = express();
app.post('/upload', upload.any(), (req, res) => {
  // Drop in-memory buffers from the answer; everything else describes where each file went.
  const files = (req.files as UploadedFile[]).map(({ buffer, ...file }) => file);
  res.status(201).json({ body: req.body, files });
});
app.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
  if (!(err instanceof SpoolError)) return next(err);
  res.status(err.status).json({ error: { code: err.code, message: err.message } });
});
app.listen(port, () => console.log(`express-spool demo on http://localhost:${port} (POST multipart to /upload)`));
