/**
 * One instance of a resumable app on s3ResumableStore + redisLocker, for __tests__/resumable-many.test.ts
 * (several of these run behind one proxy). Started with a TypeScript require hook; argv: port bucket
 * prefix lease. Prints `ready <port>` once listening.
 */
import express from 'express';
import { redisLocker, resumable, s3ResumableStore } from '../../lib/index';
import { s3TestClient } from '../setup/s3-env';

const [port, bucket, prefix, lease] = process.argv.slice(-4);
const locker = redisLocker({ url: process.env.REDIS_URL!, prefix: `${prefix}:`, lease: Number(lease) });
const middleware = resumable({
  store: s3ResumableStore({ client: s3TestClient(), bucket, prefix, partSize: '5MiB', fence: locker }),
  locker,
  memoryBudget: '160MiB',
  sweepInterval: 0,
  sha256: true,
});
const app = express();
app.use('/files', middleware);
const server = app.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`);
});
