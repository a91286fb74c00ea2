import * as crypto from 'node:crypto';

/** `crypto.hash()` (Node ≥ 20.12): a one-shot digest, without a Hash object. */
const oneShot = (crypto as { hash?: (algorithm: string, data: Buffer, encoding: 'hex') => string }).hash;

/**
 * sha256 fed chunk by chunk, as a file streams. A file that arrives in one chunk (most small files do) is
 * hashed in one call at its end, with no Hash object: creating one per file and collecting it later cost
 * about a third of what hashing a 16 KiB file does (bench/README.md, "Session 15").
 *
 * The first chunk is held, not copied, until the next one or the end: as with any stream, a chunk must not
 * change once handed on (the parser's never do; the memory engine keeps them the same way).
 */
export class StreamingSha256 {
  #hash: crypto.Hash | undefined;
  /** The only chunk so far, not hashed yet. */
  #first: Buffer | undefined;

  update(chunk: Buffer): void {
    if (this.#hash) {
      this.#hash.update(chunk);
    } else if (this.#first === undefined && oneShot) {
      this.#first = chunk;
    } else {
      this.#hash = crypto.createHash('sha256');
      if (this.#first) this.#hash.update(this.#first);
      this.#first = undefined;
      this.#hash.update(chunk);
    }
  }

  /** Whether `chunk` is held un-hashed (the first one, until the next or the end): it must not be freed yet. */
  holds(chunk: Buffer): boolean {
    return this.#first === chunk;
  }

  /** The hex digest of every byte given (once: the hash is finished). */
  hex(): string {
    if (this.#hash) return this.#hash.digest('hex');
    const first = this.#first ?? Buffer.alloc(0);
    this.#first = undefined;
    return oneShot ? oneShot('sha256', first, 'hex') : crypto.createHash('sha256').update(first).digest('hex');
  }
}
