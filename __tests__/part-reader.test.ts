import type { Server } from 'node:http';
import type { Readable } from 'node:stream';
import express from 'express';
import { memoryEngine, spool } from '../lib';
import { createMultipartParser, type ParserEvents } from '../lib/multipart/multipart-parser';
import { DEFAULT_LIMITS, type ResolvedLimits } from '../lib/multipart/options';
import { close, jsonErrors, listen } from './helpers/app';
import { cutAt, postChunks, seededRandom, sha256 } from './helpers/multipart';
/* eslint-disable @typescript-eslint/no-require-imports */
const multer = require('multer');

// The part layer express-spool runs on @fastify/busboy's Dicer (lib/multipart/multipart-parser.ts): what
// it reports, in which order, however the body is cut into reads, and where it must behave as busboy
// (and so multer) does.

const B = 'PartReaderBoundary';
const CLOSE = `--${B}--\r\n`;
const field = (name: string, value: string, headers = '') =>
  `--${B}\r\nContent-Disposition: form-data; name="${name}"\r\n${headers}\r\n${value}\r\n`;
const file = (name: string, filename: string, data: string, type = 'application/octet-stream') =>
  `--${B}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n${data}\r\n`;

/**
 * Feeds the pieces to a parser, each in its own write after a macrotask (so every stream event due has
 * run), and records what it reports: fields, files (with their bytes), limits, errors, the end.
 */
async function parse(pieces: Buffer[], limits: ResolvedLimits = DEFAULT_LIMITS): Promise<string[]> {
  const seen: string[] = [];
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const events: ParserEvents = {
    onField: (name, value, truncated) => seen.push(`field ${name}=${value}${truncated ? ' (truncated)' : ''}`),
    onFile: (name, stream: Readable, info) => {
      seen.push(`file ${name} ${info.filename} ${info.mimeType}`);
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => seen.push(`bytes ${name} ${Buffer.concat(chunks).toString()}`));
    },
    onLimit: (code) => seen.push(code),
    onError: (err) => {
      seen.push(`error ${err.message}`);
      resolveDone();
    },
    onDone: () => {
      seen.push('done');
      resolveDone();
    },
  };
  const parser = createMultipartParser({ 'content-type': `multipart/form-data; boundary=${B}` }, { limits, preservePath: false }, events);
  for (const piece of pieces) {
    parser.write(piece);
    await new Promise((resolve) => setImmediate(resolve));
  }
  parser.end();
  await done;
  await new Promise((resolve) => setImmediate(resolve));
  return seen;
}

describe('fields and files arrive whole and in order, however the body is cut', () => {
  const values = ['a', 'x'.repeat(3000), 'naïve – ✓', '', 'last one'];
  const body = Buffer.from(values.map((v, i) => field(`f${i}`, v)).join('') + CLOSE);
  const expected = [...values.map((v, i) => `field f${i}=${v}`), 'done'];

  test('in one read', async () => {
    expect(await parse([body])).toEqual(expected);
  });

  test('one byte per read', async () => {
    expect(await parse(cutAt(body, Array.from({ length: body.length }, (_, i) => i)))).toEqual(expected);
  });

  test('the last field complete in one read, its closing boundary in the next', async () => {
    // Dicer does not wait for a part whose last bytes came before its boundary: the field must still be
    // reported before the end (a field missing from req.body was found this way).
    const lastValueEnd = body.length - CLOSE.length - 2;
    expect(await parse(cutAt(body, [lastValueEnd]))).toEqual(expected);
    expect(await parse(cutAt(body, [lastValueEnd + 2]))).toEqual(expected);
    expect(await parse(cutAt(body, [lastValueEnd, lastValueEnd + 2, lastValueEnd + 6]))).toEqual(expected);
  });

  test.each([1, 2, 3, 4, 5, 6, 7, 8])('random cuts, seed %i', async (seed) => {
    const next = seededRandom(seed);
    const offsets: number[] = [];
    for (let at = 0; at < body.length; at += 1 + Math.floor(next() * 700)) offsets.push(at);
    expect(await parse(cutAt(body, offsets))).toEqual(expected);
  });

  test('a field before a file is reported before the file, one byte per read', async () => {
    const mixed = Buffer.from(field('title', 'first') + file('doc', 'a.txt', 'file bytes') + field('after', 'z') + CLOSE);
    const seen = await parse(cutAt(mixed, Array.from({ length: mixed.length }, (_, i) => i)));
    expect(seen).toEqual(['field title=first', 'file doc a.txt application/octet-stream', 'bytes doc file bytes', 'field after=z', 'done']);
  });
});

