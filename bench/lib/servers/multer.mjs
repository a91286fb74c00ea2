// multer 2.x, the incumbent: `multer-disk` (diskStorage), `multer-memory` (memoryStorage) and
// `multer-s3` (multer-s3 3.x with its defaults). Routes are `upload.single('file')`.

import { require, sha256Buffer, sha256File, state, uploadRoute } from './common.mjs';
import { s3Setup } from './s3.mjs';

export default function multerTarget({ kind, directory }) {
  const multer = require('multer');
  if (kind === 'memory') {
    const upload = multer({ storage: multer.memoryStorage() });
    return { server: uploadRoute(upload.single('file'), async (f) => ({ size: f.size, storage: 'memory', stored: state.verify ? sha256Buffer(f.buffer) : undefined })) };
  }
  if (kind === 'disk') {
    const upload = multer({ storage: multer.diskStorage({ destination: directory }) });
    return { server: uploadRoute(upload.single('file'), async (f) => ({ size: f.size, storage: 'disk', stored: state.verify ? await sha256File(f.path) : undefined })) };
  }
  const multerS3 = require('multer-s3');
  const s3 = s3Setup('multer-s3');
  const upload = multer({ storage: multerS3({ s3: s3.client, bucket: s3.bucket, key: (_req, _file, cb) => cb(null, s3.newKey()) }) });
  return {
    server: uploadRoute(upload.single('file'), async (f) => ({ size: f.size, storage: 's3', stored: await s3.record(f.key) })),
    cleanup: s3.cleanup,
  };
}
