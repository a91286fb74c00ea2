import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import request from 'supertest';
import { diskEngine, memoryEngine, spool, type SpoolOptions, type StorageEngine } from '../lib';
import { close, echoApp, eventually, listen, tempDir } from './helpers/app';

// Inputs behind public advisories against upload parsers, each answered with a typed 4xx (or handled
// safely where the input is legal), never a crash, never a leftover file.

const dir = tempDir();
afterAll(() => dir.remove());
const B = 'HostileBoundary123';

const upload = (options: SpoolOptions = {}) => spool({ threshold: 0, rollover: diskEngine({ directory: dir.path }), ...options });
const send = (body: Buffer | string, options: SpoolOptions = {}, contentType = `multipart/form-data; boundary=${B}`) =>
  request(echoApp(upload(options).any())).post('/upload').set('content-type', contentType).send(Buffer.from(body));
const part = (disposition: string, data = 'abc', extraHeaders = '') =>
  `--${B}\r\nContent-Disposition: form-data; ${disposition}\r\n${extraHeaders}\r\n${data}\r\n`;
const end = `--${B}--\r\n`;

afterEach(() => expect(dir.files()).toEqual([]));

describe('rejected with a typed 4xx', () => {
  test.each([
    ['folded header, leading space (busboy/dicer CVE-2022-24434)', `--${B}\r\n Content-Disposition: form-data; name="a"\r\n\r\nx\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['folded header, leading tab', `--${B}\r\n\tContent-Disposition: form-data; name="a"\r\n\r\nx\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['part header directly followed by the closing boundary (multer CVE-2025-47944)', `--${B}\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['file part with an empty field name (multer CVE-2025-48997)', part('name=""; filename="a"') + end, 400, 'MISSING_FIELD_NAME'],
    ['file part with no field name', part('filename="a"') + end, 400, 'MISSING_FIELD_NAME'],
    ['text field with no name', part('foo="bar"') + end, 400, 'MISSING_FIELD_NAME'],
    ['header line without a colon', `--${B}\r\nContent-Disposition form-data\r\n\r\nx\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['part without Content-Disposition', `--${B}\r\nContent-Type: text/plain\r\n\r\nx\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['Content-Disposition that is not form-data', `--${B}\r\nContent-Disposition: attachment; name="a"\r\n\r\nx\r\n${end}`, 400, 'MALFORMED_MULTIPART'],
    ['oversized part header line (20 KB)', part('name="f"; filename="a"', 'abc', `X-Big: ${'y'.repeat(20_000)}\r\n`) + end, 400, 'MALFORMED_MULTIPART'],
    ['a huge number of part headers', part('name="f"; filename="a"', 'abc', 'X-A: b\r\n'.repeat(5000)) + end, 400, 'MALFORMED_MULTIPART'],
    ['truncated mid-file', part('name="f"; filename="a"', 'x'.repeat(10_000)).slice(0, -100), 400, 'MALFORMED_MULTIPART'],
    ['no closing boundary', part('name="f"; filename="a"'), 400, 'MALFORMED_MULTIPART'],
    ['LF-only line endings', (part('name="f"; filename="a"') + end).replace(/\r\n/g, '\n'), 400, 'MALFORMED_MULTIPART'],
    ['empty body', '', 400, 'MALFORMED_MULTIPART'],
    ['JSON sent as multipart', '{"a":1}', 400, 'MALFORMED_MULTIPART'],
  ])('%s', async (_label, body, status, code) => {
    const res = await send(body);
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });

  test.each([
    ['missing boundary', 'multipart/form-data', 400, 'MALFORMED_MULTIPART'],
    ['empty boundary', 'multipart/form-data; boundary=', 400, 'MALFORMED_MULTIPART'],
    ['boundary longer than 70 characters (RFC 2046)', `multipart/form-data; boundary=${'b'.repeat(71)}`, 400, 'MALFORMED_MULTIPART'],
    ['multipart/mixed', `multipart/mixed; boundary=${B}`, 415, 'UNSUPPORTED_CONTENT_TYPE'],
  ])('%s', async (_label, contentType, status, code) => {
    const res = await send(part('name="f"; filename="a"') + end, {}, contentType);
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
  });

  test('a malformed body that errors a file stream before anyone listens (multer CVE-2025-7338)', async () => {
    // The async filter keeps the file stream unconsumed while the body ends early.
    const res = await send(part('name="f"; filename="a"', 'x'.repeat(50_000)).slice(0, -200), {
      fileFilter: () => new Promise((resolve) => setTimeout(() => resolve(true), 50)),
    });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('MALFORMED_MULTIPART');
  });

  test('an error while an async fileFilter is pending stores nothing (multer CVE-2026-3304)', async () => {
    // A disk engine that records every store() call: "removed afterwards" would still show up here.
    const disk = diskEngine({ directory: dir.path });
    const storeCalls: string[] = [];
    const counting: StorageEngine = {
      name: 'counting-disk',
      store: (stream, file, context) => {
        storeCalls.push(file.originalname);
        return disk.store(stream, file, context);
      },
    };
    // The filter's verdict (accept) is only given after the client has its error answer.
    let filtered = 0;
    let accept!: (verdict: boolean) => void;
    const verdict = new Promise<boolean>((resolve) => (accept = resolve));
    const res = await request(echoApp(spool({ storage: counting, fileFilter: () => (filtered++, verdict), limits: { files: 1 } }).any()))
      .post('/upload')
      .set('content-type', `multipart/form-data; boundary=${B}`)
      .send(Buffer.from(part('name="ok"; filename="a"', 'x'.repeat(10_000)) + part('name="other"; filename="b"') + end));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('LIMIT_FILE_COUNT');
    expect(filtered).toBe(1); // the first file reached the filter, and the filter was still pending
    accept(true);
    await verdict;
    await new Promise((r) => setTimeout(r, 50)); // room for a late store() to start writing
    expect(storeCalls).toEqual([]);
    expect(dir.files()).toEqual([]);
  });

  test('an error after 30,000 small files in one request: all removed, no stack overflow (multer CVE-2026-3520)', async () => {
    const files = 30_000;
    const body = Buffer.from(part('name="f"; filename="a"', 'x').repeat(files) + part('name="unexpected"; filename="z"') + end);
    const disk = 2_000; // the first ones on disk, the rest in memory: both kinds of cleanup at scale
    let stored = 0;
    const onDisk = diskEngine({ directory: dir.path });
    const inMemory = memoryEngine();
    const options: SpoolOptions = {
      storage: { name: 'mixed', store: (stream, file, context) => (stored++ < disk ? onDisk : inMemory).store(stream, file, context) },
      limits: { files: files + 10, parts: files + 10 },
    };
    const res = await request(echoApp(spool(options).fields([{ name: 'f' }])))
      .post('/upload')
      .set('content-type', `multipart/form-data; boundary=${B}`)
      .send(body);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('LIMIT_UNEXPECTED_FILE');
    expect(stored).toBe(files);
  }, 120_000);
});

describe('handled safely', () => {
  test.each(['__proto__[polluted]', 'constructor[prototype][polluted]', '__proto__', 'a[__proto__][polluted]', 'x[constructor]'])(
    'prototype pollution through field name %s: 400 INVALID_FIELD_NAME, Object.prototype untouched (CVE-2020-7699 and kin)',
    async (name) => {
      const res = await send(part(`name="${name}"`, 'yes') + end);
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('INVALID_FIELD_NAME');
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
    },
  );

  test('harmless names that shadow Object methods, and deep nesting, land as plain data', async () => {
    const names = ['hasOwnProperty', 'toString', 'a[b][c][d][e][f][g][h][i][j][k]', 'x[y]'];
    const res = await send(names.map((n) => part(`name="${n}"`, 'yes')).join('') + end);
    expect(res.status).toBe(200);
    expect(res.body.body).toEqual({
      hasOwnProperty: 'yes',
      toString: 'yes',
      'a[b][c][d][e][f][g][h][i][j][k]': 'yes', // deeper than 8 levels: kept verbatim, not nested
      x: { y: 'yes' },
    });
  });

  test('req.body has no prototype, so field names cannot shadow its methods', async () => {
    let proto: unknown = 'unset';
    const app = echoApp(upload().none(), (req: any, _res, next) => {
      proto = Object.getPrototypeOf(req.body);
      next();
    });
    await request(app).post('/upload').field('hasOwnProperty', 'x').expect(200);
    expect(proto).toBeNull();
  });

  test.each([
    ['path traversal', '../../etc/passwd', 'passwd'],
    ['absolute path', '/etc/passwd', 'passwd'],
    ['Windows path', 'C:\\\\Windows\\\\win.ini', 'win.ini'],
    ['NUL byte', 'a\u0000b.txt', 'a\u0000b.txt'],
    ['10,000 characters', 'n'.repeat(10_000), 'n'.repeat(10_000)],
    ['UTF-8', 'héllo €.txt', 'héllo €.txt'],
  ])('filename: %s never becomes a path; originalname is reported', async (_label, filename, reported) => {
    const res = await send(part(`name="f"; filename="${filename}"`) + end, { rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }) });
    expect(res.status).toBe(200);
    const [file] = res.body.files;
    expect(file.originalname).toBe(reported);
    expect(dirname(file.path)).toBe(dir.path);
    expect(file.filename).toMatch(/^[0-9a-f-]{36}$/);
    await eventually(() => expect(existsSync(file.path)).toBe(false));
  });

  test('filename*= (RFC 5987) is decoded and wins over a plain filename sent with it (RFC 6266)', async () => {
    const res = await send(
      part(`name="f"; filename*=UTF-8''%E2%82%AC%20rates.txt`) + part(`name="g"; filename="plain.txt"; filename*=UTF-8''other.txt`) + end,
      { rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }) },
    );
    expect(res.body.files.map((f: any) => f.originalname)).toEqual(['€ rates.txt', 'other.txt']);
    await eventually(() => expect(dir.files()).toEqual([]));
  });

  test('non-UTF-8 filename bytes are replaced, not passed through raw', async () => {
    const body = Buffer.concat([Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="`), Buffer.from([0xe9, 0xff, 0x41]), Buffer.from(`"\r\n\r\nabc\r\n${end}`)]);
    const res = await send(body, { rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }) });
    expect(res.status).toBe(200);
    expect(res.body.files[0].originalname).toBe('\uFFFD\uFFFDA');
    await eventually(() => expect(dir.files()).toEqual([]));
  });

  test('megabytes of CR/LF before the first boundary (python-multipart CVE-2024-53981) parse in linear time', async () => {
    const started = Date.now();
    const res = await send('\r\n'.repeat(4 * 1024 * 1024) + part('name="a"', 'ok') + end);
    expect(res.status).toBe(200);
    expect(res.body.body).toEqual({ a: 'ok' });
    expect(Date.now() - started).toBeLessThan(10_000); // a quadratic scan would take minutes
  });

  test('junk after the closing boundary (the RFC 2046 epilogue) is ignored', async () => {
    const res = await send(part('name="a"', 'ok') + end + 'junk'.repeat(250_000));
    expect(res.status).toBe(200);
    expect(res.body.body).toEqual({ a: 'ok' });
  });

  describe('Content-Length that lies', () => {
    async function raw(headers: string, body: string, idleTimeout = 500): Promise<string> {
      const server = await listen(echoApp(upload({ idleTimeout, drainTimeout: 100 }).any()));
      try {
        const socket = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
        let answer = '';
        socket.on('data', (d) => (answer += d));
        socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${B}\r\n${headers}\r\n${body}`);
        await eventually(() => expect(answer).toMatch(/^HTTP\/1.1 \d{3}/), 5000);
        socket.destroy();
        return answer;
      } finally {
        await close(server);
      }
    }

    test('negative → 400 from the HTTP parser', async () => {
      expect(await raw('Content-Length: -5\r\n', 'x')).toMatch(/^HTTP\/1.1 400/);
    });

    test('larger than the body (client then waits) → 408 after idleTimeout', async () => {
      expect(await raw('Content-Length: 100000\r\n', part('name="f"; filename="a"'))).toMatch(/^HTTP\/1.1 408/);
    });

    test('smaller than the body → 400 (the body is cut where the length says)', async () => {
      const body = part('name="f"; filename="a"', 'x'.repeat(1000)) + end;
      expect(await raw(`Content-Length: ${body.length - 500}\r\n`, body)).toMatch(/^HTTP\/1.1 400/);
      // The 400 may be Node's own answer to the 500 bytes past the length (parsed as a next request) and
      // arrive while the cut upload is still being cleaned up: its partial file must go, soon after.
      await eventually(() => expect(dir.files()).toEqual([]));
    });
  });
});
