/**
 * A tus creation-with-upload (POST with a body) whose client goes away before a byte is stored leaves nothing
 * behind — also when its store takes longer than settleTimeout to settle: the upload, whose location no
 * client ever learned, is removed once the store has settled (found by a hostile review).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, type Resumable, type ResumableOptions, type ResumableStore } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, slowDiskStore, TUS } from './helpers/resumable';

const KiB = 1024;
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function serve(options: ResumableOptions) {
  const middleware: Resumable = resumable({ sweepInterval: 0, ...options });
  const app = express();
  app.use('/files', middleware);
  const server = await listen(app);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, middleware, close: () => close(server) };
}

async function listIds(store: ResumableStore): Promise<string[]> {
  const ids: string[] = [];
  for await (const u of store.list()) ids.push(u.id);
  return ids;
}

for (const [label, after] of [['in time (100 ms)', 100], ['past settleTimeout (900 ms)', 900]] as const) {
  test(`POST with a body, client gone before its first byte, store settles ${label}: nothing is left`, async () => {
    const dir = tempDir('spool-linger-creation-');
    const { store, inner, idle } = slowDiskStore(dir.path, after);
    const srv = await serve({ store, settleTimeout: 300, idleTimeout: 0 });
    try {
      await new Promise<void>((resolve) => {
        const req = http.request(`${srv.url}/files`, {
          method: 'POST',
          headers: { ...TUS, ...OCTETS, 'Upload-Length': 64 * KiB, 'Content-Length': 64 * KiB },
        });
        req.on('error', () => resolve());
        req.on('response', (res) => (res.resume(), resolve()));
        req.flushHeaders();
        setTimeout(() => req.destroy(), 200); // the headers only: then the client is gone
      });
      await wait(50);
      await srv.middleware.close();
      await idle();
      await wait(200);
      expect(await listIds(inner)).toEqual([]);
    } finally {
      await srv.close();
      dir.remove();
    }
  });
}
