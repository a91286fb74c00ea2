import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { SpoolError } from '../lib/core/errors';
import { describe, durationOption } from '../lib/core/sizes';
import { UploadLocks } from '../lib/resumable/upload-lock';
import type { UploadFence, UploadLocker } from '../lib/resumable/upload-locker';

export interface RedisLockerOptions {
  /** An ioredis client (the app's); or give `url` and the locker makes its own. */
  client?: Redis;
  /** `redis://host:port/db`, used when no `client` is given (ioredis is then loaded on first use). */
  url?: string;
  /** Prefix of every key and channel. @default 'spool:' */
  prefix?: string;
  /**
   * Lease (ms) of a lock: renewed every third of it while its request runs, so only a dead or frozen
   * instance lets it lapse, and then another instance takes the upload over after at most this long. Not
   * a safety margin with `s3ResumableStore` (a writer that outlives its lease cannot make a write count),
   * only how long a crashed instance's uploads wait: shorter takes over sooner, at the price of renewals.
   * @default 10000
   */
  lease?: number;
  /** How often (ms) a request waiting for another instance to let go retries. @default 25 */
  retryInterval?: number;
}

/** What `redisLocker()` returns: a lock for `resumable({ locker })` and a fence for `s3ResumableStore({ fence })`. */
export interface RedisLocker extends UploadLocker, UploadFence {
  /** Unsubscribes and closes the connections the locker opened (not the app's `client`). */
  close(): Promise<void>;
}

interface Held {
  readonly token: string;
  readonly end: (reason: SpoolError) => void;
  readonly timer: NodeJS.Timeout;
  lost: boolean;
  /** Redis answered that another holder has the key: this request's writes are refused (see `check`). */
  takenOver: boolean;
  /** When the last renewal that succeeded was sent (or the lock taken): the lease runs at least until then + lease. */
  renewedAt: number;
  /** Ends the request a margin before the lease, as last confirmed, would lapse (see `#watch`). */
  watch: NodeJS.Timeout | undefined;
  released: boolean;
  /** A request elsewhere asked for the upload: announce the release, so that it need not wait for its next retry. */
  asked: boolean;
}

const KNOWN = new Set(['client', 'url', 'prefix', 'lease', 'retryInterval']);

// KEYS: lock, fencing counter. ARGV: lease ms, a random nonce. Takes a free lock with the next fencing token
// (the counter's next value and the nonce: a counter lost to a failover or eviction starts again at 1, and
// a stale holder's token must still not match a new one); 0 when held.
const ACQUIRE = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[2]
redis.call('PEXPIRE', KEYS[2], 2592000000)
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token`;
// KEYS: lock. ARGV: token, lease ms. Renews our lease (1); 0 when the lock is gone, -1 when another holder has it.
const RENEW = `local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return -1 end
return 0`;
// KEYS: lock. ARGV: token. Deletes the lock only while it is ours.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/**
 * One writer per upload across instances. A lock is a Redis key holding a fencing token (INCR of a
 * per-upload counter, so every acquisition has a new one) with a lease renewed while its request runs.
 * A request that finds the upload held publishes a release message; the holder, on whatever instance,
 * ends its request (what it stored is recorded first, as with a newer request in one process) and
 * deletes the key and announces it (`released`), and the waiting request takes the lock at once (or at
 * its next retry). A holder that died lets its lease lapse. `check(id)` is an early refusal for stores:
 * it renews the lease and refuses once Redis says another holder has the key, so a writer that was taken
 * over stops at its next write. What makes a late write harmless is the store's own
 * create-only commits (`s3ResumableStore`), not this check: a writer can pass it and stall before its
 * write for any time. `exclusive()` lets `sweep()` and removals leave alone uploads another instance holds.
 * @example
 * const locker = redisLocker({ url: process.env.REDIS_URL });
 * app.use('/files', resumable({ locker, store: s3ResumableStore({ client, bucket, fence: locker }) }));
 */
export function redisLocker(options: RedisLockerOptions): RedisLocker {
  if (typeof options !== 'object' || options === null) throw new TypeError(`Expected redisLocker options to be an object, got ${describe(options)}`);
  for (const key of Object.keys(options)) if (!KNOWN.has(key)) throw new TypeError(`Unknown redisLocker option \`${key}\``);
  const { client, url, prefix = 'spool:' } = options;
  if (client !== undefined && typeof client?.eval !== 'function') throw new TypeError(`Expected \`client\` to be an ioredis client, got ${describe(client)}`);
  if (client === undefined && typeof url !== 'string') throw new TypeError(`Expected \`client\` or \`url\`, got ${describe(url)}`);
  if (typeof prefix !== 'string') throw new TypeError(`Expected \`prefix\` to be a string, got ${describe(prefix)}`);
  const lease = durationOption('lease', options.lease, 10_000);
  if (lease < 100) throw new TypeError(`Expected \`lease\` to be at least 100, got ${lease}`);
  const retryInterval = durationOption('retryInterval', options.retryInterval, 25);
  // Loaded here, not at import, so apps without Redis need not install ioredis.
  const redis = client ?? new (require('ioredis') as typeof import('ioredis')).Redis(url!);
  return new Locker(redis, client === undefined, prefix, lease, Math.max(1, retryInterval));
}

