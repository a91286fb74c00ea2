import { Worker } from 'node:worker_threads';

/**
 * One background thread that computes sha256 digests for large files, so hashing (≈0.55 s of CPU per GB)
 * runs beside parsing and writing instead of on the event loop. Started on first use, and ref'd only while
 * some file is being hashed, so an idle worker never keeps the process alive; messages for one file are
 * handled in order, and
 * every batch is acknowledged so a file never has more than MAX_IN_FLIGHT bytes queued (backpressure:
 * a slow hash must not turn into unbounded memory).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
// Transferred batches are freed only when this thread collects garbage, which V8 does lazily; collect
// every 8 MiB so the worker holds a bounded amount of upload data (it would otherwise grow by 100+ MiB).
// The flag is on only while one fresh context fetches gc(), so the app's own contexts are unaffected.
const v8 = require('node:v8');
v8.setFlagsFromString('--expose-gc');
const collect = globalThis.gc ?? require('node:vm').runInNewContext('gc');
v8.setFlagsFromString('--no-expose-gc');
let sinceGc = 0;
const hashes = new Map();
parentPort.on('message', ({ id, data, end, cancel }) => {
  if (cancel) return void hashes.delete(id);
  let hash = hashes.get(id);
  if (!hash) hashes.set(id, (hash = createHash('sha256')));
  if (data) {
    hash.update(data);
    parentPort.postMessage({ id, acked: data.byteLength });
    if ((sinceGc += data.byteLength) >= 8 * 1024 * 1024) {
      sinceGc = 0;
      collect({ type: 'minor' });
    }
  }
  if (end) {
    hashes.delete(id);
    parentPort.postMessage({ id, digest: hash.digest('hex') });
  }
});
`;

/** Bytes one file may have queued at the worker before its source is paused. */
export const MAX_IN_FLIGHT = 512 * 1024;

interface Reply {
  id: number;
  acked?: number;
  digest?: string;
}

let worker: Worker | undefined;
let nextId = 1;
const active = new Map<number, OffThreadHash>();

function getWorker(): Worker {
  if (worker) return worker;
  const started = new Worker(WORKER_SOURCE, { eval: true });
  started.on('message', (reply: Reply) => active.get(reply.id)?.receive(reply));
  started.on('error', (err) => failAll(err));
  started.on('exit', (code) => failAll(new Error(`sha256 worker exited with code ${code}`)));
  // After the listeners (adding one refs the port again): idle, the worker never keeps the process alive.
  started.unref();
  worker = started;
  return started;
}

function failAll(err: Error): void {
  worker = undefined;
  for (const hash of active.values()) hash.fail(err);
}

/** A sha256 computed in the background thread; feed it in order, then `end()` for the hex digest. */
export class OffThreadHash {
  readonly #id = nextId++;
  readonly #worker = getWorker();
  readonly #onDrain: () => void;
  #inFlight = 0;
  #failed: Error | undefined;
  #result: { resolve(digest: string): void; reject(err: Error): void } | undefined;

  /** `onDrain` is called when queued bytes fall back under the limit after `update` returned false. */
  constructor(onDrain: () => void) {
    this.#onDrain = onDrain;
    if (active.size === 0) this.#worker.ref(); // work is owed: stay alive until it is done
    active.set(this.#id, this);
  }

  /**
   * Hands `data` to the worker (its memory is transferred when it owns its ArrayBuffer: do not reuse it).
   * Returns false when this file has MAX_IN_FLIGHT bytes queued: pause the source until `onDrain`.
   */
  update(data: Buffer): boolean {
    if (this.#failed) return true; // the digest will be an error anyway: do not hold the upload up
    const owned = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.#inFlight += data.byteLength;
    this.#worker.postMessage({ id: this.#id, data: view }, owned ? [data.buffer as ArrayBuffer] : []);
    return this.#inFlight < MAX_IN_FLIGHT;
  }

  end(): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.#failed) return reject(this.#failed);
      this.#result = { resolve, reject };
      this.#worker.postMessage({ id: this.#id, end: true });
    });
  }

  cancel(): void {
    this.#worker.postMessage({ id: this.#id, cancel: true });
    this.#settle();
  }

  /** @internal a reply from the worker */
  receive(reply: Reply): void {
    if (reply.acked !== undefined) {
      const wasFull = this.#inFlight >= MAX_IN_FLIGHT;
      this.#inFlight -= reply.acked;
      if (wasFull && this.#inFlight < MAX_IN_FLIGHT) this.#onDrain();
    }
    if (reply.digest !== undefined) {
      this.#settle();
      this.#result?.resolve(reply.digest);
    }
  }

  /** @internal the worker died */
  fail(err: Error): void {
    this.#failed = err;
    this.#settle();
    this.#result?.reject(err);
    this.#onDrain(); // a paused source must not wait for acknowledgements that will never come
  }

  #settle(): void {
    if (active.delete(this.#id) && active.size === 0) this.#worker.unref();
  }
}

/** Files currently being hashed in the background (for leak checks: 0 when no upload is in flight). */
export function hashesInFlight(): number {
  return active.size;
}
