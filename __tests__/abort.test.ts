import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { diskEngine, spool, type SpoolError } from '../lib';
import { close, eventually, listen, tempDir } from './helpers/app';
import { Readable } from 'node:stream';
import { BOUNDARY, patternChunks, postMultipart } from './helpers/multipart';

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
      expect([errors[0].status, errors[0].statusCode]).toEqual([400, 400]); // the README's Errors table: CLIENT_ABORTED → 400
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

test('a client that stalls mid-body is ended by idleTimeout: 408, nothing left, budget released', async () => {
  const upload = spool({ threshold: '64KiB', idleTimeout: 300, rollover: diskEngine({ directory: dir.path }) });
  const codes: string[] = [];
  const app = express();
  app.post('/upload', upload.single('file'), (_req, res) => void res.json({ ok: true }));
  app.use((err: SpoolError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    codes.push(err.code);
    res.status(err.status).json({ code: err.code });
  });
  const server = await listen(app);
  try {
    const { port } = server.address() as AddressInfo;
    const socket = net.connect(port, '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    let answer = '';
    socket.on('data', (d) => (answer += d));
    socket.write(
      `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: 10000000\r\n\r\n` +
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n`,
    );
    socket.write(Buffer.alloc(200_000, 1)); // past the threshold: on disk, then silence
    await eventually(() => expect(codes).toEqual(['REQUEST_TIMEOUT']), 5000);
    await eventually(() => expect(answer).toMatch(/^HTTP\/1.1 408/), 5000);
    expect(dir.files()).toEqual([]);
    expect(upload.memoryBudget.used).toBe(0);
    socket.destroy();
  } finally {
    await close(server);
  }
});

test('a slow engine (our own backpressure) is not mistaken for a stalled client', async () => {
  const slow = {
    name: 'slow',
    async store(stream: NodeJS.ReadableStream) {
      await new Promise((r) => setTimeout(r, 700)); // 3.5 × idleTimeout before reading a byte
      for await (const _chunk of stream); // consume it all, slowly started
      return { storage: 'slow', details: {}, stream: () => Readable.from([]), remove: async () => undefined };
    },
  };
  const upload = spool({ storage: slow, idleTimeout: 200 });
  const app = express();
  app.post('/upload', upload.single('file'), (req: any, res) => void res.json({ size: req.file.size }));
  app.use((err: SpoolError, _req: express.Request, res: express.Response, _next: express.NextFunction) => void res.status(err.status).json({ code: err.code }));
  const server = await listen(app);
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'file', filename: 'x', data: { size: 8 * 1024 * 1024, seed: 1 } }]);
    expect(res.json).toEqual({ size: 8 * 1024 * 1024 });
  } finally {
    await close(server);
  }
});
