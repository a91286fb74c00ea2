import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { MemoryBudget, spool, type StorageEngine, type StoreContext, type StoredFile } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';
import { postMultipart, randomData } from './helpers/multipart';

const MiB = 1024 * 1024;

/**
 * A failed request's memory (README, `settleTimeout`): an engine still at work past settleTimeout may still
 * hold what it reserved (an S3 part whose PutObject is in flight), so that stays counted until the engine
 * settles — also once the error answer has gone out, whatever the failure; what the core itself holds (the
 * request's share, text fields, removed memory files) is given back at once, so an engine that never settles
 * keeps only its own reservations counted (more in lease-stuck-engine.test.ts). (A review of the
 * first version found both: the lease closed when the error answer's response closed, and an engine that
 * never settled kept the request's 192 KiB share counted for ever.)
 */
test('a failure that is not a client abort: an engine still holding memory past settleTimeout stays counted after the answer', async () => {
  const budget = new MemoryBudget('16MiB');
  let letGo: (() => void) | undefined;
  let holding = false;
  const slow: StorageEngine = {
    name: 'slow',
    async store(stream: Readable, _file, context: StoreContext): Promise<StoredFile> {
      expect(context.memory.tryReserve(MiB)).toBe(true); // e.g. a part whose PutObject is in flight
      holding = true;
      try {
        for await (const _ of stream); // eslint-disable-line @typescript-eslint/no-unused-vars
      } catch {
        // the request failed: the stream is destroyed
      }
      await new Promise<void>((resolve) => (letGo = resolve)); // the PutObject is still under way
      context.memory.release(MiB);
      holding = false;
      return { storage: 'slow', details: {}, stream: () => { throw new Error('no'); }, remove: async () => undefined };
    },
  };
  const upload = spool({ storage: slow, memoryBudget: budget, limits: { fields: 1 }, settleTimeout: 100, idleTimeout: 0 });
  const server = await listen(echoApp(upload.any()));
  try {
    const res = await postMultipart(server, '/upload', [
      { name: 'f', filename: 'a', data: randomData(10) },
      { name: 'x', value: '1' },
      { name: 'y', value: '2' }, // LIMIT_FIELD_COUNT: the request fails, the client stays
    ]);
    expect(res.status).toBe(413);
    await new Promise((r) => setTimeout(r, 200)); // the response has closed
    expect(holding).toBe(true);
    // The engine still holds its MiB: the README says the budget still counts it.
    expect(budget.used).toBe(MiB); // the engine's MiB, and not the request's own share any more
  } finally {
    letGo?.();
    await eventually(() => expect(budget.used).toBe(0));
    await close(server);
  }
});

test('a client gone while an engine that reserved nothing never settles: the budget gets the request\'s share back', async () => {
  const budget = new MemoryBudget('16MiB');
  const stuck: StorageEngine = { name: 'stuck', store: () => new Promise(() => undefined) };
  const upload = spool({ storage: stuck, memoryBudget: budget, settleTimeout: 100, idleTimeout: 0, drainTimeout: 50 });
  const server = await listen(echoApp(upload.any()));
  try {
    const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    socket.on('error', () => undefined);
    const B = 'bnd';
    socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: 100000\r\n\r\n`);
    socket.write(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\nabc`);
    await eventually(() => expect(budget.used).toBeGreaterThan(0)); // admitted: the request's share is held
    socket.destroy(); // CLIENT_ABORTED
    await eventually(() => expect(budget.used).toBe(0), 10_000); // after settleTimeout, though the engine never settles
  } finally {
    await close(server);
  }
});
