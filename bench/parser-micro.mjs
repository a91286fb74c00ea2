#!/usr/bin/env node
// Multipart parser micro-benchmark: busboy 1.x vs @fastify/busboy 3.x, plus a
// native Buffer#indexOf boundary scan as a ceiling.
//
//   node bench/parser-micro.mjs                      # Markdown table on stdout
//   node bench/parser-micro.mjs --json               # JSON on stdout
//   node bench/parser-micro.mjs --reps=7 --sizes=1x256MiB,16384x16KiB \
//        --parsers=busboy,@fastify/busboy --variants=count,sha256
//
// Progress goes to stderr, results to stdout.
//
// Do not force a GC between runs (--gc, needs node --expose-gc) unless you mean
// to: a full GC shrinks V8's young generation, and the many-small-files
// workload then runs ~1.7x slower for both parsers (measured on Node 20), which
// mostly measures GC heuristics rather than the parser.
//
// Run it as several processes, not one long one: busboy's streamsearch `feed`
// loop lands in one of two JIT states per process (≈48 ms or ≈77 ms per 256 MiB
// here) and stays there, even after 20 warm-up runs. Use --fill=text to see
// text-like payloads (base64 alphabet), which move the boundary search costs a lot.
// Each 64 KiB write exceeds the parsers' 16 KiB writable highWaterMark, so every
// chunk waits for 'drain', as it does under req.pipe(parser).
//
// Programmatic use (e.g. to add our middleware's parsing path):
//
//   import { runParserMicro, defaultParsers, formatMarkdown } from './parser-micro.mjs';
//   const { results } = await runParserMicro({
//     reps: 5,
//     sizes: ['1x256MiB'],
//     parsers: { ...defaultParsers, mine: (headers) => makeMyParser(headers) },
//   });
//
// Parser contract: a factory `(headers) => parser`, where parser
//   - has write(chunk) -> boolean, end(), and emits 'drain' (a stream.Writable),
//   - emits 'file' (name, stream, info) where stream is a Readable of the file
//     bytes and info is { filename, encoding, mimeType },
//   - emits 'field' (name, value, info),
//   - emits 'close' or 'finish' (whichever comes first counts) once the body is
//     parsed, and 'error' on failure.
// The harness itself also waits for every file stream's 'end' before it stops
// the clock, so a parser that signals completion early is not favoured.

import { createHash, randomFillSync, randomInt } from 'node:crypto';
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import os from 'node:os';
import busboy from 'busboy';
import FastifyBusboy from '@fastify/busboy';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------
// Parser adapters
// ---------------------------------------------------------------------------

/** busboy 1.x already matches the contract: 'file'(name, stream, info), 'close'. */
export function busboyAdapter(headers) {
  return busboy({ headers });
}

/**
 * @fastify/busboy 3.x emits 'file'(fieldname, stream, filename, encoding, mimeType)
 * and 'field'(name, value, nameTruncated, valueTruncated, encoding, mimeType);
 * it ends with 'finish' (autoDestroy is off, so no 'close'). Rewrite the event
 * arguments in place (no extra stream layer).
 */
export function fastifyBusboyAdapter(headers) {
  const bb = new FastifyBusboy({ headers });
  const emit = bb.emit; // FastifyBusboy.prototype.emit (it has its own 'finish' logic)
  bb.emit = function (ev, a, b, c, d, e, f) {
    if (ev === 'file') return emit.call(this, 'file', a, b, { filename: c, encoding: d, mimeType: e });
    if (ev === 'field') {
      return emit.call(this, 'field', a, b, { nameTruncated: c, valueTruncated: d, encoding: e, mimeType: f });
    }
    return emit.apply(this, arguments);
  };
  return bb;
}

export const defaultParsers = {
  busboy: busboyAdapter,
  '@fastify/busboy': fastifyBusboyAdapter,
};

/** Name used for the Buffer#indexOf ceiling in results. */
export const BASELINE = 'indexOf (ceiling)';

// ---------------------------------------------------------------------------
// Workloads / bodies
// ---------------------------------------------------------------------------

const UNITS = { B: 1, KIB: KiB, MIB: MiB, GIB: 1024 * MiB, KB: 1e3, MB: 1e6, GB: 1e9 };

