/**
 * The README's defaults, checked by behaviour where that is cheap: the limits table (every limit on by
 * default: exactly at the default passes, one past fails with the documented code), `Infinity` lifting a
 * limit, and the spool() options table (threshold, rollover, sha256, charsets; the durations and the
 * budget compared with the options the factory resolves, since waiting 30 s or 5 min is not a test).
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import { DEFAULT_LIMITS, memoryEngine, parseSize, spool, type SpoolOptions, type UploadedFile } from '../lib';
import { resolveOptions } from '../lib/multipart/options';
import { close, echoApp, eventually, jsonErrors, listen } from './helpers/app';
import { BOUNDARY, postChunks, postMultipart, randomData, sha256, type Part } from './helpers/multipart';

const MiB = 1024 * 1024;

const servers: Server[] = [];
afterAll(async () => {
  for (const server of servers) await close(server);
});

/** A server with `spool(options).any()` echoing body and files (memory engine unless options say otherwise). */
async function serve(options: SpoolOptions = {}): Promise<Server> {
  const server = await listen(echoApp(spool({ storage: memoryEngine(), ...options }).any()));
  servers.push(server);
  return server;
}

const fields = (n: number, prefix = 'k'): Part[] => Array.from({ length: n }, (_, i) => ({ name: `${prefix}${i}`, value: String(i) }));
const files = (n: number): Part[] => Array.from({ length: n }, (_, i) => ({ name: 'f', filename: `${i}.bin`, data: Buffer.from([i & 0xff]) }));

describe('the limits table: each default, exactly at it and one past it', () => {
  let server: Server;
  beforeAll(async () => (server = await serve()));

  test('files: 100 per request pass; the 101st → 413 LIMIT_FILE_COUNT', async () => {
    const ok = await postMultipart(server, '/upload', files(100));
    expect(ok.status).toBe(200);
    expect(ok.json.files).toHaveLength(100);
    expect(ok.json.files.map((f: any) => f.originalname)).toEqual(Array.from({ length: 100 }, (_, i) => `${i}.bin`));
    const over = await postMultipart(server, '/upload', files(101));
    expect([over.status, over.json.error.code]).toEqual([413, 'LIMIT_FILE_COUNT']);
  });

  test('fields: 1000 pass; the 1001st → 413 LIMIT_FIELD_COUNT', async () => {
    const ok = await postMultipart(server, '/upload', fields(1000));
    expect(ok.status).toBe(200);
    expect(Object.keys(ok.json.body)).toHaveLength(1000);
    expect(ok.json.body.k999).toBe('999');
    const over = await postMultipart(server, '/upload', fields(1001));
    expect([over.status, over.json.error.code]).toEqual([413, 'LIMIT_FIELD_COUNT']);
  });

  test('parts: 1100 (files + fields) pass — 100 files and 1000 fields at once; with fields lifted, the 1101st part → 413 LIMIT_PART_COUNT', async () => {
    const ok = await postMultipart(server, '/upload', [...fields(1000), ...files(100)]);
    expect(ok.status).toBe(200);
    expect([Object.keys(ok.json.body).length, ok.json.files.length]).toEqual([1000, 100]);
    // Past 1100 parts the other defaults trip first (1001 fields or 101 files), so lift `fields` to reach it.
    const lifted = await serve({ limits: { fields: Infinity } });
    const at = await postMultipart(lifted, '/upload', fields(1100));
    expect(at.status).toBe(200);
    expect(Object.keys(at.json.body)).toHaveLength(1100);
    const over = await postMultipart(lifted, '/upload', fields(1101));
    expect([over.status, over.json.error.code]).toEqual([413, 'LIMIT_PART_COUNT']);
    const mixed = await postMultipart(lifted, '/upload', [...fields(1001), ...files(100)]); // 1101 parts, 100 files
    expect([mixed.status, mixed.json.error.code]).toEqual([413, 'LIMIT_PART_COUNT']);
  });

  test('fieldNameSize: a 200-byte name passes, 201 bytes → 413 LIMIT_FIELD_KEY, counted in bytes, for text fields and file fields', async () => {
    const at = 'n'.repeat(200);
    const past = 'n'.repeat(201);
    const wide = 'é'.repeat(100); // 100 characters, 200 bytes
    const ok = await postMultipart(server, '/upload', [{ name: at, value: 'v' }, { name: wide, value: 'w' }, { name: at, filename: 'a', data: Buffer.from('x') }]);
    expect(ok.status).toBe(200);
    expect(ok.json.body).toEqual({ [at]: 'v', [wide]: 'w' });
    expect(ok.json.files.map((f: any) => f.fieldname)).toEqual([at]);
    for (const parts of [[{ name: past, value: 'v' }], [{ name: `${wide}a`, value: 'w' }], [{ name: past, filename: 'a', data: Buffer.from('x') }]] as Part[][]) {
      const over = await postMultipart(server, '/upload', parts);
      expect([over.status, over.json.error.code]).toEqual([413, 'LIMIT_FIELD_KEY']);
    }
  });

  test("fieldSize: a value of exactly '1MiB' passes, one byte more → 413 LIMIT_FIELD_VALUE", async () => {
    const ok = await postMultipart(server, '/upload', [{ name: 'v', value: 'a'.repeat(MiB) }]);
    expect(ok.status).toBe(200);
    expect(ok.json.body.v).toHaveLength(MiB);
    const over = await postMultipart(server, '/upload', [{ name: 'v', value: 'a'.repeat(MiB + 1) }]);
    expect([over.status, over.json.error.code]).toEqual([413, 'LIMIT_FIELD_VALUE']);
  });
});

