import { ServerResponse, type IncomingMessage } from 'node:http';
import type { StorageEngine, StoredFile } from '../core/engine';
import { SpoolError } from '../core/errors';
import { FileTap } from '../core/file-tap';
import { MemoryBudget, type MemoryLease } from '../core/memory-budget';
import type { MulterFile, MulterStorageEngine } from './multer-types';
import { removeAll } from '../core/remove-all';
import type { Size } from '../core/sizes';
import { describe } from '../core/sizes';
import { isStorageEngine } from '../core/engine';

export interface ToMulterStorageOptions {
  /** Memory budget shared by the files this storage keeps in memory. @default '64MiB' */
  memoryBudget?: Size | MemoryBudget;
  /** Compute `file.sha256` while streaming. @default false */
  sha256?: boolean;
}

const STORED = Symbol('express-spool.stored');

interface RequestState {
  lease: MemoryLease;
  temporary: StoredFile[];
}

/**
 * Makes any express-spool engine (memory, disk, spool, S3, custom) a multer StorageEngine:
 * `multer({ storage: toMulterStorage(spoolEngine({ threshold: '1MiB' })) })`. Files get express-spool's
 * fields (`storage`, `sha256`, engine details). The memory lease is released and temporary files removed
 * when the response ends (through Express's `req.res`).
 */
export function toMulterStorage(engine: StorageEngine, options: ToMulterStorageOptions = {}): MulterStorageEngine {
  if (!isStorageEngine(engine)) throw new TypeError(`Expected \`engine\` to be a storage engine, got ${describe(engine)}`);
  const budget = options.memoryBudget instanceof MemoryBudget ? options.memoryBudget : new MemoryBudget(options.memoryBudget ?? '64MiB');
  const hash = options.sha256 ?? false;
  const states = new WeakMap<IncomingMessage, RequestState>();

  const stateOf = (req: IncomingMessage): RequestState => {
    let state = states.get(req);
    if (!state) {
      const created: RequestState = { lease: budget.lease(), temporary: [] };
      states.set(req, created);
      const res = responseOf(req);
      const release = () => {
        created.lease.close();
        void removeAll(created.temporary);
      };
      if (res) res.once('close', release);
      else req.once('close', release);
      state = created;
    }
    return state;
  };

  return {
    _handleFile(req, file, callback) {
      const state = stateOf(req);
      const controller = new AbortController();
      const tap = new FileTap(file.stream, hash);
      // The tap is the engine's channel of cancellation, as in the core: destroy it when the client goes.
      const onAborted = () => {
        const reason = new SpoolError('CLIENT_ABORTED');
        tap.destroy(reason);
        controller.abort(reason);
      };
      req.once('aborted', onAborted);
      tap.on('error', () => undefined); // reported through the engine's rejection
      engine
        .store(tap, file, { signal: controller.signal, memory: state.lease, sha256: () => tap.digest(), request: req })
        .then(
          (stored) => {
            if (stored.temporary) state.temporary.push(stored);
            const info: Record<string | symbol, unknown> = { size: tap.bytes, storage: stored.storage };
            if (tap.sha256 !== undefined) info.sha256 = tap.sha256;
            Object.defineProperties(info, Object.getOwnPropertyDescriptors(stored.details));
            info[STORED] = stored; // multer spreads info into the file, symbols included: _removeFile finds it
            return info as Record<string, unknown>;
          },
        )
        .finally(() => {
          req.off('aborted', onAborted);
          if (!tap.readableEnded) tap.destroy(); // an engine that gave up leaves the tap half-read
        })
        .then(
          (info) => callback(null, info),
          (err: unknown) => callback(err),
        );
    },
    _removeFile(_req, file, callback) {
      const stored = (file as MulterFile & { [STORED]?: StoredFile })[STORED];
      if (!stored) return callback(null);
      stored.remove().then(() => callback(null), (err: Error) => callback(err));
    },
  };
}

/**
 * The response of `req`, whose end releases what the request holds: Express's `req.res`, or on a plain
 * `node:http` server the socket's current response (Node links them only that way). A request's own
 * 'close' comes once its body is read (Node ≥ 16), long before the app is done with its files.
 */
function responseOf(req: IncomingMessage): ServerResponse | undefined {
  const express = (req as IncomingMessage & { res?: ServerResponse }).res;
  if (express) return express;
  const current = (req.socket as unknown as { _httpMessage?: unknown } | null)?._httpMessage;
  return current instanceof ServerResponse && current.req === req ? current : undefined;
}
