import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3ResumableStore } from '../lib/index';
import { tempDir } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';
import { useTestBucket } from './setup/s3-env';

// IETF draft progress: while an append (or a creation with a body) streams, `104 Upload Resumption
// Supported` interim responses carry the Upload-Offset the store has durably recorded. Read here from raw
// sockets, so every interim response is seen in the order it was written.

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const V8 = { 'Upload-Draft-Interop-Version': '8' };
const PARTIAL = { 'Content-Type': 'application/partial-upload' };
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RawMessage {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** ms since the request started, and how many body bytes the client had written by then. */
  at: number;
  sent: number;
}

interface RawExchange {
  /** Interim (1xx) responses in arrival order. */
  readonly interims: RawMessage[];
  /** Body bytes written so far. */
  readonly sent: number;
  /** Resolves with the final response, or undefined when the connection closed before one. */
  readonly done: Promise<RawMessage | undefined>;
  /** Called for each interim response as it arrives. */
  onInterim?: (message: RawMessage) => void;
  /** Stops sending and destroys the socket (a client that gives up). */
  cut(): void;
}

/**
 * One request over a raw TCP socket: the head, then `body` in `chunk`-sized writes `pace` ms apart (each
 * awaited until the kernel took it). Parses every response head that comes back — 1xx and final.
 */
