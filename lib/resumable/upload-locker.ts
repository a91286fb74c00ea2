import type { SpoolError } from '../core/errors';

/**
 * One writer per upload. The handler takes the lock around every request that touches an upload (append,
 * HEAD, DELETE, completion). The default, {@link UploadLocks}, works inside one process; `redisLocker()`
 * works across the instances of an app behind a load balancer.
 */
export interface UploadLocker {
  /**
   * Asks the current holder of `id` to let go (its `end` is called), waits up to `timeout` ms, then holds
   * `id`. `end` is how a newer request — here or on another instance — or a lost lease ends this one.
   * Resolves with the release function (safe to call twice); rejects with UPLOAD_LOCKED (423) when the
   * previous holder does not let go in time.
   */
  acquire(id: string, end: (reason: SpoolError) => void, timeout: number): Promise<() => void>;
  /** Whether a request of this process is working on `id` now (sweep leaves it alone). */
  has(id: string): boolean;
}

/**
 * A store's early refusal: called before writes that would make bytes count (a state commit, an S3 part),
 * it rejects with UPLOAD_LOCKED when another holder is known to hold the upload's lock now (another
 * instance took over). A request that lost its lock otherwise is being ended and may still record what it
 * stored (`redisLocker()`'s check lets it). Writes for an upload this process holds no lock for at all
 * (creation) pass. A check cannot stop a writer that passes it and then stalls: a store shared by many
 * instances must also make its commits conditional (`s3ResumableStore` writes each state create-only).
 */
export interface UploadFence {
  check(id: string): Promise<void>;
  /**
   * Optional: runs `work` holding the upload's lock, for a change made outside any request (the sweep, the
   * removal of a completed upload's file) — directly when a request of this process holds the lock (the
   * caller is that request), else by taking it without ending anyone, retrying for up to `wait` ms
   * (default 0), and letting go after. Resolves `{ value }`, or undefined without running `work` when
   * another request (here or on another instance) holds the upload.
   */
  exclusive?<T>(id: string, work: () => Promise<T>, wait?: number): Promise<{ value: T } | undefined>;
}
