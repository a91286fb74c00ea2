/** Chunks below this many bytes are copied together rather than kept one by one… */
const SMALL_CHUNK = 4 * 1024;
/**
 * …once the list holds this many: a field or a small file of a few chunks is kept as it came, with no block
 * allocated (a 16 KiB block per text field cost small-file requests ~25% more CPU in the benchmark).
 */
const KEPT_AS_IS = 8;
/** Bytes per block the small chunks are copied into. */
const BLOCK = 16 * 1024;

/**
 * Bytes received in pieces, kept in order for later (a file held in memory, a text field). Chunks of 4 KiB
 * and more are kept as they are, without a copy, and so are the first few; past those, smaller ones are
 * copied into 16 KiB blocks. Why: each kept Buffer costs an object (~100–200 bytes of heap) and pins the
 * whole socket read it was sliced from, so a body sent in tiny pieces (1-byte HTTP chunks) would cost
 * hundreds of times its size while the budget counts its bytes. Copied, it costs its bytes plus at most
 * eight chunks kept as sent and one part-filled block.
 */
export class ByteList {
  #chunks: Buffer[] = [];
  #block: Buffer | undefined;
  /** Where the block's bytes not yet in #chunks begin, and where its free room begins. */
  #blockStart = 0;
  #blockEnd = 0;
  #size = 0;

  /** Bytes held. */
  get size(): number {
    return this.#size;
  }

  push(chunk: Buffer): void {
    this.#size += chunk.length;
    if (chunk.length >= SMALL_CHUNK || (this.#block === undefined && this.#chunks.length < KEPT_AS_IS)) {
      this.#seal();
      this.#chunks.push(chunk);
      return;
    }
    let from = 0;
    while (from < chunk.length) {
      if (this.#block === undefined || this.#blockEnd === this.#block.length) {
        this.#seal();
        this.#block = Buffer.allocUnsafeSlow(BLOCK);
        this.#blockStart = this.#blockEnd = 0;
      }
      const copied = chunk.copy(this.#block, this.#blockEnd, from);
      this.#blockEnd += copied;
      from += copied;
    }
  }

  /**
   * The bytes as chunks, in order; the list is empty afterwards. The last block's bytes are copied to a
   * buffer of their own size, so its free room is not kept with them.
   */
  take(): Buffer[] {
    if (this.#block !== undefined && this.#blockEnd > this.#blockStart) {
      this.#chunks.push(Buffer.from(this.#block.subarray(this.#blockStart, this.#blockEnd)));
    }
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#block = undefined;
    this.#blockStart = this.#blockEnd = 0;
    this.#size = 0;
    return chunks;
  }

  /** Moves the block's bytes so far into the list (as a view: the block stays shared by its views). */
  #seal(): void {
    if (this.#block === undefined || this.#blockEnd === this.#blockStart) return;
    this.#chunks.push(this.#block.subarray(this.#blockStart, this.#blockEnd));
    this.#blockStart = this.#blockEnd;
  }
}
