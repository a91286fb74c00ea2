import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import type { Server } from 'node:http';
import net from 'node:net';
import vm from 'node:vm';
import v8 from 'node:v8';
import express from 'express';
import { diskEngine, MemoryBudget, resumable, resumableDiskStore, spool } from '../lib';
import { close, listen, tempDir } from './helpers/app';

// A body sent with Transfer-Encoding: chunked in 1-byte HTTP chunks reaches the app as one 1-byte Buffer
// per chunk (Node copies each on_body piece), ~200 bytes of live memory each. The disk engine's and the
// resumable disk store's write batches are full at 128 chunks as well as at 512 KiB, so such a client
// cannot make a batch hold a hundred times what the budget counts (found by review: 98 MiB live for
// 500 KB sent, before the chunk cap).
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const MiB = 1024 * 1024;
const KiB = 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Live memory after a full GC: JS heap + memory outside it (Buffers' backing stores). Garbage excluded. */
const live = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
};
/**
 * What the library may hold live for one upload: what it counted on the budget, plus the README's 640 KiB
 * per streaming upload outside the budget (V8's 64 MiB headroom is garbage, which `live()` excludes).
 */
const bound = (counted: number, uploads: number) => counted + 640 * KiB * uploads;

/** `data` as HTTP/1.1 chunked encoding, one byte per chunk. */
function oneByteChunks(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length * 6);
  for (let i = 0; i < data.length; i++) {
    out.write('1\r\n', i * 6, 'latin1');
    out[i * 6 + 3] = data[i];
    out.write('\r\n', i * 6 + 4, 'latin1');
  }
  return out;
}
const chunk = (b: Buffer) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);

function serverSockets(server: Server): net.Socket[] {
  const sockets: net.Socket[] = [];
  server.on('connection', (s) => sockets.push(s));
  return sockets;
}

async function until(check: () => boolean, timeout = 60_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('multipart diskEngine: a paused client sending 1-byte chunks: its bytes reach the file, live memory stays small', async () => {
  const dir = tempDir('review-amp-');
  const budget = new MemoryBudget('8MiB');
  const app = express();
  let path = '';
  const requests: import('node:http').IncomingMessage[] = [];
  app.use((req, _res, next) => {
    requests.push(req);
    next();
  });
  app.post('/u', spool({ storage: diskEngine({ directory: dir.path }), memoryBudget: budget }).single('f'), (req, res) => {
    path = (req.file as unknown as { path: string }).path;
    res.json({ ok: true });
  });
  const server = await listen(app);
  const sockets = serverSockets(server);
  const port = (server.address() as net.AddressInfo).port;
  const data = Buffer.alloc(500 * KiB, 0x61); // < one 512 KiB batch
  const B = 'XbOuNdArY';
  const head = Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="a"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const tail = Buffer.from(`\r\n--${B}--\r\n`);
  const idle = live();
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let response = '';
  socket.on('data', (d) => (response += d.toString()));
  const wire = Buffer.concat([
    Buffer.from(`POST /u HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nTransfer-Encoding: chunked\r\n\r\n`),
    chunk(head),
    oneByteChunks(data),
  ]);
  socket.write(wire);
  // The client pauses here (a slow or malicious client): the server has read every byte.
  await until(() => sockets.length === 1 && sockets[0].bytesRead === wire.length);
  await new Promise((r) => setTimeout(r, 200));
  const held = live() - idle;
  const counted = budget.used;
  // Every full batch (128 chunks) reached the file; what is held is a few MiB of stream buffers, not a batch.
  const onDisk = readdirSync(dir.path).map((f) => statSync(join(dir.path, f)).size);
  expect(onDisk).toHaveLength(1);
  expect(onDisk[0]).toBeGreaterThanOrEqual(data.length - 2 * 128);
  expect(held).toBeLessThan(8 * MiB); // 3.5 MiB measured with and before the batching; 98 MiB with the uncapped batch
  socket.write(Buffer.concat([chunk(tail), Buffer.from('0\r\n\r\n')]));
  await until(() => response.includes('"ok"'), 120_000);
  expect(sha(readFileSync(path))).toBe(sha(data));
  socket.destroy();
  await close(server);
  dir.remove();
  expect(counted).toBeLessThanOrEqual(budget.limit);
}, 240_000);
