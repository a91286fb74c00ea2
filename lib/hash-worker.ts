import { Worker } from 'node:worker_threads';

/**
 * One background thread that computes sha256 digests for large files, so hashing (≈0.55 s of CPU per GB)
 * runs beside parsing and writing instead of on the event loop. Started on first use, unref'd so it never
 * keeps the process alive; messages for one file are handled in order.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', ({ id, data, end, cancel }) => {
  if (cancel) return void hashes.delete(id);
  let hash = hashes.get(id);
  if (!hash) hashes.set(id, (hash = createHash('sha256')));
  if (data) hash.update(data);
  if (end) {
    hashes.delete(id);
    parentPort.postMessage({ id, digest: hash.digest('hex') });
  }
});
`;

type Waiter = { resolve(digest: string): void; reject(err: Error): void };

let worker: Worker | undefined;
let nextId = 1;
const waiting = new Map<number, Waiter>();

function getWorker(): Worker {
  if (worker) return worker;
  const started = new Worker(WORKER_SOURCE, { eval: true });
  started.on('message', ({ id, digest }: { id: number; digest: string }) => {
    waiting.get(id)?.resolve(digest);
    waiting.delete(id);
    if (waiting.size === 0) started.unref();
  });
  started.on('error', (err) => failAll(err));
  started.on('exit', (code) => failAll(new Error(`sha256 worker exited with code ${code}`)));
  // After the listeners (adding one refs the port again): idle, the worker never keeps the process alive.
  started.unref();
  worker = started;
  return started;
}

function failAll(err: Error): void {
  worker = undefined;
  for (const waiter of waiting.values()) waiter.reject(err);
  waiting.clear();
}

/** A sha256 computed in the background thread; feed it in order, then `end()` for the hex digest. */
export class OffThreadHash {
  readonly #id = nextId++;
  readonly #worker = getWorker();

  /** Hands `data` to the worker. The buffer must not be used afterwards (its memory is transferred). */
  update(data: Buffer): void {
    const owned = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
    const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.#worker.postMessage({ id: this.#id, data: view }, owned ? [data.buffer as ArrayBuffer] : []);
  }

  end(): Promise<string> {
    return new Promise((resolve, reject) => {
      waiting.set(this.#id, { resolve, reject });
      this.#worker.ref(); // a digest is owed: stay alive until it arrives
      this.#worker.postMessage({ id: this.#id, end: true });
    });
  }

  cancel(): void {
    this.#worker.postMessage({ id: this.#id, cancel: true });
  }
}