/** "16384x16KiB" -> { name, files: 16384, fileSize: 16384 } */
export function parseSize(spec) {
  if (typeof spec === 'object' && spec) {
    const { files, fileSize } = spec;
    if (!(files > 0 && fileSize >= 0)) throw new Error(`bad size spec ${JSON.stringify(spec)}`);
    return { name: spec.name ?? `${files}x${fmtBytes(fileSize)}`, files, fileSize };
  }
  const m = /^\s*(\d+)\s*[x×]\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(spec));
  if (!m) throw new Error(`bad size spec "${spec}" (want e.g. 4x64MiB)`);
  const unit = UNITS[(m[3] || 'B').toUpperCase()];
  if (!unit) throw new Error(`bad unit in "${spec}"`);
  return { name: String(spec).trim(), files: Number(m[1]), fileSize: Math.round(Number(m[2]) * unit) };
}

export const DEFAULT_SIZES = ['1x256MiB', '16384x16KiB', '4x64MiB'];

function fmtBytes(n) {
  if (n % MiB === 0) return `${n / MiB}MiB`;
  if (n % KiB === 0) return `${n / KiB}KiB`;
  return `${n}B`;
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
function browserBoundary() {
  let s = '----WebKitFormBoundary';
  for (let i = 0; i < 16; i++) s += ALNUM[randomInt(ALNUM.length)];
  return s;
}

/**
 * Build one multipart/form-data body, browser style: a text field, the files,
 * another text field. File payloads are random bytes written in place, so the
 * whole body is a single Buffer and files are views into it.
 */
export function buildBody({ files, fileSize }, fill = 'random') {
  if (fill !== 'random' && fill !== 'text') throw new Error(`unknown fill ${fill}`);
  const boundary = browserBoundary();
  const dash = `--${boundary}`;
  const fields = [
    ['title', 'parser micro-benchmark upload'],
    ['description', 'naïve – UTF-8 text field ✓'],
  ];
  const fieldPart = ([name, value]) =>
    `${dash}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;
  const fileHead = (i) =>
    `${dash}\r\nContent-Disposition: form-data; name="file"; filename="upload-${String(i).padStart(6, '0')}.bin"\r\n` +
    'Content-Type: application/octet-stream\r\n\r\n';
  const head0 = Buffer.from(fieldPart(fields[0]));
  const tail = Buffer.from(`${fieldPart(fields[1])}${dash}--\r\n`);

  let total = head0.length + tail.length;
  for (let i = 0; i < files; i++) total += Buffer.byteLength(fileHead(i)) + fileSize + 2;

  const body = Buffer.allocUnsafe(total);
  const fileOffsets = new Array(files);
  let off = head0.copy(body, 0);
  for (let i = 0; i < files; i++) {
    off += body.write(fileHead(i), off, 'latin1');
    fileOffsets[i] = off;
    randomFillSync(body, off, fileSize);
    if (fill === 'text') toBase64Alphabet(body, off, off + fileSize);
    off += fileSize;
    off += body.write('\r\n', off, 'latin1');
  }
  off += tail.copy(body, off);
  if (off !== total) throw new Error(`body size mismatch ${off} != ${total}`);

  // A random payload containing the delimiter would break verification; the
  // odds are ~2^-350 but checking is cheap relative to everything else.
  const delim = Buffer.from(`\r\n${dash}`);
  let n = 0;
  for (let p = body.indexOf(delim); p !== -1; p = body.indexOf(delim, p + 1)) n++;
  if (n !== files + fields.length) throw new Error(`boundary occurs ${n} times, expected ${files + fields.length}`);

  return {
    body,
    boundary,
    headers: {
      'content-type': `multipart/form-data; boundary=${boundary}`,
      'content-length': String(body.length),
    },
    files,
    fileSize,
    fileOffsets,
    fields,
    expectedDelimiters: n,
    digests: null, // filled lazily for the sha256 variant
  };
}

// 'text' payloads: random bytes mapped onto the base64 alphabet, i.e. what
// base64/CSV/JSON-ish uploads look like to a boundary search. These bytes
// overlap the boundary's random [A-Za-z0-9] tail, so Boyer-Moore-Horspool
// skips get shorter than with uniformly random binary.
const B64 = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');
function toBase64Alphabet(buf, from, to) {
  for (let i = from; i < to; i++) buf[i] = B64[buf[i] & 63];
}

function expectedDigests(w) {
  if (!w.digests) {
    w.digests = w.fileOffsets.map((o) =>
      createHash('sha256').update(w.body.subarray(o, o + w.fileSize)).digest('hex'));
  }
  return w.digests;
}

export function chunkify(body, chunkSize) {
  const chunks = [];
  for (let o = 0; o < body.length; o += chunkSize) chunks.push(body.subarray(o, o + chunkSize));
  return chunks;
}

// ---------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------

/**
 * Feed `chunks` to a fresh parser, consume all file streams, resolve with what
 * was seen. variant: 'count' (byte counting) or 'sha256' (hash every chunk).
 */
export function parseOnce(factory, w, chunks, variant) {
  return new Promise((resolve, reject) => {
    const hash = variant === 'sha256';
    const seenFiles = [];
    const seenFields = [];
    let pending = 1; // the parser itself + one per open file stream
    let failed = false;
    const fail = (err) => {
      if (failed) return;
      failed = true;
      reject(err);
    };
    const settle = () => {
      if (--pending === 0 && !failed) resolve({ files: seenFiles, fields: seenFields });
    };

    let parser;
    try {
      parser = factory(w.headers);
    } catch (err) {
      fail(err);
      return;
    }
    parser.on('error', fail);
    parser.on('field', (name, value) => seenFields.push([name, value]));
    parser.on('file', (name, stream, info) => {
      pending++;
      const rec = { name, filename: info?.filename, bytes: 0, sha256: null };
      seenFiles.push(rec);
      const h = hash ? createHash('sha256') : null;
      stream.on('error', fail);
      if (h) {
        stream.on('data', (c) => {
          rec.bytes += c.length;
          h.update(c);
        });
      } else {
        stream.on('data', (c) => {
          rec.bytes += c.length;
        });
      }
      stream.on('end', () => {
        if (h) rec.sha256 = h.digest('hex');
        settle();
      });
    });
    let doneOnce = false;
    const done = () => {
      if (doneOnce) return;
      doneOnce = true;
      settle();
    };
    parser.on('close', done);
    parser.on('finish', done);

    (async () => {
      for (let i = 0; i < chunks.length; i++) {
        if (failed) return;
        if (!parser.write(chunks[i])) await drainOrError(parser);
      }
      parser.end();
    })().catch(fail);
  });
}

function drainOrError(stream) {
  // events.once rejects if 'error' is emitted first.
  return once(stream, 'drain');
}

/** Native-search ceiling: count delimiters with Buffer#indexOf, chunk by chunk. */
function baselineOnce(w, chunks, variant) {
  const needle = Buffer.from(`\r\n--${w.boundary}`);
  const k = needle.length - 1;
  const seam = Buffer.alloc(2 * k);
  const h = variant === 'sha256' ? createHash('sha256') : null;
  let matches = 0;
  let prev = null;
  for (const c of chunks) {
    // delimiters straddling the previous chunk and this one
    if (prev && prev.length >= k && c.length >= k) {
      prev.copy(seam, 0, prev.length - k);
      c.copy(seam, k, 0, k);
      if (seam.indexOf(needle) !== -1) matches++;
    }
    for (let p = c.indexOf(needle); p !== -1; p = c.indexOf(needle, p + needle.length)) matches++;
    if (h) h.update(c);
    prev = c;
  }
  if (h) h.digest();
  return matches;
}

function verify(w, seen, variant, label) {
  const errs = [];
  if (seen.files.length !== w.files) errs.push(`files: got ${seen.files.length}, want ${w.files}`);
  const digests = variant === 'sha256' ? expectedDigests(w) : null;
  for (let i = 0; i < seen.files.length && errs.length < 5; i++) {
    const f = seen.files[i];
    if (f.bytes !== w.fileSize) errs.push(`file #${i}: ${f.bytes} bytes, want ${w.fileSize}`);
    if (f.filename !== `upload-${String(i).padStart(6, '0')}.bin`) errs.push(`file #${i}: filename ${f.filename}`);
    if (digests && f.sha256 !== digests[i]) errs.push(`file #${i}: sha256 mismatch`);
  }
  const want = JSON.stringify(w.fields);
  const got = JSON.stringify(seen.fields);
  if (got !== want) errs.push(`fields: got ${got}, want ${want}`);
  if (errs.length) throw new Error(`${label}: verification failed:\n  ${errs.join('\n  ')}`);
}

