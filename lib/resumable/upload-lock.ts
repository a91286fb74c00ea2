import { SpoolError } from '../core/errors';

interface Holder {
  readonly end: (reason: SpoolError) => void;
  readonly settled: Promise<void>;
}

/**
 * One request at a time per upload (in this process). A new request for an upload ends the one holding
 * it — a client that resumes has given up on its previous request, even when the server has not noticed
 * yet (the IETF draft's recommended behaviour) — and waits, bounded, for it to let go: the old request
 * records what it stored before the new one reads the offset. The newest request always wins.
 */
export class UploadLocks {
  readonly #held = new Map<string, Holder>();

  /** Whether a request is working on `id` now (sweep leaves it alone). */
  has(id: string): boolean {
    return this.#held.has(id);
  }

  /**
   * Ends the current holder of `id`, waits up to `timeout` ms for it to release, then holds `id`.
   * `end` is how a newer request ends this one. Resolves with the release function (safe to call twice);
   * rejects with UPLOAD_LOCKED (423) when the previous holder does not let go in time.
   */
  async acquire(id: string, end: (reason: SpoolError) => void, timeout: number): Promise<() => void> {
    for (let current = this.#held.get(id); current; current = this.#held.get(id)) {
      current.end(new SpoolError('UPLOAD_LOCKED', 'A newer request for this upload ended this one'));
      if (!(await within(current.settled, timeout))) throw new SpoolError('UPLOAD_LOCKED');
    }
    let release!: () => void;
    const holder: Holder = { end, settled: new Promise<void>((resolve) => (release = resolve)) };
    this.#held.set(id, holder);
    return () => {
      if (this.#held.get(id) === holder) this.#held.delete(id);
      release();
    };
  }
}

async function within(promise: Promise<void>, timeout: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, timeout, false)));
  try {
    return await Promise.race([promise.then(() => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}
