/** Something the watchdog checks on every tick; `check` returns false once it no longer needs watching. */
export interface Watched {
  check(now: number): boolean;
}

/**
 * One timer for every in-flight request, instead of a timer each: requests register while their body
 * streams and are checked for stalls and deadlines on each tick. The tick follows the finest granularity
 * asked for, and the timer stops (and never holds the process open) when nothing is watched.
 */
class Watchdog {
  readonly #watched = new Set<Watched>();
  #timer: NodeJS.Timeout | undefined;
  #interval = Infinity;

  /** Watches `item` with checks at least every `interval` ms. Returns the function that stops watching it. */
  watch(item: Watched, interval: number): () => void {
    this.#watched.add(item);
    const wanted = Math.max(10, Math.floor(interval));
    if (wanted < this.#interval || this.#timer === undefined) this.#start(Math.min(wanted, this.#interval));
    return () => this.#unwatch(item);
  }

  #unwatch(item: Watched): void {
    this.#watched.delete(item);
    if (this.#watched.size === 0) this.#stop();
  }

  #start(interval: number): void {
    clearInterval(this.#timer);
    this.#interval = interval;
    this.#timer = setInterval(this.#tick, interval);
    this.#timer.unref();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#interval = Infinity;
  }

  #tick = (): void => {
    const now = Date.now();
    for (const item of this.#watched) {
      if (!item.check(now)) this.#watched.delete(item);
    }
    if (this.#watched.size === 0) this.#stop();
  };
}

export const watchdog = new Watchdog();
