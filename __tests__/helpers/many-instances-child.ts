/**
 * One instance of a resumable app on s3ResumableStore + redisLocker, for __tests__/resumable-many.test.ts
 * (several of these run behind one proxy). Started with a TypeScript require hook; argv: port bucket
 * prefix lease. Prints `ready <port>` once listening. With SPOOL_TIMING=1 in the environment it also logs,
 * to stderr, every HEAD's time and every request over a second, and lock waits over 100 ms (where a resume
 * waits).
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
if (process.env.SPOOL_TIMING) {
  const acquire = locker.acquire.bind(locker);
  locker.acquire = async (id, end, timeout) => {
    const t0 = Date.now();
    try {
      return await acquire(id, end, timeout);
    } finally {
      if (Date.now() - t0 > 100) process.stderr.write(`[timing ${process.pid}] acquire ${id.slice(0, 6)} waited ${Date.now() - t0} ms\n`);
    }
  };
  app.use((req, res, next) => {
    const t0 = Date.now();
    res.on('finish', () => {
      if (req.method === 'HEAD' || Date.now() - t0 > 1000) process.stderr.write(`[timing ${process.pid}] ${req.method} ${req.url.slice(7, 13)} ${res.statusCode} ${Date.now() - t0} ms\n`);
    });
    next();
  });
}
app.use('/files', middleware);
const server = app.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as { port: number }).port}\n`);
});
