import type { AppendProgress } from '../lib/resumable/upload-store';

/**
 * The state writes of one resumable append on disk: one at a time, in order, each naming bytes already
 * written. Asked for after batches are written (every `every` bytes, and at the progress points the handler
 * wants), they do not hold up the writes behind them. The first failure stops the rest and is reported to
 * `failed` (which stops the append) and by `settled()`.
 */
export class Checkpoints {
  readonly #save: (offset: number) => Promise<void>;
  readonly #every: number;
  readonly #progress: AppendProgress | undefined;
  readonly #failed: (err: Error) => void;
  /** The offset of the last state write asked for (written or on its way). */
  #asked: number;
  #chain: Promise<void> = Promise.resolve();
  /** State writes queued or under way. */
  #queued = 0;
  #error: Error | undefined;

  constructor(start: number, every: number, save: (offset: number) => Promise<void>, progress: AppendProgress | undefined, failed: (err: Error) => void) {
    this.#asked = start;
    this.#every = every;
    this.#save = save;
    this.#progress = progress;
    this.#failed = failed;
  }

  /** A state write is queued or under way. */
  get recording(): boolean {
    return this.#queued > 0;
  }

  /** The offset of the last state write asked for (written, or on its way). */
  get asked(): number {
    return this.#asked;
  }

  /**
   * Bytes up to `offset` are written: record them if a checkpoint is due, or if the handler wants a progress
   * point and none is being recorded (it stays wanted until the record is done: asking again on every batch
   * written meanwhile would queue a state write per batch).
   */
  written(offset: number): void {
    if (offset - this.#asked >= this.#every || (!this.recording && this.#progress?.wanted(offset))) void this.record(offset).catch(ignore);
  }

  /** Records `offset` after the state writes before it; rejects with the first failure of any of them. */
  record(offset: number): Promise<void> {
    if (offset !== this.#asked) {
      this.#asked = offset;
      this.#queued++;
      this.#chain = this.#chain.then(async () => {
        try {
          if (this.#error) return;
          await this.#save(offset);
          this.#progress?.persisted(offset);
        } catch (err) {
          this.#error = err instanceof Error ? err : new Error(String(err));
          this.#failed(this.#error);
        } finally {
          this.#queued--;
        }
      });
    }
    return this.settled();
  }

  /** Resolves once no state write is on its way; rejects with the first one that failed. */
  async settled(): Promise<void> {
    await this.#chain;
    if (this.#error) throw this.#error;
  }
}

function ignore(): void {}
