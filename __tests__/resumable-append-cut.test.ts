import type http from 'node:http';
import net from 'node:net';
import express from 'express';
import { MemoryBudget, resumable, resumableDiskStore } from '../lib';
import { UploadLocks } from '../lib/resumable/upload-lock';
import type { UploadLocker } from '../lib/resumable/upload-locker';
import { close, eventually, fdsUnder, listen, tempDir } from './helpers/app';
import { OCTETS, request, TUS } from './helpers/resumable';

// An append whose request is cut before the handler reaches the body (the client sends a PATCH head and a
// byte, then goes away, while the handler waits for the lock, the state, the memory budget): the request
// has already closed when the append starts, and no 'close'/'end' comes any more. It must settle at once —
// lock, data-file fd and memory budget back — also with idleTimeout 0 (no stall check to end it).


/** The in-process locker, counting the locks taken so far and held now. */
function countingLocker(): UploadLocker & { held: number; taken: number } {
  const locks = new UploadLocks();
  const locker = {
    held: 0,
    taken: 0,
    async acquire(id: string, end: Parameters<UploadLocker['acquire']>[1], timeout: number) {
      const release = await locks.acquire(id, end, timeout);
      locker.held++;
      locker.taken++;
      let released = false;
      return () => {
        if (!released) locker.held--;
        released = true;
        release();
      };
    },
    has: (id: string) => locks.has(id),
  };
  return locker;
}

async function cutPatch(port: number, location: string): Promise<void> {
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
    socket.write(
      `PATCH ${location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n` +
        `Upload-Offset: 0\r\nContent-Length: 1000\r\n\r\nx`,
      () => socket.destroy(), // the client goes away right after the head and one byte
    );
  });
}

describe.each([30_000, 0])('a PATCH cut before its append starts (idleTimeout %d)', (idleTimeout) => {
  let dir: ReturnType<typeof tempDir>;
  let budget: MemoryBudget;
  let locker: ReturnType<typeof countingLocker>;
  let middleware: ReturnType<typeof resumable>;
  let server: http.Server;
  let port: number;
  /** PATCHes reach the handler only once their request has closed (deterministically "cut before the append"). */
  let holdPatches = false;

  beforeEach(async () => {
    dir = tempDir('spool-append-cut-');
    budget = new MemoryBudget('64MiB');
    locker = countingLocker();
    middleware = resumable({ store: resumableDiskStore({ directory: dir.path }), memoryBudget: budget, sweepInterval: 0, idleTimeout, locker });
    const app = express();
    app.use('/files', (req, res, next) => {
      if (holdPatches && req.method === 'PATCH') res.once('close', () => setImmediate(next));
      else next();
    });
    app.use('/files', middleware);
    server = await listen(app);
    port = (server.address() as net.AddressInfo).port;
  });
  afterEach(async () => {
    holdPatches = false;
    middleware.close();
    await close(server);
    dir.remove();
  });

  /** Once `appends` PATCHes took the upload's lock: everything they held is back. */
  const settled = async (appends: number) => {
    await eventually(() => expect(locker.taken).toBeGreaterThanOrEqual(appends), 2000);
    await eventually(() => {
      expect({ used: budget.used, dataFds: fdsUnder(dir.path), locks: locker.held }).toEqual({ used: 0, dataFds: 0, locks: 0 });
    }, 2000);
  };

  test('a request already closed when the handler gets it', async () => {
    const created = await request(`http://127.0.0.1:${port}/files`, 'POST', { ...TUS, 'Upload-Length': 1000 });
    const location = created.headers.location!;
    holdPatches = true;
    await cutPatch(port, location);
    await settled(1);
    holdPatches = false;
    // The upload is free: a HEAD and a whole PATCH answer at once, from offset 0 (nothing was kept).
    const head = await request(`http://127.0.0.1:${port}${location}`, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, '0']);
    const started = Date.now();
    const patch = await request(`http://127.0.0.1:${port}${location}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.alloc(1000, 7));
    expect([patch.status, patch.headers['upload-offset']]).toEqual([204, '1000']);
    expect(Date.now() - started).toBeLessThan(1000);
    await settled(3);
  });

  test('requests cut while the handler gets ready (the reviewer’s repro)', async () => {
    const locations: string[] = [];
    for (let i = 0; i < 4; i++) {
      const created = await request(`http://127.0.0.1:${port}/files`, 'POST', { ...TUS, 'Upload-Length': 1000 });
      locations.push(created.headers.location!);
      await cutPatch(port, created.headers.location!);
    }
    await settled(4);
    for (const location of locations) {
      const patch = await request(`http://127.0.0.1:${port}${location}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.alloc(1000, 7));
      expect([patch.status, patch.headers['upload-offset']]).toEqual([204, '1000']);
    }
    await settled(8);
  });
});
