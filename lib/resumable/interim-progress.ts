import type { IncomingMessage, ServerResponse } from 'node:http';
import { canSendInterim, sendUploadResumptionSupported } from './interim';
import type { AppendProgress } from './upload-store';

/** At most one progress 104 per `bytes` recorded and per `interval` ms (both must have passed). */
export interface ProgressRate {
  readonly bytes: number;
  readonly interval: number;
}

/**
 * The IETF draft's progress interim responses for one request: `104 Upload Resumption Supported` with the
 * `Upload-Offset` the store has recorded durably, while the body streams. The store asks `wanted()` to
 * learn when a durable record would be worth a 104 (the rate), and reports each record with
 * `persisted()`; this sends the 104 when the rate allows, in increasing offsets, and never once `close()`d
 * (the append settled: the final response is next) or once the final response has started.
 */
export class InterimProgress implements AppendProgress {
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #rate: ProgressRate;
  readonly #headers: (offset: number) => Record<string, string>;
  /** The offset last announced (the append's start before the first). */
  #offset: number;
  /** When it was announced (the append's start before the first). */
  #at = Date.now();
  #open = true;

  constructor(req: IncomingMessage, res: ServerResponse, start: number, rate: ProgressRate, headers: (offset: number) => Record<string, string>) {
    this.#req = req;
    this.#res = res;
    this.#offset = start;
    this.#rate = rate;
    this.#headers = headers;
  }

  wanted(offset: number): boolean {
    return (
      this.#open &&
      offset > this.#offset &&
      offset - this.#offset >= this.#rate.bytes &&
      Date.now() - this.#at >= this.#rate.interval &&
      canSendInterim(this.#req, this.#res)
    );
  }

  persisted(offset: number): void {
    if (!this.wanted(offset)) return;
    if (!sendUploadResumptionSupported(this.#req, this.#res, this.#headers(offset))) {
      this.#open = false;
      return;
    }
    this.#offset = offset;
    this.#at = Date.now();
  }

  /** The offset last announced in a 104 (the append's start before the first). */
  get offset(): number {
    return this.#offset;
  }

  /** No 104 after this: the append settled, the final response comes next. */
  close(): void {
    this.#open = false;
  }
}
