import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { diskEngine, spool, type SpoolError } from '../lib';
import { close, eventually, listen, tempDir } from './helpers/app';
import { BOUNDARY, patternChunks } from './helpers/multipart';

const dir = tempDir();
afterAll(() => dir.remove());

const unhandled: unknown[] = [];
const onUnhandled = (err: unknown) => unhandled.push(err);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => process.off('unhandledRejection', onUnhandled));

/** Opens a raw socket, sends headers and `sendBytes` of a file part, then destroys the socket. */
async function abortMidUpload(server: Server, sendBytes: number, waitFor: () => boolean): Promise<void> {
  const { port } = server.address() as AddressInfo;
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  const head = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`;
  socket.write(
    `POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\n` +
      `Content-Length: ${100 * 1024 * 1024}\r\n\r\n${head}`,
  );
  let sent = 0;
  for (const chunk of patternChunks({ size: sendBytes, seed: 9 })) {
    sent += chunk.length;
    if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
  }
  await eventually(() => expect(waitFor()).toBe(true));
  socket.destroy();
}

describe.each([
  ['spool → disk (file on disk when the client leaves)', '64KiB', 5 * 1024 * 1024, (_used: number) => dir.files().length > 0],
  ['spool in memory (file still buffered when the client leaves)', '8MiB', 1024 * 1024, (used: number) => used > 0],
])('client disconnects mid-file: %s', (_label, threshold, sendBytes, ready) => {
  test('no file left, budget back to 0, next(err) once, no unhandled rejection', async () => {
    const upload = spool({ threshold, rollover: diskEngine({ directory: dir.path }) });
    const errors: SpoolError[] = [];
    const app = express();
    app.post('/upload', upload.single('file'), (_req, res) => void res.json({ ok: true }));
    app.use((err: SpoolError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(err);
      res.status(err.status).end();
    });
    const server = await listen(app);
    try {
      await abortMidUpload(server, sendBytes, () => ready(upload.memoryBudget.used));
      await eventually(() => expect(errors.map((e) => e.code)).toEqual(['CLIENT_ABORTED']));
      expect(dir.files()).toEqual([]);
      expect(upload.memoryBudget.used).toBe(0);
      await new Promise((r) => setTimeout(r, 50));
      expect(errors).toHaveLength(1);
      expect(unhandled).toEqual([]);
    } finally {
      await close(server);
    }
  });
});
