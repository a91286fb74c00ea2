/** jest globalTeardown: stops what global-setup.ts started (each only if it started it). */
import { redisGlobalTeardown } from './redis-global-setup';
import s3GlobalTeardown from './s3-global-teardown';

export default async function globalTeardown(): Promise<void> {
  const results = await Promise.allSettled([s3GlobalTeardown(), redisGlobalTeardown()]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