/**
 * `work`, or UPLOAD_LOCKED once `ms` have passed without an answer: a Redis behind a silent network (no
 * reset, no close) never answers, and ioredis has no command timeout by default.
 */
function answered<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    // After one more turn of the loop: when the loop was blocked, the timers run before the socket is read,
    // and an answer that came in meanwhile must win over the timer (setImmediate runs after that read).
    const fail = () => setImmediate(() => reject(new SpoolError('UPLOAD_LOCKED', `Redis did not answer within ${ms} ms`)));
    timer = setTimeout(fail, ms).unref();
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

class Locker implements RedisLocker {
  readonly #redis: Redis;
  readonly #owned: boolean;
  readonly #subscriber: Redis;
  /** The subscription to the release channels; retried by the next request if it failed (Redis was down at start). */
  #subscribed: Promise<unknown> | undefined;
  readonly #prefix: string;
  readonly #lease: number;
  readonly #retry: number;
  /** One request at a time per upload in this process (the newest wins), before Redis is asked. */
  readonly #local = new UploadLocks();
  /** Uploads whose Redis lock this process holds. */
  readonly #held = new Map<string, Held>();
  /** Releases still on their way to Redis: the next request here for the upload waits for them. */
  readonly #releasing = new Map<string, Promise<unknown>>();
  /** Requests here waiting for another instance to let go, woken by its `released` message. */
  readonly #waiting = new Map<string, Set<() => void>>();

