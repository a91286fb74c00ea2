import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { MemoryBudget, spool, spoolEngine, type StorageEngine } from '../lib';
import { close, echoApp, eventually, listen } from './helpers/app';

/**
 * A failed request whose engine never settles (a custom engine or a `remove()` that ignores every signal)
 * keeps counted only what that engine reserved for its own work: what the core itself holds for the request
 * — its share, text field values past the field credit, memory files the clean-up removed — goes back at
 * once (`#releaseMemory`). Found by a review: they stayed counted for ever, each stuck request pinning them.
 */
const B = 'bnd';
const stuck: StorageEngine = { name: 'stuck', store: () => new Promise(() => undefined) }; // reserves nothing

function abortAfter(port: number, head: string): net.Socket {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: 10000000\r\n\r\n`);
  socket.write(head);
  return socket;
}

test('a large text field goes back though an engine never settles (the stuck engine reserved nothing): budget 0', async () => {
  const budget = new MemoryBudget('16MiB');
  const upload = spool({ storage: stuck, memoryBudget: budget, settleTimeout: 100, idleTimeout: 0, drainTimeout: 50 });
  const server = await listen(echoApp(upload.any()));
  try {
    const field = 'v'.repeat(512 * 1024);
    const socket = abortAfter((server.address() as AddressInfo).port,
      `--${B}\r\nContent-Disposition: form-data; name="t"\r\n\r\n${field}\r\n` +
      `--${B}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\nabc`);
    await eventually(() => expect(budget.used).toBeGreaterThan(512 * 1024)); // the field is parsed and counted
    socket.destroy(); // CLIENT_ABORTED while the stuck engine holds the file
    // The stuck engine reserved nothing: per #releaseMemory's contract nothing should stay counted.
    await eventually(() => expect(budget.used).toBe(0), 5_000);
  } finally {
    await close(server);
  }
});

test('spool engine: a small file kept in memory, then removed by the clean-up, goes back though the rollover never settles: budget 0', async () => {
  const budget = new MemoryBudget('16MiB');
  const upload = spool({
    storage: spoolEngine({ threshold: 256 * 1024, rollover: stuck }),
    memoryBudget: budget, settleTimeout: 100, idleTimeout: 0, drainTimeout: 50,
  });
  const server = await listen(echoApp(upload.any()));
  try {
    const small = 'a'.repeat(200 * 1024);
    const big = 'b'.repeat(300 * 1024); // past the threshold: rolls over to the stuck engine
    const socket = abortAfter((server.address() as AddressInfo).port,
      `--${B}\r\nContent-Disposition: form-data; name="s"; filename="s.bin"\r\n\r\n${small}\r\n` +
      `--${B}\r\nContent-Disposition: form-data; name="b"; filename="b.bin"\r\n\r\n${big}`);
    await eventually(() => expect(budget.used).toBeGreaterThanOrEqual(192 * 1024 + 200 * 1024));
    await new Promise((r) => setImmediate(r));
    socket.destroy(); // CLIENT_ABORTED: the small file is removed, the rollover never settles
    await eventually(() => expect(budget.used).toBe(0), 5_000);
  } finally {
    await close(server);
  }
});


test('an engine whose store() settles after settleTimeout but whose remove() hangs: the request\'s memory goes back all the same: budget 0', async () => {
  const budget = new MemoryBudget('16MiB');
  let letGo: (() => void) | undefined;
  let started = false;
  const late: StorageEngine = {
    name: 'late',
    async store(stream) {
      started = true;
      try { for await (const _ of stream); } catch { /* cut short */ } // eslint-disable-line @typescript-eslint/no-unused-vars
      await new Promise<void>((r) => (letGo = r));
      return { storage: 'late', details: {}, stream: () => { throw new Error('no'); }, remove: () => new Promise<void>(() => undefined) };
    },
  };
  const upload = spool({ storage: late, memoryBudget: budget, settleTimeout: 100, idleTimeout: 0, drainTimeout: 50 });
  const server = await listen(echoApp(upload.any()));
  try {
    const socket = abortAfter((server.address() as AddressInfo).port,
      `--${B}\r\nContent-Disposition: form-data; name="t"\r\n\r\n${'v'.repeat(512 * 1024)}\r\n` +
      `--${B}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\nabc`);
    await eventually(() => expect(started).toBe(true));
    socket.destroy();
    await eventually(() => expect(letGo).toBeDefined());
    await eventually(() => expect(budget.used).toBeLessThan(512 * 1024)); // the share went back after settleTimeout
    letGo!(); // the engine's store() settles: per the README row, its request's memory is no longer held
    await eventually(() => expect(budget.used).toBe(0), 5_000);
  } finally {
    await close(server);
  }
});
