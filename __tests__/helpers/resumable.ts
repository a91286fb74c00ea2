import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import express from 'express';
import * as tus from 'tus-js-client';
import { resumable, resumableDiskStore, type Resumable, type ResumableOptions, type ResumableStore, type UploadedFile } from '../../lib/index';
import { close, listen, tempDir } from './app';

export interface Completed {
  file: UploadedFile;
  sha256: string | undefined;
  size: number;
  /** sha256 of what file.stream() reads back (checked independently of the handler's hash). */
  readBack: string;
}

export interface ResumableServer {
  url: string;
  endpoint: string;
  server: http.Server;
  middleware: Resumable;
  dir: ReturnType<typeof tempDir>;
  completed: Completed[];
  /** Closes the server (every connection) and starts a new middleware + server over the same directory. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** A `resumable()` middleware served at /files of a new Express app on a free port; `close()` closes both. */
export async function serveAtFiles(middleware: Resumable): Promise<{ url: string; close(): Promise<void> }> {
  const app = express();
  app.use('/files', middleware);
  const server = await listen(app);
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      middleware.close();
      await close(server);
    },
  };
}

/** An Express app with `resumable()` at /files over a fresh directory; completed uploads are read back. */
export async function startResumable(options: ResumableOptions = {}, dir = tempDir('spool-resumable-')): Promise<ResumableServer> {
  const completed: Completed[] = [];
  const build = async (port = 0) => {
    const middleware = resumable({
      store: resumableDiskStore({ directory: dir.path }),
      sweepInterval: 0,
      // The suites check every upload's whole-file digest; the default (off) has its own test in resumable-tus.
      sha256: true,
      ...options,
      onComplete: async (file, req) => {
        completed.push({ file, sha256: file.sha256, size: file.size, readBack: await sha256Of(file.stream()) });
        await options.onComplete?.(file, req);
      },
    });
    const app = express();
    app.use('/files', middleware);
    const server = await new Promise<http.Server>((resolve) => {
      const s = app.listen(port, '127.0.0.1', () => resolve(s));
    });
    return { middleware, server };
  };
  let current = await build();
  const port = (current.server.address() as AddressInfo).port;
  const state: ResumableServer = {
    url: `http://127.0.0.1:${port}`,
    endpoint: `http://127.0.0.1:${port}/files`,
    server: current.server,
    middleware: current.middleware,
    dir,
    completed,
    async restart() {
      current.middleware.close();
      await close(current.server);
      current = await build(port);
      state.server = current.server;
      state.middleware = current.middleware;
    },
    async close() {
      current.middleware.close();
      await close(current.server);
      dir.remove();
    },
  };
  return state;
}

export async function sha256Of(stream: AsyncIterable<unknown>): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export interface TusResult {
  url: string;
  upload: tus.Upload;
  errors: number;
}

/** tus-js-client 4 sends the IETF drafts too; its typings do not list the option yet. */
export type TusOptions = tus.UploadOptions & { protocol?: 'tus-v1' | 'ietf-draft-03' | 'ietf-draft-05' };

/** Runs a tus-js-client upload to the end; resolves with its URL, rejects with its error. */
export function tusUpload(input: Buffer | Readable, options: TusOptions): Promise<TusResult> {
  return new Promise((resolve, reject) => {
    let errors = 0;
    const upload = new tus.Upload(input as never, {
      retryDelays: [0, 50, 100, 200],
      ...options,
      onShouldRetry: (err, attempt, opts) => {
        errors++;
        return options.onShouldRetry ? options.onShouldRetry(err, attempt, opts) : attempt < (opts.retryDelays?.length ?? 0);
      },
      onSuccess: () => resolve({ url: upload.url!, upload, errors }),
      onError: reject,
    });
    upload.start();
  });
}

/** A raw HTTP request: headers and body chunks in, status, headers, body and interim (1xx) responses out. */
export function request(
  url: string,
  method: string,
  headers: Record<string, string | number>,
  body?: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; interim: { status: number; headers: Record<string, string>; at: number }[] }> {
  return new Promise((resolve, reject) => {
    const interim: { status: number; headers: Record<string, string>; at: number }[] = [];
    const req = http.request(url, { method, headers });
    req.on('information', (info) => interim.push({ status: info.statusCode, headers: info.headers as Record<string, string>, at: Date.now() }));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString(), interim }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else Readable.from(body as AsyncIterable<Buffer>).pipe(req);
  });
}

export const TUS = { 'Tus-Resumable': '1.0.0' } as const;
export const OCTETS = { 'Content-Type': 'application/offset+octet-stream' } as const;

/** A tus creation of a `length`-byte upload at `${url}/files`: the upload's URL. */
export async function createTusUpload(url: string, length: number): Promise<string> {
  const res = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': length });
  if (res.status !== 201) throw new Error(`the creation was answered ${res.status}: ${res.body}`);
  return url + res.headers.location!;
}

export { listen };

export interface CuttingProxy {
  url: string;
  /** Connections cut so far. */
  readonly cuts: number;
  close(): Promise<void>;
}

/**
 * A loopback TCP proxy (like tcp-proxy.ts) that keeps listening but cuts each connection after a random
 * number of client → server bytes in [minBytes, maxBytes], until it has cut `maxCuts` times.
 */
export async function startCuttingProxy(target: string, options: { minBytes: number; maxBytes: number; maxCuts: number }): Promise<CuttingProxy> {
  const net = await import('node:net');
  const { hostname, port } = new URL(target);
  const sockets = new Set<import('node:net').Socket>();
  let cuts = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    const budget = options.minBytes + Math.floor(Math.random() * (options.maxBytes - options.minBytes));
    let forwarded = 0;
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('data', (chunk: Buffer) => {
      if (cuts < options.maxCuts && forwarded + chunk.length > budget) {
        cuts++;
        upstream.write(chunk.subarray(0, Math.max(0, budget - forwarded)), drop);
        client.pause();
        return;
      }
      forwarded += chunk.length;
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.pipe(client);
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get cuts() {
      return cuts;
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A disk store whose appends take `after` ms more once the inner append has settled, ignoring their signal
 * (a slow or stuck store, for settleTimeout); `idle()` resolves once the last append has settled.
 */
export function slowDiskStore(directory: string, after: number): { store: ResumableStore; inner: ResumableStore; idle: () => Promise<unknown> } {
  const inner = resumableDiskStore({ directory });
  let pending: Promise<unknown> = Promise.resolve();
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'append') {
        return (...args: Parameters<ResumableStore['append']>) => {
          const appending = (async () => {
            try {
              return await target.append(...args);
            } finally {
              await new Promise((resolve) => setTimeout(resolve, after));
            }
          })();
          pending = appending.catch(() => undefined);
          return appending;
        };
      }
      const value = Reflect.get(target, key) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as ResumableStore;
  return { store, inner, idle: () => pending };
}

type Append = ResumableStore['append'];

/** `inner` with its append replaced by `append(inner's own append, ...args)`. */
export function withAppend(inner: ResumableStore, append: (original: Append, ...args: Parameters<Append>) => Promise<number>): ResumableStore {
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'append') return (...args: Parameters<Append>) => append(target.append.bind(target), ...args);
      const value = Reflect.get(target, key) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as ResumableStore;
}

