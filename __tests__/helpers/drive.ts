import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { Middleware } from '../../lib';

/** A request body fed in exactly the given chunks (one parser write each), without a socket. */
class ChunkedRequest extends Readable {
  headers: Record<string, string>;
  complete = false;
  body?: unknown;
  files?: unknown;
  file?: unknown;
  #chunks: Buffer[];

  constructor(chunks: Buffer[], headers: Record<string, string>) {
    super();
    this.#chunks = [...chunks];
    this.headers = headers;
  }

  override _read(): void {
    const next = this.#chunks.shift();
    // A macrotask between chunks, so every chunk reaches the parser as its own write.
    setImmediate(() => {
      if (next) this.push(next);
      else {
        this.complete = true;
        this.push(null);
      }
    });
  }
}

class FakeResponse extends EventEmitter {
  headersSent = false;
  setHeader(): void {}
}

export interface DriveResult {
  error?: Error & { code?: string; status?: number };
  req: ChunkedRequest;
  /** Ends the response (what Express does after the handler answers): releases budget, removes temporaries. */
  finish(): void;
}

/** Runs a middleware over a body split into `chunks`; rejects if it neither calls next nor fails in `timeoutMs`. */
export function drive(middleware: Middleware, chunks: Buffer[], contentType: string, timeoutMs = 10_000): Promise<DriveResult> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const req = new ChunkedRequest(chunks, { 'content-type': contentType, 'content-length': String(total) });
  const res = new FakeResponse();
  const finish = () => res.emit('close');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`middleware hung (no next() within ${timeoutMs} ms)`)), timeoutMs);
    let calls = 0;
    middleware(req as unknown as IncomingMessage, res as unknown as ServerResponse, (err?: unknown) => {
      if (++calls > 1) return reject(new Error('next() called twice'));
      clearTimeout(timer);
      resolve({ error: err as DriveResult['error'], req, finish });
    });
  });
}

/** Splits `body` at the given cut points (sorted, deduplicated, within bounds). */
export function splitAt(body: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => Math.max(1, Math.min(body.length - 1, c))))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of points) {
    if (point > start && point < body.length) {
      chunks.push(body.subarray(start, point));
      start = point;
    }
  }
  chunks.push(body.subarray(start));
  return chunks.filter((c) => c.length > 0);
}
