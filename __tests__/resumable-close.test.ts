/**
 * `resumable().close()` resolves only once the requests it is handling have settled: an append whose client
 * went away records what it stored before close() resolves, so an app that removes every upload after it
 * (the demo's shutdown) cannot race a state write that would bring one back.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, resumableDiskStore, type ResumableStore } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, request, TUS } from './helpers/resumable';

const KiB = 1024;

test('close() waits for an append cut off mid-body to record what it stored (a store slow to finish it)', async () => {
  const dir = tempDir('spool-close-');
  const inner = resumableDiskStore({ directory: dir.path });
  const events: string[] = [];
  // The store takes 500 ms more to finish an append: close() must wait for it.
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'append') {
        return async (...args: Parameters<ResumableStore['append']>) => {
          try {
            return await target.append(...args);
          } finally {
            await new Promise((r) => setTimeout(r, 500));
            events.push('append settled');
          }
        };
      }
      const value = Reflect.get(target, key) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  }) as ResumableStore;
  const middleware = resumable({ store, sweepInterval: 0 });
  const app = express();
  app.use('/files', middleware);
  const server = await listen(app);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const created = await request(`${url}/files`, 'POST', { ...TUS, 'Upload-Length': 1024 * KiB });
    expect(created.status).toBe(201);
    const id = created.headers.location!.split('/').pop()!;
    // 256 KiB of a 1 MiB body, then the client is gone.
    const sent = randomBytes(256 * KiB);
    await new Promise<void>((resolve) => {
      const req = http.request(`${url}/files/${id}`, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 1024 * KiB } });
      req.on('error', () => undefined);
      req.write(sent, () => setTimeout(() => (req.destroy(), resolve()), 200));
    });
    await new Promise((r) => setTimeout(r, 50)); // the server sees the socket close
    await middleware.close();
    events.push('close resolved');
    expect(events).toEqual(['append settled', 'close resolved']);
    // What it stored is recorded: a fresh store over the same directory says so.
    const upload = await resumableDiskStore({ directory: dir.path }).get(id);
    expect(upload?.offset).toBe(sent.length);
  } finally {
    await close(server);
    dir.remove();
  }
});

test('close() with nothing running resolves at once', async () => {
  const dir = tempDir('spool-close-');
  const middleware = resumable({ store: resumableDiskStore({ directory: dir.path }) });
  const started = Date.now();
  await middleware.close();
  expect(Date.now() - started).toBeLessThan(100);
  dir.remove();
});
