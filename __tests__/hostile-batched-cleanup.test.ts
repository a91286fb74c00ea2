import { randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import express from 'express';
import { diskEngine, MemoryBudget, resumable, resumableDiskStore, spool } from '../lib';
import { close, eventually, listen, tempDir } from './helpers/app';
import { request } from './helpers/resumable';

// What held up: aborted uploads (multipart disk engine with its 1 MiB spare, resumable disk append with
// its 256 KiB spare) give back every reservation and file descriptor, and keep exactly what they should.

const KiB = 1024;
const fds = () => readdirSync('/proc/self/fd').length;

test('multipart disk upload cut mid-file: budget back to 0, no fd left, no file left', async () => {
  const dir = tempDir('review-clean-');
  const budget = new MemoryBudget('64MiB');
  const app = express();
  app.post('/u', spool({ storage: diskEngine({ directory: dir.path }), memoryBudget: budget }).single('f'), (_req, res) => res.end('ok'));
  const server = await listen(app);
  const before = fds();
  for (let round = 0; round < 5; round++) {
    const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    socket.on('error', () => undefined);
    const B = 'bNd';
    socket.write(`POST /u HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${10 * 1024 * KiB}\r\n\r\n`);
    socket.write(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n`);
    socket.write(randomBytes(700 * KiB + round * 97)); // one 512 KiB batch written or in flight, the next filling
    await eventually(() => expect(budget.used).toBeGreaterThan(1024 * KiB));
    socket.destroy();
  }
  await eventually(() => expect(budget.used).toBe(0));
  await eventually(() => expect(fds()).toBeLessThanOrEqual(before)); // (other tests' sockets may close meanwhile)
  await eventually(() => expect(readdirSync(dir.path)).toEqual([]));
  await close(server);
  dir.remove();
});

test('resumable disk append cut mid-batch: keeps exactly the bytes received, budget 0, no fd left', async () => {
  const dir = tempDir('review-clean-r-');
  const budget = new MemoryBudget('64MiB');
  const app = express();
  const middleware = resumable({ store: resumableDiskStore({ directory: dir.path }), memoryBudget: budget, sweepInterval: 0 });
  app.use('/files', middleware);
  const server = await listen(app);
  const port = (server.address() as net.AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  const data = randomBytes(4 * 1024 * KiB);
  const created = await request(`${base}/files`, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': data.length });
  const location = created.headers.location!;
  const before = fds();
  let offset = 0;
  for (const size of [300 * KiB + 1, 900 * KiB + 7, 1]) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    socket.write(
      `PATCH ${location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n` +
        `Upload-Offset: ${offset}\r\nContent-Length: ${data.length - offset}\r\n\r\n`,
    );
    await new Promise<void>((r) => socket.write(data.subarray(offset, offset + size), () => r()));
    // Cut once the append streams (a cut before it starts hangs it: review-append-hang.test.ts).
    await eventually(() => expect(budget.used).toBe(64 * KiB + 2 * 128 * KiB)); // its share and two batches
    socket.destroy(); // cut without a pause: whatever the batch holds must still be written
    offset += size;
    // (A HEAD sent at once would supersede the cut PATCH before it reads its body — by design.)
    await new Promise((r) => setTimeout(r, 300));
    await eventually(() => expect(budget.used).toBe(0));
    const head = await request(`${base}${location}`, 'HEAD', { 'Tus-Resumable': '1.0.0' });
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(offset)]);
    expect(statSync(`${dir.path}/${location.split('/').pop()}`).size).toBe(offset);
  }
  await eventually(() => expect(budget.used).toBe(0));
  await eventually(() => expect(fds()).toBeLessThanOrEqual(before)); // (other tests' sockets may close meanwhile)
  middleware.close();
  await close(server);
  dir.remove();
});
