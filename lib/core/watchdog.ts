/** Something the watchdog checks on every tick; `check` returns false once it no longer needs watching. */
export interface Watched {
  check(now: number): boolean;
}

/** One entry of the watch list; `item` is cleared when it stops being watched. */
class Entry {
  item: Watched | undefined;
  prev: Entry | undefined;
  next: Entry | undefined;

  constructor(item: Watched) {
    this.item = item;
  }
}

/**
 * One timer for every in-flight request, instead of a timer each: requests register while their body
 * streams and are checked for stalls and deadlines on each tick. The tick follows the finest granularity
 * asked for; the timer never holds the process open, and stops at the first tick that finds nothing watched.
 *
 * The list is linked through its entries, and an entry's links are cleared when it leaves. A long-lived Set
 * would do the same job, but every rehash leaves its old table behind in old space still pointing at the
 * requests it held: each minor GC then kept finished requests alive (measured with 32 uploads in flight:
 * ~4.5 KB promoted per request, a mark-compact every ~2,000 requests).
 */
class Watchdog {
  #head: Entry | undefined;
  #tail: Entry | undefined;
  #size = 0;
  /** While a tick walks the list, leaving entries are only marked; the tick unlinks them at its end. */
  #ticking = false;
  #timer: NodeJS.Timeout | undefined;
  #interval = Infinity;

  /** Watches `item` with checks at least every `interval` ms. Returns the function that stops watching it. */
  watch(item: Watched, interval: number): () => void {
    const entry = new Entry(item);
    entry.prev = this.#tail;
    if (this.#tail) this.#tail.next = entry;
    else this.#head = entry;
    this.#tail = entry;
    this.#size++;
    const wanted = Math.max(10, Math.floor(interval));
    if (wanted < this.#interval || this.#timer === undefined) this.#start(Math.min(wanted, this.#interval));
    return () => this.#unwatch(entry);
  }

  #unwatch(entry: Entry): void {
    if (entry.item === undefined) return;
    entry.item = undefined;
    this.#size--;
    if (!this.#ticking) this.#unlink(entry);
  }

  #unlink(entry: Entry): void {
    if (entry.prev) entry.prev.next = entry.next;
    else this.#head = entry.next;
    if (entry.next) entry.next.prev = entry.prev;
    else this.#tail = entry.prev;
    entry.prev = entry.next = undefined;
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
    this.#ticking = true;
    try {
      // Items watched during the walk are appended, and checked in this same tick.
      for (let entry = this.#head; entry; entry = entry.next) {
        const item = entry.item;
        if (item && !item.check(now)) this.#unwatch(entry);
      }
    } finally {
      this.#ticking = false;
      for (let entry = this.#head; entry; ) {
        const next = entry.next;
        if (entry.item === undefined) this.#unlink(entry);
        entry = next;
      }
    }
    // Stopped here, not when the last item leaves: small uploads are mostly handled one at a time, so the
    // list empties after nearly every request, and each would create and clear an interval.
    if (this.#size === 0) this.#stop();
  };
}

export const watchdog = new Watchdog();