describe('limits the part layer applies, as busboy does (limits.fileSize is the core\'s: file-tap.test.ts)', () => {
  const limits = (over: Partial<ResolvedLimits>): ResolvedLimits => ({ ...DEFAULT_LIMITS, ...over });

  test('a field value past limits.fieldSize is cut there and flagged', async () => {
    const seen = await parse([Buffer.from(field('t', 'abcdefgh') + CLOSE)], limits({ fieldSize: 3 }));
    expect(seen).toEqual(['field t=abc (truncated)', 'done']);
  });

  test('files, fields and parts past their counts: each limit reported once, the extra parts skipped', async () => {
    const body = Buffer.from(file('a', 'a', '1') + file('b', 'b', '2') + file('c', 'c', '3') + field('x', '1') + field('y', '2') + field('z', '3') + CLOSE);
    expect(await parse([body], limits({ files: 1, fields: 1 }))).toEqual([
      'file a a application/octet-stream',
      'LIMIT_FILE_COUNT',
      'field x=1',
      'LIMIT_FIELD_COUNT',
      'bytes a 1',
      'done',
    ]);
    expect(await parse([body], limits({ parts: 2 }))).toEqual([
      'file a a application/octet-stream',
      'file b b application/octet-stream',
      'LIMIT_PART_COUNT',
      'bytes a 1',
      'bytes b 2',
      'done',
    ]);
  });
});

describe('what a multer app reads, compared with multer itself', () => {
  let servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.map(close));
    servers = [];
  });

  /** Posts `body` to a route using `middleware` and answers what the app sees. */
  async function seenThrough(middleware: express.RequestHandler, body: Buffer) {
    const app = express();
    app.post('/u', middleware, (req, res) => {
      const files = ((req.files as { fieldname: string; originalname: string; mimetype: string; encoding: string; buffer: Buffer }[] | undefined) ?? []).map((f) => ({
        fieldname: f.fieldname,
        originalname: f.originalname,
        mimetype: f.mimetype,
        encoding: f.encoding,
        sha256: sha256(f.buffer),
      }));
      res.json({ body: { ...req.body }, files });
    });
    app.use(jsonErrors);
    const server = await listen(app);
    servers.push(server);
    const response = await postChunks(server, '/u', [body], {
      'content-type': `multipart/form-data; boundary=${B}`,
      'content-length': body.length,
    });
    return { status: response.status, ...response.json };
  }

  const latin1 = (text: string) => Buffer.from(text, 'latin1');
  const cases: [string, Buffer, unknown][] = [
    [
      'a file part without a filename is skipped: an empty file input, or bytes typed application/octet-stream',
      latin1(
        field('plain', 'text') +
          file('empty', '', '') +
          `--${B}\r\nContent-Disposition: form-data; name="blob"\r\nContent-Type: application/octet-stream\r\n\r\nBYTES\r\n` +
          file('kept', 'k.txt', 'K'),
      ),
      { body: { plain: 'text' }, files: [{ fieldname: 'kept', originalname: 'k.txt', mimetype: 'application/octet-stream', encoding: '7bit', sha256: sha256('K') }] },
    ],
    [
      'a file without a Content-Type, and one with parameters and upper case',
      latin1(
        `--${B}\r\nContent-Disposition: form-data; name="a"; filename="a.bin"\r\n\r\nA\r\n` +
          file('b', 'b.txt', 'B', 'Text/Plain; charset=UTF-8') +
          `--${B}\r\nContent-Disposition: form-data; name="c"; filename="c.bin"\r\nContent-Transfer-Encoding: BINARY\r\n\r\nC\r\n`,
      ),
      {
        body: {},
        files: [
          { fieldname: 'a', originalname: 'a.bin', mimetype: 'text/plain', encoding: '7bit', sha256: sha256('A') },
          { fieldname: 'b', originalname: 'b.txt', mimetype: 'text/plain', encoding: '7bit', sha256: sha256('B') },
          { fieldname: 'c', originalname: 'c.bin', mimetype: 'text/plain', encoding: 'binary', sha256: sha256('C') },
        ],
      },
    ],
    [
      'text fields in UTF-8 by default, in the charset their part names otherwise',
      Buffer.concat([
        Buffer.from(field('u', 'café ✓')),
        latin1(field('l', 'café', 'Content-Type: text/plain; charset=ISO-8859-1\r\n')),
        latin1(field('q', Buffer.from('é', 'utf16le').toString('latin1'), 'Content-Type: text/plain; charset="utf-16le"\r\n')),
      ]),
      { body: { u: 'café ✓', l: 'café', q: 'é' }, files: [] },
    ],
  ];

  test('an empty file input on a route that takes no files (`none()`) is not an unexpected file', async () => {
    const sent = latin1(field('name', 'Ada') + file('avatar', '', '') + CLOSE);
    const [ours, theirs] = await Promise.all([
      seenThrough(spool({ storage: memoryEngine() }).none() as express.RequestHandler, sent),
      seenThrough(multer({ storage: multer.memoryStorage() }).none(), sent),
    ]);
    expect(theirs).toEqual({ status: 200, body: { name: 'Ada' }, files: [] });
    expect(ours).toEqual(theirs);
  });

  test.each(cases)('%s', async (_title, parts, expected) => {
    const sent = Buffer.concat([parts, latin1(CLOSE)]);
    const [ours, theirs] = await Promise.all([
      seenThrough(spool({ storage: memoryEngine() }).any() as express.RequestHandler, sent),
      seenThrough(multer({ storage: multer.memoryStorage() }).any(), sent),
    ]);
    expect(theirs).toEqual({ status: 200, ...(expected as object) });
    expect(ours).toEqual(theirs);
  });
});
