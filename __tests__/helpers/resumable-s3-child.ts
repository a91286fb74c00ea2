/**
 * A resumable server on s3ResumableStore in its own process, for __tests__/resumable-s3.test.ts to
 * measure what this process writes to local disk (/proc/<pid>/io write_bytes). Started by the test with
 * a TypeScript require hook; prints `ready <port>` once listening. GET /calibrate writes and fsyncs
 * 1 MiB into $TMPDIR, proving the meter sees a real write.
 */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { resumable, s3ResumableStore } from '../../lib/index';
import { s3TestClient } from '../setup/s3-env';

const [bucket, prefix] = process.argv.slice(-2);
const middleware = resumable({
  store: s3ResumableStore({ client: s3TestClient(), bucket, prefix, partSize: '5MiB' }),
  sweepInterval: 0,
  sha256: true,
});
const app = express();
app.use('/files', middleware);
app.get('/calibrate', (_req, res) => {
  const fd = openSync(join(tmpdir(), 'calibration.bin'), 'w');
  writeSync(fd, Buffer.alloc(1024 * 1024, 1));
  fsyncSync(fd);
  closeSync(fd);
  res.end('written');
});
const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`);
});
