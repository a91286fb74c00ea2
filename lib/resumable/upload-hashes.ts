import { createHash, type Hash } from 'node:crypto';
import type { Readable } from 'node:stream';

interface Running {
  readonly hash: Hash;
  /** Bytes the hash has seen: valid only while this equals the upload's offset. */
  bytes: number;
}

/** Bound on uploads whose running hash is kept; past it the oldest are dropped (and re-hashed at completion). */
const MAX_RUNNING = 10_000;

/**
 * The sha256 of each unfinished upload, carried across appends in memory. Node's Hash cannot be
 * serialised, so nothing is persisted: after a restart — or an append whose stored bytes differ from the
 * bytes hashed — the hash is dropped and the digest is computed once at completion by reading the upload
 * back from the store (one sequential read).
 */
export class UploadHashes {
  readonly #running = new Map<string, Running>();

  /** The running hash for an append starting at `offset`, or undefined when it cannot be continued. */
  continueAt(id: string, offset: number): Running | undefined {
    const running = this.#running.get(id);
    if (running && running.bytes === offset) return running;
    this.#running.delete(id);
    if (offset !== 0) return undefined;
    const fresh: Running = { hash: createHash('sha256'), bytes: 0 };
    this.#running.set(id, fresh);
    if (this.#running.size > MAX_RUNNING) this.#running.delete(this.#running.keys().next().value!);
    return fresh;
  }

  /**
   * After an append: keeps the hash when it saw exactly the bytes stored (`hashed` = its new count), or
   * puts back `before` (a copy taken before an atomic append that was discarded), or drops it.
   */
  settle(id: string, running: Running, hashed: number, stored: number, before?: Hash): void {
    if (hashed === stored) {
      running.bytes = hashed;
    } else if (before && running.bytes === stored) {
      this.#running.set(id, { hash: before, bytes: stored });
    } else {
      this.#running.delete(id);
    }
  }

  /** Hex digest of `size` bytes: from the running hash when it saw them all, else read back from `read()`. */
  async digest(id: string, size: number, read: () => Readable): Promise<string> {
    const running = this.#running.get(id);
    this.#running.delete(id);
    if (running && running.bytes === size) return running.hash.digest('hex');
    const hash = createHash('sha256');
    for await (const chunk of read()) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  forget(id: string): void {
    this.#running.delete(id);
  }
}
