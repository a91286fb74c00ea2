#!/usr/bin/env node
// Parser micro-benchmark with express-spool's own parsing path added (no network):
// bench/parser-micro.mjs's harness, its busboy and @fastify/busboy adapters, plus
//   express-spool (sha256 off)  — the real middleware, hashing off
//   express-spool (sha256 on)   — the real middleware, default settings (hashes every file)
// All fed the same in-memory body in 64 KiB chunks.
//
//   node bench/micro.mjs [--reps=5] [--sizes=1x256MiB,16384x16KiB] [--json]
//
// Needs the built library (npm run build). Progress on stderr, results on stdout.

import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { runParserMicro, defaultParsers, buildBody, formatMarkdown } from './parser-micro.mjs';
import { spoolPathAdapter } from './lib/spool-path.mjs';

export const SPOOL_NOHASH = 'express-spool (sha256 off)';
export const SPOOL_HASH = 'express-spool (sha256 on)';

/** Checks that the adapters really run the middleware: files, sizes and the library's own sha256. */
async function selfCheck() {
  for (const sha256 of [false, true]) {
    const factory = spoolPathAdapter({ sha256 });
    const w = buildBody({ files: 3, fileSize: 300 * 1024 + 7 });
    const parser = factory(w.headers);
    const seen = [];
    parser.on('file', (name, stream) => {
      let n = 0;
      stream.on('data', (c) => (n += c.length));
      stream.on('end', () => seen.push(n));
    });
    const finished = once(parser, 'finish');
    for (let o = 0; o < w.body.length; o += 65536) {
      if (!parser.write(w.body.subarray(o, o + 65536))) await once(parser, 'drain');
    }
    parser.end();
    await finished;
    const files = parser.lastFiles;
    if (files.length !== 3 || seen.length !== 3 || seen.some((n) => n !== w.fileSize)) {
      throw new Error(`spool path self-check failed: ${files.length} files, sizes ${seen}`);
    }
    files.forEach((f, i) => {
      const want = createHash('sha256').update(w.body.subarray(w.fileOffsets[i], w.fileOffsets[i] + w.fileSize)).digest('hex');
      if (f.size !== w.fileSize) throw new Error(`spool path self-check: size ${f.size}`);
      if (sha256 ? f.sha256 !== want : f.sha256 !== undefined) throw new Error(`spool path self-check: sha256 ${f.sha256}`);
    });
  }
}

export async function runMicro({ reps = 5, sizes = ['1x256MiB'], warmup = 1, log } = {}) {
  await selfCheck();
  return runParserMicro({
    reps,
    warmup,
    sizes,
    chunkSize: 64 * 1024,
    variants: ['count', 'sha256'],
    parsers: {
      ...defaultParsers,
      [SPOOL_NOHASH]: spoolPathAdapter({ sha256: false }),
      [SPOOL_HASH]: spoolPathAdapter({ sha256: true }),
    },
    log,
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = Object.fromEntries(
    process.argv.slice(2).map((a) => {
      const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
      if (!m) throw new Error(`unknown argument ${a}`);
      return [m[1], m[2] ?? true];
    }),
  );
  const out = await runMicro({
    reps: args.reps ? Number(args.reps) : 5,
    sizes: args.sizes ? String(args.sizes).split(',') : ['1x256MiB'],
  });
  process.stdout.write(args.json ? `${JSON.stringify(out)}\n` : `${formatMarkdown(out)}\n`);
}
