/**
 * jest globalSetup: provides what the tests need beyond node_modules, one module per job. Both install
 * what is missing (with apt-get) on first use, so `npm ci && npm test` works on a fresh machine.
 */
import browserSetup from './browser';
import redisGlobalSetup from './redis-global-setup';
import s3GlobalSetup from './s3-global-setup';

export default async function globalSetup(): Promise<void> {
  browserSetup(); // Chromium for the demo's end-to-end test; never throws (that test fails instead)
  await s3GlobalSetup(); // an S3 server; throws when there is none (the S3 tests must not be skipped)
  await redisGlobalSetup(); // a Redis server for the many-instances lock; throws likewise
}