  constructor(redis: Redis, owned: boolean, prefix: string, lease: number, retry: number) {
    this.#redis = redis;
    this.#owned = owned;
    this.#prefix = prefix;
    this.#lease = lease;
    this.#retry = retry;
    // A client the locker made is its own to watch: a connection error (or ioredis's complaint about a reply
    // that came after its command was flushed) is not the app's to catch, and an 'error' event with no
    // listener would take the process down. Calls made meanwhile fail on their own (each request's 423).
    if (owned) redis.on('error', () => undefined);
    this.#subscriber = redis.duplicate();
    // Its own connection: a Redis that is away shows as failed calls (each request's 423), not as errors here.
    this.#subscriber.on('error', () => undefined);
    this.#subscriber.on('message', (channel: string, id: string) => {
      if (channel === `${prefix}released`) {
        for (const wake of this.#waiting.get(id) ?? []) wake();
        return;
      }
      const held = this.#held.get(id);
      if (!held) return;
      held.asked = true;
      held.end(new SpoolError('UPLOAD_LOCKED', 'A newer request for this upload (on another instance) ended this one'));
    });
    void this.#ready().catch(() => undefined); // reported by the first acquire
  }

  /** Subscribed to the release channels (ioredis subscribes again by itself after a reconnect). */
  #ready(): Promise<unknown> {
    if (this.#subscribed) return this.#subscribed;
    const subscribing = this.#subscriber.subscribe(`${this.#prefix}release`, `${this.#prefix}released`);
    subscribing.catch(() => {
      if (this.#subscribed === subscribing) this.#subscribed = undefined;
    });
    return (this.#subscribed = subscribing);
  }

  /**
   * How long one Redis call may take: past the time left to wait, but at least a third of the lease
   * (a renewal's period), so that a lockTimeout of 0 still gets its one answer.
   */
  #callTimeout(deadline: number): number {
    return Math.max(deadline - Date.now(), this.#period());
  }

  /** A third of the lease: how often a lease is renewed, and how long one renewal may take. */
  #period(): number {
    return Math.max(1, Math.floor(this.#lease / 3));
  }

  has(id: string): boolean {
    return this.#local.has(id);
  }

  async acquire(id: string, end: (reason: SpoolError) => void, timeout: number): Promise<() => void> {
    const deadline = Date.now() + timeout;
    // A newer request here ends this one while it still waits for another instance: it stops waiting then,
    // so that the newer one does not wait behind it.
    let superseded: SpoolError | undefined;
    const releaseLocal = await this.#local.acquire(id, (reason) => end((superseded ??= reason)), timeout);
    try {
      await this.#prepare(id, deadline);
      let taken: { token: string; sent: number } | undefined;
      for (let asked = false; ; ) {
        if (superseded) throw superseded;
        taken = await this.#take(id, deadline);
        if (taken) break;
        // Held elsewhere (or by a request here that is letting go): ask once, then wait for the key to go.
        if (!asked) await answered(this.#redis.publish(`${this.#prefix}release`, id), this.#callTimeout(deadline));
        asked = true;
        if (Date.now() >= deadline || superseded) throw superseded ?? new SpoolError('UPLOAD_LOCKED');
        await this.#released(id, Math.min(this.#retry, deadline - Date.now()));
      }
      return this.#hold(id, taken, end, releaseLocal);
    } catch (err) {
      releaseLocal();
      throw err instanceof SpoolError ? err : new SpoolError('UPLOAD_LOCKED', 'The upload lock could not be taken', { cause: err });
    }
  }

  async exclusive<T>(id: string, work: () => Promise<T>, wait = 0): Promise<{ value: T } | undefined> {
    if (this.#local.has(id)) {
      // A request here holds it: the caller is that request (DELETE), or it is busy (then leave it alone).
      const held = this.#held.get(id);
      if (!held) return undefined;
      // The caller's lease lapsed (Redis unreachable, the instance frozen): another instance may own it now.
      if (held.lost) throw new SpoolError('UPLOAD_LOCKED', 'This request lost the upload lock (lease expired or another instance took over)');
      return { value: await work() };
    }
    const releaseLocal = await this.#local.acquire(id, () => undefined, 0);
    let release: (() => void) | undefined;
    try {
      const deadline = Date.now() + wait;
      try {
        await this.#prepare(id, deadline);
        for (;;) {
          const taken = await this.#take(id, deadline);
          if (taken) {
            release = this.#hold(id, taken, () => undefined, releaseLocal);
            break;
          }
          if (Date.now() >= deadline) return undefined; // another instance is working on it
          await this.#released(id, Math.min(this.#retry, deadline - Date.now()));
        }
      } catch (err) {
        throw err instanceof SpoolError ? err : new SpoolError('UPLOAD_LOCKED', 'The upload lock could not be taken', { cause: err });
      }
      return { value: await work() };
    } finally {
      if (release) release();
      else releaseLocal();
    }
  }

  /** Subscribed, and this process's last release of `id` sent: each bounded by the time left. */
  async #prepare(id: string, deadline: number): Promise<void> {
    await answered(this.#ready(), this.#callTimeout(deadline));
    const releasing = this.#releasing.get(id);
    if (releasing) await answered(releasing, this.#callTimeout(deadline));
  }

  /**
   * One attempt at the lock: its token and when it was asked for (the lease runs from then), or undefined
   * while another holder has it. An answer that comes too late to leave the request a useful part of the
   * lease is let go and counts as not taken: the lease may have lapsed already and another instance taken it.
   */
  async #take(id: string, deadline: number): Promise<{ token: string; sent: number } | undefined> {
    const sent = Date.now();
    const taking = this.#redis.eval(ACQUIRE, 2, this.#lockKey(id), `${this.#prefix}fence:${id}`, this.#lease, randomBytes(8).toString('hex'));
    try {
      const token = await answered(taking, this.#callTimeout(deadline));
      if (typeof token !== 'string') return undefined;
      // Half the lease at least must be left (a slower Redis could not keep the lease confirmed anyway).
      if (Date.now() - sent < this.#lease / 2) return { token, sent };
      void this.#redis.eval(RELEASE, 1, this.#lockKey(id), token).catch(() => undefined);
      return undefined;
    } catch (err) {
      // Given up on, it may still run once Redis answers again: a lock taken then has no holder, so it
      // is let go at once rather than blocking the upload for a whole lease.
      taking.then(
        (token) => typeof token === 'string' && this.#redis.eval(RELEASE, 1, this.#lockKey(id), token).catch(() => undefined),
        () => undefined,
      );
      throw err;
    }
  }

  /**
   * Refuses a write only when Redis answers that another holder has the upload now. A slow or silent Redis
   * (no answer within a third of the lease) lets it go on: `#watch` ends the request before its lease can
   * lapse. A request whose lock was lost otherwise (the lease not confirmed in time, the key gone with a
   * flush or a failover, `close()`) is being ended, and what it stored is still recorded: nobody else
   * holds the upload, and the store's commits are create-only, so a late one cannot make a byte wrong.
   */
  async check(id: string): Promise<void> {
    const held = this.#held.get(id);
    if (!held) return;
    const asking: Promise<unknown> = held.lost ? this.#takenOver(id, held) : this.#renew(id, held);
    if (!held.takenOver) await answered(asking, this.#period()).catch(() => undefined);
    if (held.takenOver) throw new SpoolError('UPLOAD_LOCKED', 'Another request holds this upload now (this one lost its lock)');
  }

  /** After a loss: asks Redis whether another holder has the key (and remembers it). */
  async #takenOver(id: string, held: Held): Promise<void> {
    const holder = await this.#redis.get(this.#lockKey(id));
    if (typeof holder === 'string' && holder !== held.token) held.takenOver = true;
  }

  async close(): Promise<void> {
    // Nothing renews the leases of requests still running after this: they end now, before those leases lapse.
    for (const held of this.#held.values()) this.#lose(held, 'The upload lock\'s locker was closed');
    await Promise.allSettled([...this.#releasing.values()]);
    this.#subscriber.disconnect();
    // QUIT waits for Redis's answer: a silent Redis gets a second, then the connection is dropped.
    if (this.#owned) await answered(this.#redis.quit(), 1000).catch(() => this.#redis.disconnect());
  }

  #hold(id: string, { token, sent }: { token: string; sent: number }, end: (reason: SpoolError) => void, releaseLocal: () => void): () => void {
    const timer = setInterval(() => void this.#renew(id, held), this.#period());
    timer.unref();
    const held: Held = { token, end, timer, lost: false, takenOver: false, asked: false, renewedAt: sent, watch: undefined, released: false };
    this.#held.set(id, held);
    this.#watch(held);
    // The lease runs from when the lock was asked for: an answer that took a period already renews now.
    if (Date.now() - sent >= this.#period()) void this.#renew(id, held);
    return () => {
      if (held.released) return;
      held.released = true;
      clearInterval(timer);
      clearTimeout(held.watch);
      if (this.#held.get(id) === held) this.#held.delete(id);
      // Bounded by the lease: past it the key lapses by itself, and the next request here need not wait.
      const deleting = answered(this.#redis.eval(RELEASE, 1, this.#lockKey(id), token), this.#lease)
        .then((deleted) => (Number(deleted) === 1 && held.asked ? this.#redis.publish(`${this.#prefix}released`, id) : undefined))
        .catch(() => undefined) // the lease lapses by itself; nothing is lost
        .finally(() => {
          if (this.#releasing.get(id) === deleting) this.#releasing.delete(id);
        });
      this.#releasing.set(id, deleting);
      releaseLocal();
    };
  }

  /** Resolves after `timeout` ms, or sooner when an instance announces it let `id` go. */
  #released(id: string, timeout: number): Promise<void> {
    return new Promise((resolve) => {
      const waiting = this.#waiting.get(id) ?? new Set<() => void>();
      this.#waiting.set(id, waiting);
      const wake = () => {
        clearTimeout(timer);
        waiting.delete(wake);
        if (waiting.size === 0 && this.#waiting.get(id) === waiting) this.#waiting.delete(id);
        resolve();
      };
      const timer = setTimeout(wake, timeout);
      waiting.add(wake);
    });
  }

  /**
   * Renews the lease; false when Redis fails it, and false with the request ended once the key no longer
   * holds our token. Not bounded here: a late confirmation still counts (it extends the lease from when it
   * was sent), and `#watch` ends the request if none comes in time.
   */
  async #renew(id: string, held: Held): Promise<boolean> {
    if (held.lost) return false;
    const sent = Date.now();
    let ours: boolean;
    try {
      const answer = Number(await this.#redis.eval(RENEW, 1, this.#lockKey(id), held.token, this.#lease));
      ours = answer === 1;
      if (answer === -1) held.takenOver = true;
    } catch {
      return false;
    }
    if (held.lost || held.released) return ours && !held.lost;
    if (!ours) this.#lose(held, 'The upload lock was lost (lease expired or another instance took over)');
    else if (sent > held.renewedAt) {
      held.renewedAt = sent;
      this.#watch(held);
    }
    return ours;
  }

  /**
   * How long before the lease (as last confirmed) lapses a request whose renewals Redis has not confirmed
   * is ended: the time it has to record what it stored while the upload is still its own (a disk store has
   * no fence: another instance may take the upload once the lease lapses).
   */
  #margin(): number {
    return Math.max(1, Math.floor(this.#lease / 6));
  }

  /** (Re)arms the end of a lease that Redis stops confirming. */
  #watch(held: Held): void {
    clearTimeout(held.watch);
    const endAt = held.renewedAt + this.#lease - this.#margin();
    // A loop blocked past the moment may hold a renewal's answer unread: read it first (setImmediate).
    held.watch = setTimeout(() => setImmediate(() => {
      if (held.lost || held.released) return;
      if (Date.now() >= held.renewedAt + this.#lease - this.#margin()) this.#lose(held, 'Redis did not confirm the upload lock\'s lease in time: ended before it could lapse');
      else this.#watch(held);
    }), Math.max(0, endAt - Date.now())).unref();
  }

  #lose(held: Held, message: string): void {
    if (held.lost) return;
    held.lost = true;
    clearInterval(held.timer);
    clearTimeout(held.watch);
    held.end(new SpoolError('UPLOAD_LOCKED', message));
  }

  #lockKey(id: string): string {
    return `${this.#prefix}lock:${id}`;
  }
}
