/**
 * Part buffers reused across the appends of one S3 resumable store. Allocating a fresh `partSize` buffer
 * per part left the dead ones to the garbage collector, which lets them pile up (external memory is
 * collected late): under many concurrent uploads that garbage was what pushed peak RSS past the README's
 * memory bound. The pool changes nothing in what is counted: a buffer is taken only after its whole
 * size was reserved on the request's memory budget, and given back only once nothing can read it any more
 * (its UploadPart or tail PUT settled — an aborted send included — or it was never sent).
 *
 * Bounds: the pool only ever allocates when it has no free buffer, so the buffers it made are never more
 * than the most that were reserved at once (≤ budget / partSize). Free buffers beyond what the appends
 * still running can use (`queueSize + 1` each) are dropped when an append ends, and all of them when the
 * store has no append running: an idle store holds none.
 */
export class PartPool {
  readonly #size: number;
  readonly #perAppend: number;
  readonly #free: Buffer[] = [];
  /** Buffers handed out and not given back yet (only the pool's own, `partSize` long). */
  #out = new Set<Buffer>();
  #appends = 0;

  constructor(partSize: number, perAppend: number) {
    this.#size = partSize;
    this.#perAppend = perAppend;
  }

  /** Free buffers held now (tests). */
  get free(): number {
    return this.#free.length;
  }

  /** An append starts using the pool; the returned function ends it (idempotent). */
  enter(): () => void {
    this.#appends++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.#appends--;
      this.#trim();
    };
  }

  /**
   * A buffer of `size` bytes whose memory the caller has reserved: a pooled one when `size` is the part
   * size, else a fresh one (a short last part before the declared length ends).
   */
  take(size: number): Buffer {
    if (size !== this.#size) return Buffer.allocUnsafe(size);
    const buffer = this.#free.pop() ?? Buffer.allocUnsafe(size);
    this.#out.add(buffer);
    return buffer;
  }

  /**
   * Gives a buffer back. Only call it once no request can read it any more: a send that was aborted still
   * holds its body until the send settled. Buffers that are not the pool's are left to the GC.
   */
  give(buffer: Buffer | undefined): void {
    if (!buffer || !this.#out.delete(buffer)) return;
    this.#free.push(buffer);
    this.#trim();
  }

  /** Keeps at most what the running appends can use at once; nothing when none runs. */
  #trim(): void {
    const keep = this.#appends * this.#perAppend;
    if (this.#free.length > keep) this.#free.length = keep;
  }
}
