/**
 * multer 2's newer options move over unchanged: `limits` as a function of the request (called once per
 * request, before the body is read), `defCharset` (text fields without a charset), `streamHandler` (the
 * body fed by the app, e.g. a platform's `req.rawBody`), and `highWaterMark` / `fileHwm` (accepted, not
 * used). Each is run against multer itself in the same test where multer has the same behaviour.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type RequestHandler } from 'express';
import { memoryEngine, spool } from '../lib';
import { close, eventually, jsonErrors, listen } from './helpers/app';
import { rawConnection } from './helpers/raw-http';
import { multipartBody, postChunks, randomData, sha256, BOUNDARY } from './helpers/multipart';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const multer = require('multer');

let server: Server | undefined;
afterEach(async () => {
  if (server) await close(server);
  server = undefined;
});

const CT = `multipart/form-data; boundary=${BOUNDARY}`;
const post = (srv: Server, path: string, body: Buffer, headers: Record<string, string> = {}) =>
  postChunks(srv, path, [body], { 'content-type': CT, 'content-length': body.length, ...headers });

function app(routes: Record<string, RequestHandler[]>): express.Express {
  const a = express();
  for (const [path, handlers] of Object.entries(routes)) {
    a.post(path, ...handlers, (req, res) => {
      const files = (req.files as { originalname: string; size: number; buffer: Buffer }[] | undefined) ?? [];
      res.json({ body: { ...req.body }, files: files.map((f) => ({ name: f.originalname, size: f.size, sha256: sha256(f.buffer) })) });
    });
  }
  a.use(jsonErrors);
  return a;
}

test('limits as a function of the request: per-user file size, same answer as multer', async () => {
  const limits = (req: { headers: Record<string, unknown> }) => ({ fileSize: req.headers['x-plan'] === 'big' ? 100_000 : 1000 });
  server = await listen(
    app({
      '/spool': [spool({ storage: memoryEngine(), limits }).array('f')],
      '/multer': [multer({ storage: multer.memoryStorage(), limits }).array('f')],
    }),
  );
  const data = randomData(5000);
  const body = multipartBody([{ name: 'f', filename: 'a.bin', data }]);
  for (const path of ['/spool', '/multer']) {
    const small = await post(server, path, body);
    expect([path, small.status]).toEqual([path, path === '/spool' ? 413 : 500]); // (multer's errors carry no status)
    expect(small.json.error.code).toBe('LIMIT_FILE_SIZE');
    const big = await post(server, path, body, { 'x-plan': 'big' });
    expect(big.status).toBe(200);
    expect(big.json.files).toEqual([{ name: 'a.bin', size: 5000, sha256: sha256(data) }]);
  }
});

test('limits as a function: called once per request, before any byte of its body has arrived', async () => {
  // The client sends the request head only, waits until the function has run, and only then sends the
  // body: a function called once the body is read (or at its first part) would never run while the
  // client waits. The limits it returns govern that very request (files: 1 → the second file is refused).
  const calls: { path: string; plan: unknown; bodyBytesBuffered: number }[] = [];
  const limits = (req: { url?: string; headers: Record<string, unknown>; readableLength: number }) => {
    calls.push({ path: req.url ?? '', plan: req.headers['x-plan'], bodyBytesBuffered: req.readableLength });
    return { files: req.headers['x-plan'] === 'one' ? 1 : 5 };
  };
  server = await listen(app({ '/spool': [spool({ storage: memoryEngine(), limits }).array('f')] }));
  const { port } = server.address() as AddressInfo;
  const a = randomData(3000);
  const b = randomData(4000);
  const body = multipartBody([
    { name: 'title', value: 'x' },
    { name: 'f', filename: 'a.bin', data: a },
    { name: 'f', filename: 'b.bin', data: b },
  ]);
  const send = async (plan: string) => {
    const before = calls.length;
    const conn = rawConnection(port);
    await conn.write(
      `POST /spool HTTP/1.1\r\nHost: x\r\nX-Plan: ${plan}\r\nContent-Type: ${CT}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
    );
    await eventually(() => expect(calls.length).toBe(before + 1)); // ran with no body byte sent yet
    expect(calls[before]).toEqual({ path: '/spool', plan, bodyBytesBuffered: 0 });
    await conn.write(body);
    const status = await conn.status();
    await conn.closed;
    const text = conn.response();
    return { status, json: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) };
  };
  const one = await send('one');
  expect(one.status).toBe('HTTP/1.1 413 Payload Too Large');
  expect(one.json.error.code).toBe('LIMIT_FILE_COUNT');
  const five = await send('five');
  expect(five.status).toBe('HTTP/1.1 200 OK');
  expect(five.json.files).toEqual([
    { name: 'a.bin', size: 3000, sha256: sha256(a) },
    { name: 'b.bin', size: 4000, sha256: sha256(b) },
  ]);
  // Once per request: not per part, not again when the request ends or fails.
  await new Promise((r) => setTimeout(r, 50));
  expect(calls.map((c) => c.plan)).toEqual(['one', 'five']);
});

test('limits as a function: its error fails the request with that error; a bad return value is a TypeError', async () => {
  const denied = Object.assign(new Error('no uploads on this plan'), { status: 403, code: 'PLAN' });
  server = await listen(
    app({
      '/throws': [spool({ limits: () => { throw denied; } }).any()],
      '/bad': [spool({ limits: () => ({ fileSzie: 10 }) as never }).any()],
      '/promise': [spool({ limits: (async () => ({})) as never }).any()],
    }),
  );
  const body = multipartBody([{ name: 'f', filename: 'a.bin', data: randomData(10) }]);
  const thrown = await post(server, '/throws', body);
  expect([thrown.status, thrown.json.error.code]).toEqual([403, 'PLAN']);
  const bad = await post(server, '/bad', body);
  expect(bad.status).toBe(500);
  expect(bad.json.error.message).toMatch(/limits\.fileSzie/);
  const promised = await post(server, '/promise', body);
  expect(promised.status).toBe(500);
  expect(promised.json.error.message).toMatch(/not a promise/);
});

test('defCharset decodes text fields that declare no charset, as multer does; a declared charset still wins', async () => {
  const latin1 = Buffer.from('café', 'latin1');
  const raw = Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="a"\r\n\r\n`),
    latin1,
    Buffer.from(`\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n`),
    Buffer.from('café', 'utf8'),
    Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
  ]);
  server = await listen(
    app({
      '/spool': [spool({ defCharset: 'latin1' }).none()],
      '/multer': [multer({ defCharset: 'latin1' }).none()],
      '/default': [spool().none()],
    }),
  );
  for (const path of ['/spool', '/multer']) {
    const res = await post(server, path, raw);
    expect([path, res.status, res.json.body]).toEqual([path, 200, { a: 'café', b: 'café' }]);
  }
  const res = await post(server, '/default', raw);
  expect(res.json.body.a).toBe(latin1.toString('utf8')); // utf8 by default: the latin1 byte is not valid UTF-8
  expect(() => spool({ defCharset: 'klingon' })).toThrow(TypeError);
});

test('streamHandler feeds a body the platform already read (req.rawBody), byte-exact', async () => {
  const data = randomData(300_000);
  const body = multipartBody([{ name: 't', value: 'hello' }, { name: 'f', filename: 'a.bin', data }]);
  // A platform that reads the body before the app (Cloud Functions): req.rawBody, the stream consumed.
  const readBody: RequestHandler = (req, _res, next) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
      (req as express.Request & { rawBody?: Buffer }).rawBody = Buffer.concat(chunks);
      next();
    });
  };
  const streamHandler = (req: express.Request & { rawBody?: Buffer }, parser: NodeJS.WritableStream) => {
    if (req.rawBody) parser.end(req.rawBody);
    else req.pipe(parser);
  };
  server = await listen(
    app({
      '/spool': [readBody, spool({ storage: memoryEngine(), streamHandler: streamHandler as never }).any()],
      '/multer': [readBody, multer({ storage: multer.memoryStorage(), streamHandler }).any()],
      '/plain': [spool({ storage: memoryEngine(), streamHandler: streamHandler as never }).any()],
    }),
  );
  for (const path of ['/spool', '/multer', '/plain']) {
    const res = await post(server, path, body);
    expect([path, res.status]).toEqual([path, 200]);
    expect(res.json.body).toEqual({ t: 'hello' });
    expect(res.json.files).toEqual([{ name: 'a.bin', size: data.length, sha256: sha256(data) }]);
  }
});

test('a streamHandler that throws fails the request with its error', async () => {
  server = await listen(app({ '/spool': [spool({ streamHandler: () => { throw Object.assign(new Error('boom'), { status: 502 }); } }).any()] }));
  const res = await post(server, '/spool', multipartBody([{ name: 't', value: 'x' }]));
  expect(res.status).toBe(502);
  expect(res.json.error.message).toBe('boom');
});

test('highWaterMark and fileHwm are accepted (and checked), so multer options move over unchanged', () => {
  expect(() => spool({ highWaterMark: 64 * 1024, fileHwm: 16 * 1024 })).not.toThrow();
  expect(() => spool({ highWaterMark: -1 })).toThrow(TypeError);
  expect(() => spool({ fileHwm: 'big' as never })).toThrow(TypeError);
});