function rawRequest(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string | number>,
  body: Buffer,
  options: { chunk?: number; pace?: number; version?: '1.1' | '1.0' } = {},
): RawExchange {
  const { chunk = 64 * KiB, pace = 5, version = '1.1' } = options;
  const socket = net.connect(port, '127.0.0.1');
  const started = Date.now();
  let sent = 0;
  let cut = false;
  let input = Buffer.alloc(0);
  const exchange: RawExchange = {
    interims: [],
    get sent() {
      return sent;
    },
    done: undefined as never,
    cut() {
      cut = true;
      socket.destroy();
    },
  };
  (exchange as { done: Promise<RawMessage | undefined> }).done = new Promise((resolveDone) => {
    let final: RawMessage | undefined;
    let bodyLength = -1;
    const parse = () => {
      for (;;) {
        if (final) {
          if (bodyLength >= 0 && input.length >= bodyLength) {
            final.body = input.subarray(0, bodyLength).toString();
            socket.end();
            return resolveDone(final);
          }
          return;
        }
        const end = input.indexOf('\r\n\r\n');
        if (end < 0) return;
        const [statusLine, ...lines] = input.subarray(0, end).toString('latin1').split('\r\n');
        input = input.subarray(end + 4);
        const status = Number(statusLine.split(' ')[1]);
        const fields: Record<string, string> = {};
        for (const line of lines) {
          const colon = line.indexOf(':');
          fields[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
        const message: RawMessage = { status, headers: fields, body: '', at: Date.now() - started, sent };
        if (status >= 100 && status < 200) {
          exchange.interims.push(message);
          exchange.onInterim?.(message);
          continue;
        }
        final = message;
        bodyLength = method === 'HEAD' || status === 204 || status === 304 ? 0 : Number(fields['content-length'] ?? -1);
      }
    };
    socket.on('data', (data: Buffer) => {
      input = Buffer.concat([input, data]);
      parse();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolveDone(final && bodyLength <= input.length ? final : undefined));
  });
  let head = `${method} ${path} HTTP/${version}\r\nHost: 127.0.0.1:${port}\r\nContent-Length: ${body.length}\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  socket.write(`${head}\r\n`);
  void (async () => {
    for (let at = 0; at < body.length && !cut && !socket.destroyed; at += chunk) {
      const piece = body.subarray(at, at + chunk);
      await new Promise<void>((written) => socket.write(piece, () => written()));
      sent += piece.length;
      if (pace > 0) await wait(pace);
    }
  })();
  return exchange;
}

function portOf(srv: ResumableServer): number {
  return Number(new URL(srv.url).port);
}

/** Interims that report progress (104 with Upload-Offset), their offsets in order. */
function progressOf(exchange: RawExchange): number[] {
  return exchange.interims.filter((m) => m.status === 104 && m.headers['upload-offset'] !== undefined).map((m) => Number(m.headers['upload-offset']));
}

function expectOrdered(offsets: number[], final: number): void {
  offsets.forEach((offset, i) => {
    expect(Number.isInteger(offset)).toBe(true);
    if (i > 0) expect(offset).toBeGreaterThanOrEqual(offsets[i - 1]);
    expect(offset).toBeLessThanOrEqual(final);
  });
}

describe('resumable: IETF draft progress (104 with Upload-Offset)', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ interimProgress: { bytes: 128 * KiB, interval: 0 } });
  });
  afterEach(() => srv.close());

  async function create(headers: Record<string, string> = {}) {
    const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', ...headers });
    expect(res.status).toBe(201);
    const path = res.headers.location!;
    return { path, id: path.split('/').pop()!, url: srv.url + path };
  }

  test('an append: 104s in order, offsets non-decreasing, each ≤ the final offset and already in the state file; no Location', async () => {
    const data = randomBytes(2 * MiB + 123);
    const { path, id } = await create({ 'Upload-Length': String(data.length) });
    const exchange = rawRequest(portOf(srv), 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': 0 }, data);
    const recorded: number[] = [];
    // The server runs in this process: when a 104 arrives, the state a restart would read already says at least that.
    exchange.onInterim = () => recorded.push(JSON.parse(readFileSync(join(srv.dir.path, `${id}.json`), 'utf8')).offset);
    const final = await exchange.done;
    expect(final?.status).toBe(204);
    expect(final?.headers['upload-offset']).toBe(String(data.length));
    const offsets = progressOf(exchange);
    expect(offsets.length).toBeGreaterThanOrEqual(4);
    expect(exchange.interims.every((m) => m.status === 104)).toBe(true);
    expectOrdered(offsets, data.length);
    // Rate: at least 128 KiB between two 104s; each one at most what the client had sent when it arrived.
    offsets.forEach((offset, i) => i > 0 && expect(offset - offsets[i - 1]).toBeGreaterThanOrEqual(128 * KiB));
    exchange.interims.forEach((m) => expect(Number(m.headers['upload-offset'])).toBeLessThanOrEqual(m.sent));
    offsets.forEach((offset, i) => expect(recorded[i]).toBeGreaterThanOrEqual(offset));
    for (const m of exchange.interims) {
      expect(m.headers['upload-draft-interop-version']).toBe('8');
      expect(m.headers.location).toBeUndefined(); // "These interim responses MUST NOT include the Location header field"
    }
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(data));
  });

  test('a creation with a body: the first 104 announces Location and limits, the progress ones repeat the same Location', async () => {
    const data = randomBytes(MiB + 5);
    const exchange = rawRequest(portOf(srv), 'POST', '/files', { ...V8, 'Upload-Complete': '?1', 'Content-Type': 'application/octet-stream' }, data);
    const final = await exchange.done;
    expect(final?.status).toBe(201);
    expect(final?.headers['upload-complete']).toBe('?1');
    const [announce, ...progress] = exchange.interims;
    expect(announce.status).toBe(104);
    expect(announce.headers['upload-offset']).toBeUndefined();
    expect(announce.headers['upload-limit']).toMatch(/max-size=/);
    expect(announce.headers.location).toBe(final?.headers.location);
    expect(progress.length).toBeGreaterThanOrEqual(3);
    for (const m of progress) expect(m.headers.location).toBe(announce.headers.location);
    expectOrdered(progressOf(exchange), data.length);
    expect(srv.completed[0].readBack).toBe(sha(data));
  });

  test('a client that cuts after a 104 with offset X resumes at HEAD offset ≥ X, byte-exact', async () => {
    const data = randomBytes(4 * MiB + 7);
    const { path, url } = await create({ 'Upload-Length': String(data.length) });
    const exchange = rawRequest(portOf(srv), 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': 0 }, data, { pace: 10 });
    let acknowledged = -1;
    exchange.onInterim = (m) => {
      const offset = Number(m.headers['upload-offset']);
      if (acknowledged < 0 && offset >= MiB) {
        acknowledged = offset;
        exchange.cut();
      }
    };
    expect(await exchange.done).toBeUndefined();
    expect(acknowledged).toBeGreaterThanOrEqual(MiB);
    expect(acknowledged).toBeLessThan(data.length);
    const head = await request(url, 'HEAD', V8);
    const offset = Number(head.headers['upload-offset']);
    expect(offset).toBeGreaterThanOrEqual(acknowledged);
    expect(head.headers['upload-complete']).toBe('?0');
    const rest = await request(url, 'PATCH', { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': offset }, data.subarray(offset));
    expect(rest.status).toBe(204);
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(srv.completed[0].sha256).toBe(sha(data));
  });

  test('none for tus, none for an all-or-nothing append (Content-Digest), none for HTTP/1.0', async () => {
    const data = randomBytes(MiB);
    const tus = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': data.length });
    const tusExchange = rawRequest(portOf(srv), 'PATCH', tus.headers.location!, { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect((await tusExchange.done)?.status).toBe(204);
    expect(tusExchange.interims).toEqual([]);

    const digest = `sha-256=:${createHash('sha256').update(data).digest('base64')}:`;
    const atomic = await create();
    const atomicExchange = rawRequest(portOf(srv), 'PATCH', atomic.path, { ...V8, ...PARTIAL, 'Upload-Complete': '?0', 'Upload-Offset': 0, 'Content-Digest': digest }, data);
    expect((await atomicExchange.done)?.headers['upload-offset']).toBe(String(data.length));
    expect(atomicExchange.interims).toEqual([]);

    const old = await create();
    const oldExchange = rawRequest(portOf(srv), 'PATCH', old.path, { ...V8, ...PARTIAL, 'Upload-Complete': '?0', 'Upload-Offset': 0, Connection: 'close' }, data, { version: '1.0' });
    expect((await oldExchange.done)?.headers['upload-offset']).toBe(String(data.length));
    expect(oldExchange.interims).toEqual([]);
  });

  test('interimProgress: false and interimResponses: false send none; the time bound spaces them out', async () => {
    const data = randomBytes(MiB);
    for (const options of [{ interimProgress: false as const }, { interimResponses: false }]) {
      await srv.close();
      srv = await startResumable(options);
      const { path } = await create();
      const exchange = rawRequest(portOf(srv), 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?0', 'Upload-Offset': 0 }, data);
      expect((await exchange.done)?.status).toBe(204);
      expect(exchange.interims).toEqual([]);
    }
    await srv.close();
    srv = await startResumable({ interimProgress: { bytes: 0, interval: 150 } });
    const { path } = await create();
    // 1 MiB over ~800 ms: at most one 104 per 150 ms.
    const exchange = rawRequest(portOf(srv), 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?0', 'Upload-Offset': 0 }, data, { chunk: 32 * KiB, pace: 25 });
    expect((await exchange.done)?.status).toBe(204);
    const times = exchange.interims.map((m) => m.at);
    expect(times.length).toBeGreaterThanOrEqual(2);
    expect(times.length).toBeLessThanOrEqual(8);
    times.forEach((t, i) => i > 0 && expect(t - times[i - 1]).toBeGreaterThanOrEqual(140));
    expectOrdered(progressOf(exchange), data.length);
  });
});

describe('resumable: IETF draft progress survives a SIGKILL', () => {
  let child: ChildProcess | undefined;
  afterEach(() => child?.kill('SIGKILL'));

  /** A resumable server over `directory` in its own process (so it can be killed -9); resolves with its port. */
  function startChild(directory: string): Promise<number> {
    const hook = `
      const ts = require(${JSON.stringify(require.resolve('typescript'))});
      require.extensions['.ts'] = (module, filename) => {
        const source = require('node:fs').readFileSync(filename, 'utf8');
        const { outputText } = ts.transpileModule(source, { fileName: filename, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
        module._compile(outputText, filename);
      };
      const express = require('express');
      const { resumable, resumableDiskStore } = require(${JSON.stringify(resolve(__dirname, '../lib/index.ts'))});
      const app = express();
      app.use('/files', resumable({ store: resumableDiskStore({ directory: process.argv[1] }), sweepInterval: 0, interimProgress: { bytes: 256 * 1024, interval: 0 } }));
      const server = app.listen(0, '127.0.0.1', () => process.stdout.write('ready ' + server.address().port + '\\n'));`;
    child = spawn(process.execPath, ['-e', hook, directory], { env: { ...process.env, NODE_OPTIONS: '' }, stdio: ['ignore', 'pipe', 'inherit'] });
    return new Promise((ready, fail) => {
      let out = '';
      child!.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /ready (\d+)/.exec(out);
        if (match) ready(Number(match[1]));
      });
      child!.once('exit', (code) => fail(new Error(`child exited with ${code}`)));
    });
  }

  test('the server is killed -9 right after a 104 with offset X: a new server over the same directory resumes at ≥ X, byte-exact', async () => {
    const dir = tempDir('spool-progress-kill-');
    const data = randomBytes(6 * MiB + 11);
    let srv: ResumableServer | undefined;
    try {
      const port = await startChild(dir.path);
      const created = await request(`http://127.0.0.1:${port}/files`, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': data.length });
      expect(created.status).toBe(201);
      const path = created.headers.location!;
      const exchange = rawRequest(port, 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': 0 }, data, { pace: 10 });
      let acknowledged = -1;
      const killed = new Promise<void>((done) => {
        exchange.onInterim = (m) => {
          const offset = Number(m.headers['upload-offset']);
          if (acknowledged < 0 && offset >= 2 * MiB) {
            acknowledged = offset;
            child!.kill('SIGKILL'); // no chance to record anything more
            exchange.cut();
            done();
          }
        };
      });
      await killed;
      expect(await exchange.done).toBeUndefined();
      srv = await startResumable({}, dir);
      const head = await request(srv.url + path, 'HEAD', V8);
      const offset = Number(head.headers['upload-offset']);
      expect(offset).toBeGreaterThanOrEqual(acknowledged);
      expect(offset).toBeLessThan(data.length);
      const rest = await request(srv.url + path, 'PATCH', { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': offset }, data.subarray(offset));
      expect(rest.status).toBe(204);
      expect(srv.completed).toHaveLength(1);
      expect(srv.completed[0].readBack).toBe(sha(data));
      expect(srv.completed[0].sha256).toBe(sha(data));
    } finally {
      if (srv) await srv.close();
      else dir.remove();
    }
  }, 30_000);
});

describe('resumable: IETF draft progress on the S3 store (one 104 per committed part at most)', () => {
  let client: S3Client;
  let bucket: string;
  useTestBucket((c, b) => {
    client = c;
    bucket = b;
  });

  test('progress 104s carry whole parts the state names; a client that cuts after one resumes at HEAD offset ≥ it, byte-exact', async () => {
    const prefix = `progress-${randomBytes(3).toString('hex')}/`;
    const srv = await startResumable({ store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB' }), interimProgress: { bytes: 0, interval: 0 } });
    try {
      const data = randomBytes(21 * MiB + 1);
      const res = await request(srv.endpoint, 'POST', { ...V8, 'Upload-Complete': '?0', 'Upload-Length': String(data.length) });
      expect(res.status).toBe(201);
      const path = res.headers.location!;
      const url = srv.url + path;
      const exchange = rawRequest(portOf(srv), 'PATCH', path, { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': 0 }, data, { pace: 2 });
      let acknowledged = -1;
      exchange.onInterim = (m) => {
        const offset = Number(m.headers['upload-offset']);
        if (acknowledged < 0 && offset >= 10 * MiB) {
          acknowledged = offset;
          exchange.cut();
        }
      };
      expect(await exchange.done).toBeUndefined();
      const offsets = progressOf(exchange);
      expect(offsets.length).toBeGreaterThanOrEqual(1);
      expectOrdered(offsets, data.length);
      for (const offset of offsets) expect(offset % (5 * MiB)).toBe(0); // only whole committed parts
      expect(acknowledged).toBeGreaterThanOrEqual(10 * MiB);
      const head = await request(url, 'HEAD', V8);
      const offset = Number(head.headers['upload-offset']);
      expect(offset).toBeGreaterThanOrEqual(acknowledged);
      const rest = await request(url, 'PATCH', { ...V8, ...PARTIAL, 'Upload-Complete': '?1', 'Upload-Offset': offset }, data.subarray(offset));
      expect(rest.status).toBe(204);
      expect(srv.completed[0].readBack).toBe(sha(data));
    } finally {
      await srv.close();
    }
  }, 120_000);

  test('a body shorter than one part: no progress 104 (only the creation announcement), byte-exact', async () => {
    const prefix = `progress-${randomBytes(3).toString('hex')}/`;
    const srv = await startResumable({ store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB' }), interimProgress: { bytes: 0, interval: 0 } });
    try {
      const data = randomBytes(4 * MiB + 1);
      const exchange = rawRequest(portOf(srv), 'POST', '/files', { ...V8, 'Upload-Complete': '?1', 'Content-Type': 'application/octet-stream' }, data, { pace: 1 });
      const final = await exchange.done;
      expect(final?.status).toBe(201);
      expect(exchange.interims.map((m) => m.headers['upload-offset'])).toEqual([undefined]);
      expect(srv.completed[0].readBack).toBe(sha(data));
    } finally {
      await srv.close();
    }
  }, 60_000);
});
