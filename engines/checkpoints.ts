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
  #error: Error | undefined;

  constructor(start: number, every: number, save: (offset: number) => Promise<void>, progress: AppendProgress | undefined, failed: (err: Error) => void) {
    this.#asked = start;
    this.#every = every;
    this.#save = save;
    this.#progress = progress;
    this.#failed = failed;
  }

  /** Bytes up to `offset` are written: record them if a checkpoint or a progress point is due. */
  written(offset: number): void {
    if (offset - this.#asked >= this.#every || this.#progress?.wanted(offset)) void this.record(offset).catch(ignore);
  }

  /** Records `offset` after the state writes before it; rejects with the first failure of any of them. */
  record(offset: number): Promise<void> {
    if (offset !== this.#asked) {
      this.#asked = offset;
      this.#chain = this.#chain.then(async () => {
        if (this.#error) return;
        try {
          await this.#save(offset);
          this.#progress?.persisted(offset);
        } catch (err) {
          this.#error = err instanceof Error ? err : new Error(String(err));
          this.#failed(this.#error);
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