function cpuMs(start) {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e3;
}

async function timed(fn, forceGc) {
  if (forceGc) globalThis.gc();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const out = await fn();
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  return { ms, cpuMs: cpuMs(c0), out };
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

/**
 * @param {object} [opts]
 * @param {number} [opts.reps=5]            measured repetitions per (workload, variant, parser)
 * @param {number} [opts.warmup=1]          unmeasured runs per (workload, variant, parser) first
 * @param {Array<string|{files:number,fileSize:number,name?:string}>} [opts.sizes]
 *        workloads, e.g. ['1x256MiB', '16384x16KiB', '4x64MiB']
 * @param {Record<string,(headers:object)=>any>} [opts.parsers=defaultParsers]
 * @param {Array<'count'|'sha256'>} [opts.variants=['count','sha256']]
 * @param {boolean} [opts.baseline=true]    include the Buffer#indexOf ceiling
 * @param {number} [opts.chunkSize=65536]
 * @param {'random'|'text'} [opts.fill='random'] file payload bytes: uniform random, or base64-alphabet text
 * @param {boolean} [opts.gc=false]        force a full GC before every run (needs --expose-gc)
 * @param {(msg:string)=>void} [opts.log]   progress sink (default: stderr)
 */
export async function runParserMicro(opts = {}) {
  const {
    reps = 5,
    warmup = 1,
    sizes = DEFAULT_SIZES,
    parsers = defaultParsers,
    variants = ['count', 'sha256'],
    baseline = true,
    chunkSize = 64 * KiB,
    gc = false,
    fill = 'random',
    log = (m) => process.stderr.write(`${m}\n`),
  } = opts;
  if (gc && typeof globalThis.gc !== 'function') throw new Error('gc: true needs node --expose-gc');
  const names = Object.keys(parsers);
  if (!names.length) throw new Error('no parsers');
  const contenders = baseline ? [...names, BASELINE] : names;

  const results = [];
  for (const spec of sizes) {
    const size = parseSize(spec);
    const tb = Date.now();
    let w = buildBody(size, fill);
    const chunks = chunkify(w.body, chunkSize);
    if (variants.includes('sha256')) expectedDigests(w);
    log(`[${size.name}] body ${(w.body.length / MiB).toFixed(1)} MiB, ${chunks.length} chunks, boundary ${w.boundary} (built in ${Date.now() - tb} ms)`);

    const samples = new Map(); // `${variant}\0${name}` -> [{ms, cpuMs}]
    const runOne = async (variant, name, record) => {
      let r;
      if (name === BASELINE) {
        r = await timed(async () => baselineOnce(w, chunks, variant), gc);
        if (r.out !== w.expectedDelimiters) {
          throw new Error(`${BASELINE}: found ${r.out} delimiters, want ${w.expectedDelimiters}`);
        }
      } else {
        r = await timed(() => parseOnce(parsers[name], w, chunks, variant), gc);
        verify(w, r.out, variant, `${name} [${size.name}/${variant}]`);
      }
      if (!record) return;
      const key = `${variant}\0${name}`;
      if (!samples.has(key)) samples.set(key, []);
      samples.get(key).push({ ms: r.ms, cpuMs: r.cpuMs });
    };

    for (let i = 0; i < warmup; i++) {
      for (const variant of variants) for (const name of contenders) await runOne(variant, name, false);
    }
    for (let rep = 0; rep < reps; rep++) {
      // Interleave contenders, rotating the start each rep (A B C, B C A, C A B, ...)
      // so slow drift on a noisy box does not systematically hit one of them.
      const order = contenders.map((_, i) => contenders[(i + rep) % contenders.length]);
      for (const variant of variants) {
        for (const name of order) await runOne(variant, name, true);
      }
      log(`[${size.name}] rep ${rep + 1}/${reps} done`);
    }

    for (const variant of variants) {
      const rows = contenders.map((name) => summarize(samples.get(`${variant}\0${name}`), w.body.length));
      const fastest = Math.min(...contenders.map((n, i) => (n === BASELINE ? Infinity : rows[i].medianMs)));
      const base = baseline ? rows[contenders.indexOf(BASELINE)] : null;
      contenders.forEach((name, i) => {
        results.push({
          workload: size.name,
          files: size.files,
          fileSize: size.fileSize,
          bodyBytes: w.body.length,
          variant,
          parser: name,
          ...rows[i],
          ratioToFastest: name === BASELINE ? null : rows[i].medianMs / fastest,
          pctOfBaseline: base && name !== BASELINE ? (100 * base.medianMs) / rows[i].medianMs : null,
        });
      });
    }
    w = null; // let the body go before building the next one
    chunks.length = 0;
  }

  return {
    meta: {
      node: process.version,
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      cpu: os.cpus()[0]?.model,
      cpus: os.cpus().length,
      reps,
      warmup,
      chunkSize,
      fill,
      variants,
      parsers: names,
      forcedGc: gc,
      mb: '1 MB = 1e6 bytes of request body (headers + payload)',
      date: new Date().toISOString(),
    },
    results,
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarize(samples, bytes) {
  const ms = samples.map((s) => s.ms);
  const mbps = ms.map((t) => bytes / 1e6 / (t / 1e3));
  return {
    samplesMs: ms.map((t) => +t.toFixed(2)),
    medianMs: median(ms),
    minMs: Math.min(...ms),
    maxMs: Math.max(...ms),
    medianMBps: median(mbps),
    minMBps: Math.min(...mbps),
    maxMBps: Math.max(...mbps),
    medianCpuMs: median(samples.map((s) => s.cpuMs)),
  };
}

export function formatMarkdown({ meta, results }) {
  const f0 = (x) => x.toFixed(0);
  const lines = [
    `Node ${meta.node}, ${meta.cpus}× ${meta.cpu}; ${meta.reps} reps (+${meta.warmup} warm-up), ` +
      `${meta.chunkSize / KiB} KiB chunks, ${meta.fill} payload${meta.forcedGc ? ', forced GC before each run' : ''}. MB = 10^6 B of body.`,
    '',
    '| workload | variant | parser | median MB/s | min–max MB/s | median ms | min–max ms | median CPU ms | vs fastest | % of indexOf |',
    '|---|---|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.workload} | ${r.variant} | ${r.parser} | ${f0(r.medianMBps)} | ${f0(r.minMBps)}–${f0(r.maxMBps)} | ` +
        `${r.medianMs.toFixed(1)} | ${r.minMs.toFixed(1)}–${r.maxMs.toFixed(1)} | ${f0(r.medianCpuMs)} | ` +
        `${r.ratioToFastest == null ? '—' : `${r.ratioToFastest.toFixed(2)}×`} | ` +
        `${r.pctOfBaseline == null ? '—' : `${r.pctOfBaseline.toFixed(0)}%`} |`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

function parseArgs(argv) {
  const o = {};
  for (const a of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unknown argument ${a}`);
    const [, k, v] = m;
    const list = () => String(v).split(',').map((s) => s.trim()).filter(Boolean);
    switch (k) {
      case 'json': o.json = true; break;
      case 'reps': o.reps = Number(v); break;
      case 'warmup': o.warmup = Number(v); break;
      case 'sizes': o.sizes = list(); break;
      case 'variants': o.variants = list(); break;
      case 'chunk': o.chunkSize = parseSize(`1x${v}`).fileSize; break;
      case 'no-baseline': o.baseline = false; break;
      case 'gc': o.gc = true; break;
      case 'fill': o.fill = v; break;
      case 'parsers': {
        o.parsers = {};
        for (const n of list()) {
          if (!defaultParsers[n]) throw new Error(`unknown parser ${n} (have: ${Object.keys(defaultParsers).join(', ')})`);
          o.parsers[n] = defaultParsers[n];
        }
        break;
      }
      case 'help':
        process.stdout.write('usage: node bench/parser-micro.mjs [--json] [--reps=5] [--warmup=1] ' +
          '[--sizes=1x256MiB,16384x16KiB,4x64MiB] [--parsers=busboy,@fastify/busboy] ' +
          '[--variants=count,sha256] [--chunk=64KiB] [--no-baseline] [--fill=random|text] [--gc]\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown option --${k}`);
    }
  }
  for (const v of o.variants ?? []) if (v !== 'count' && v !== 'sha256') throw new Error(`unknown variant ${v}`);
  return o;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { json, ...opts } = parseArgs(process.argv.slice(2));
  const out = await runParserMicro(opts);
  process.stdout.write(json ? `${JSON.stringify(out, null, 2)}\n` : `${formatMarkdown(out)}\n`);
}
