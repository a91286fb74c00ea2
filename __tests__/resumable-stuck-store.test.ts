/**
 * A store whose append does not settle (it ignores its signal) must not hold a request for ever: once the
 * append was ended (client gone, a newer request, idle, a limit), it has `settleTimeout` ms, then the request
 * is answered 500 STORAGE_FAILED. The upload stays locked and its memory counted until the store settles, so
 * no second writer runs beside it. A client waiting for a slow store is not cut off.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, resumableDiskStore, type Resumable, type ResumableOptions, type ResumableStore } from '../lib/index';
import { close, eventually, listen, tempDir } from './helpers/app';
import { createTusUpload, OCTETS, request, TUS } from './helpers/resumable';

const KiB = 1024;

/** A disk store whose append, once the inner one has stored the body, waits for `release()` before settling. */
function holdingStore(directory: string, { readBody = true } = {}) {
  const inner = resumableDiskStore({ directory });
  let let_go!: () => void;
  const held = new Promise<void>((resolve) => (let_go = resolve));
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'append') {
        return async (...args: Parameters<ResumableStore['append']>) => {
          if (!readBody) {
            await held; // never reads: the request's body waits in the socket
            return args[0].offset;
          }
          const offset = await target.append(...args);
          await held; // ignores the signal
          return offset;
        };
      }
      const value = Reflect.get(target, key) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as ResumableStore;
  return { store, release: () => let_go() };
}

async function serve(options: ResumableOptions): Promise<{ url: string; middleware: Resumable; close(): Promise<void> }> {
  const middleware = resumable({ sweepInterval: 0, ...options });
  const app = express();
  app.use('/files', middleware);
  const server = await listen(app);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, middleware, close: () => close(server) };
}

test('an append that does not settle, ended by a newer request, is answered 500 STORAGE_FAILED after settleTimeout; the upload stays locked until it settles', async () => {
  const dir = tempDir('spool-stuck-');
  const { store, release } = holdingStore(dir.path);
  const srv = await serve({ store, settleTimeout: 300, lockTimeout: 1000 });
  try {
    const data = randomBytes(100 * KiB);
    const upload = await createTusUpload(srv.url, 200 * KiB);
    const patching = request(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    await new Promise((r) => setTimeout(r, 300)); // the body is in; the store does not settle
    // The client comes back (a HEAD ends the running append): held by the store's append, the upload is
    // not the HEAD's, and the memory stays counted.
    const started = Date.now();
    expect((await request(upload, 'HEAD', TUS)).status).toBe(423);
    const res = await patching;
    expect(res.status).toBe(500);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(srv.middleware.memoryBudget.used).toBeGreaterThan(0);
    // Every request was answered: close() does not wait for the store.
    await srv.middleware.close();
    release();
    await eventually(async () => {
      const head = await request(upload, 'HEAD', TUS);
      expect([head.status, head.headers['upload-offset']]).toEqual([200, String(data.length)]);
    }, 5000);
    expect(srv.middleware.memoryBudget.used).toBe(0);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});

test('a store that never reads: a newer request on the upload ends the append, which is answered after settleTimeout (close() resolves)', async () => {
  const dir = tempDir('spool-stuck-');
  const { store, release } = holdingStore(dir.path, { readBody: false });
  const srv = await serve({ store, settleTimeout: 300, lockTimeout: 500, idleTimeout: 0 });
  try {
    const upload = await createTusUpload(srv.url, 4096 * KiB);
    // 1 MiB of a 4 MiB body; the client waits (the server never reads, so it cannot tell a client that left).
    const patched = new Promise<number>((resolve) => {
      const req = http.request(upload, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4096 * KiB } });
      req.on('error', () => resolve(-1));
      req.on('response', (res) => (res.resume(), resolve(res.statusCode!)));
      req.write(randomBytes(1024 * KiB));
    });
    await new Promise((r) => setTimeout(r, 200));
    // The client comes back (a HEAD ends the running append): the store still holds the upload.
    expect((await request(upload, 'HEAD', TUS)).status).toBe(423);
    expect(await patched).toBe(500);
    const closing = srv.middleware.close().then(() => 'closed');
    expect(await Promise.race([closing, new Promise((r) => setTimeout(() => r('still waiting'), 5000))])).toBe('closed');
    release();
    await eventually(async () => expect((await request(upload, 'HEAD', TUS)).status).toBe(200), 5000);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});

test('a client waiting for a slow store gets its answer: settleTimeout does not cut it off', async () => {
  const dir = tempDir('spool-stuck-');
  const { store, release } = holdingStore(dir.path);
  const srv = await serve({ store, settleTimeout: 200 });
  try {
    const data = randomBytes(10 * KiB);
    const upload = await createTusUpload(srv.url, data.length);
    const answer = request(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    setTimeout(release, 1500); // the store takes 1.5 s after the body's end
    expect((await answer).status).toBe(204);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});

test('settleTimeout 0 waits as long as the store takes, also once the append was ended', async () => {
  const dir = tempDir('spool-stuck-');
  const { store, release } = holdingStore(dir.path);
  const srv = await serve({ store, settleTimeout: 0, lockTimeout: 300 });
  try {
    const data = randomBytes(10 * KiB);
    const upload = await createTusUpload(srv.url, 20 * KiB);
    const answer = request(upload, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    await new Promise((r) => setTimeout(r, 300));
    expect((await request(upload, 'HEAD', TUS)).status).toBe(423); // ends the append; the store still holds it
    const first = await Promise.race([answer.then((r) => r.status), new Promise((r) => setTimeout(() => r('waiting'), 1500))]);
    expect(first).toBe('waiting');
    release();
    expect((await answer).status).toBe(204);
  } finally {
    release();
    await srv.close();
    dir.remove();
  }
});