describe('"Pass Infinity to lift a limit"', () => {
  test.each([
    ['files', { files: Infinity }, files(101), (json: any) => expect(json.files).toHaveLength(101)],
    ['fields', { fields: Infinity }, fields(1001), (json: any) => expect(Object.keys(json.body)).toHaveLength(1001)],
    ['parts', { fields: Infinity, parts: Infinity }, fields(1101), (json: any) => expect(Object.keys(json.body)).toHaveLength(1101)],
    ['fieldNameSize', { fieldNameSize: Infinity }, [{ name: 'n'.repeat(5000), value: 'v' }], (json: any) => expect(json.body['n'.repeat(5000)]).toBe('v')],
    ['fieldSize', { fieldSize: Infinity }, [{ name: 'v', value: 'a'.repeat(MiB + 1) }], (json: any) => expect(json.body.v).toHaveLength(MiB + 1)],
  ] as [string, SpoolOptions['limits'], Part[], (json: any) => void][])('%s: Infinity accepts a request past its default', async (_name, limits, parts, check) => {
    const server = await serve({ limits });
    const res = await postMultipart(server, '/upload', parts);
    expect(res.status).toBe(200);
    check(res.json);
  });
});

describe('the spool() options table: defaults', () => {
  function readmeTable(heading: RegExp): Map<string, string> {
    const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
    const lines = readme.split('\n');
    const head = lines.findIndex((line) => heading.test(line));
    expect(head).toBeGreaterThanOrEqual(0);
    const rows = new Map<string, string>();
    for (const line of lines.slice(head + 2)) {
      if (!line.startsWith('|')) break;
      const [name, value] = line.split('|').slice(1, 3).map((cell) => cell.trim());
      rows.set(name.replace(/`/g, ''), value);
    }
    return rows;
  }
  /** '`30000`' → 30000, "`'1MiB'`" → 1048576, "`'utf8'`" → 'utf8', '`false`' → false, '100 per request' → 100. */
  const value = (cell: string): unknown => {
    const first = /^`([^`]*)`/.exec(cell)?.[1] ?? cell.split(' ')[0];
    if (first === 'true' || first === 'false') return first === 'true';
    const unquoted = first.replace(/^'(.*)'$/, '$1');
    return parseSize(unquoted) ?? unquoted;
  };

  test('the README limits table is DEFAULT_LIMITS, and what spool() applies when no limits are given', () => {
    const table = readmeTable(/^\| limit \| default \| error \|$/);
    const documented = Object.fromEntries([...table].map(([name, cell]) => [name, value(cell)]));
    expect(documented).toEqual({ fileSize: 1024 ** 3, files: 100, fields: 1000, fieldSize: MiB, fieldNameSize: 200, parts: 1100, headerPairs: 2000 });
    expect({ ...DEFAULT_LIMITS }).toEqual(documented);
    expect(resolveOptions({}).limitsFor({} as never)).toEqual(documented);
  });

  test('durations, memoryBudget, sha256, preservePath and charsets resolve to the README table\'s defaults', () => {
    const table = readmeTable(/^\| option \| default \| meaning \|$/);
    const config = resolveOptions({});
    for (const name of ['idleTimeout', 'requestTimeout', 'admissionTimeout', 'settleTimeout', 'drainTimeout', 'sha256', 'preservePath', 'defCharset', 'defParamCharset'] as const) {
      expect([name, config[name]]).toEqual([name, value(table.get(name)!)]);
    }
    expect([config.idleTimeout, config.requestTimeout]).toEqual([30_000, 300_000]); // "30 s" and "5 min" / "300 s" in Timeouts
    expect(config.budget.limit).toBe(value(table.get('memoryBudget')!));
    expect(spool().memoryBudget.limit).toBe(64 * MiB);
  });

  test("threshold '1MiB' and the default rollover: a file of exactly 1 MiB stays in memory, one byte more goes to a temporary file in os.tmpdir()/express-spool, removed when the response ends; no sha256 unless asked", async () => {
    const upload = spool();
    const seen: { storage: string; size: number; sha256?: string; path?: string; onDisk?: string; buffer?: string }[] = [];
    const app = express();
    app.post('/upload', upload.any(), (req, res) => {
      for (const file of req.files as UploadedFile[]) {
        const { path } = file as UploadedFile & { path?: string };
        seen.push({
          storage: file.storage,
          size: file.size,
          sha256: file.sha256,
          path,
          onDisk: path && existsSync(path) ? sha256(readFileSync(path)) : undefined,
          buffer: (file as UploadedFile & { buffer?: Buffer }).buffer ? sha256((file as UploadedFile & { buffer: Buffer }).buffer) : undefined,
        });
      }
      res.json({ n: seen.length });
    });
    app.use(jsonErrors);
    const server = await listen(app);
    servers.push(server);
    const within = randomData(MiB);
    const past = randomData(MiB + 1);
    const res = await postMultipart(server, '/upload', [{ name: 'a', filename: 'a', data: within }, { name: 'b', filename: 'b', data: past }]);
    expect(res.status).toBe(200);
    const [mem, disk] = seen;
    expect(mem).toEqual({ storage: 'memory', size: MiB, sha256: undefined, path: undefined, onDisk: undefined, buffer: sha256(within) });
    expect(disk).toMatchObject({ storage: 'disk', size: MiB + 1, sha256: undefined, onDisk: sha256(past), buffer: undefined });
    expect(disk.path!.startsWith(join(tmpdir(), 'express-spool') + '/')).toBe(true);
    await eventually(() => expect(existsSync(disk.path!)).toBe(false)); // temporary: gone after the response
  });

  test("defCharset and defParamCharset 'utf8': raw UTF-8 in a field value and in a filename read as UTF-8", async () => {
    const server = await serve();
    const body = Buffer.from(
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\ncafé ☕\r\n` +
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="café.txt"\r\n\r\nx\r\n--${BOUNDARY}--\r\n`,
      'utf8',
    );
    const res = await postChunks(server, '/upload', [body], { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': body.length });
    expect(res.status).toBe(200);
    expect(res.json.body).toEqual({ title: 'café ☕' });
    expect(res.json.files.map((f: any) => f.originalname)).toEqual(['café.txt']);
  });
});
