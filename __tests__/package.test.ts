import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

// Packs the library as npm would publish it, installs the tarball into a fresh app (offline, from npm's
// cache), and runs a real upload through it from CommonJS and from ESM.
const root = resolve(__dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'spool-pack-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const run = (cmd: string, args: string[], cwd: string) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

let tarball: string;
beforeAll(() => {
  const out = run('npm', ['pack', '--json', '--pack-destination', work], root); // prepack builds dist/
  const [info] = JSON.parse(out.slice(out.indexOf('[')));
  tarball = join(work, info.filename);
  const files: string[] = info.files.map((f: { path: string }) => f.path);
  writeFileSync(join(work, 'files.json'), JSON.stringify(files));
  const app = join(work, 'app');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball, `express@${require('express/package.json').version}`], app);
}, 180_000);

const script = (flavour: 'cjs' | 'esm') => `
${flavour === 'cjs' ? "const express = require('express');\nconst { spool, diskEngine, SpoolError } = require('express-spool');" : "import express from 'express';\nimport { spool, diskEngine, SpoolError } from 'express-spool';"}
const upload = spool({ threshold: 1024, rollover: diskEngine({ lifetime: 'temporary' }), limits: { fileSize: 100000 } });
const app = express();
app.post('/u', upload.any(), (req, res) => res.json(req.files.map((f) => [f.originalname, f.storage, f.size, f.sha256.length])));
app.use((err, req, res, next) => res.status(err.status).json({ code: err.code, spool: err instanceof SpoolError }));
const server = app.listen(0, async () => {
  const url = 'http://127.0.0.1:' + server.address().port + '/u';
  const form = new FormData();
  form.append('a', new Blob(['small']), 'small.txt');
  form.append('b', new Blob([new Uint8Array(5000)]), 'large.bin');
  const ok = await (await fetch(url, { method: 'POST', body: form })).json();
  const big = new FormData();
  big.append('c', new Blob([new Uint8Array(200000)]), 'huge.bin');
  const rejected = await fetch(url, { method: 'POST', body: big });
  console.log(JSON.stringify({ ok, status: rejected.status, error: await rejected.json() }));
  server.close();
});
`;

test('the tarball holds the built library, types and both entry points, and nothing else', () => {
  const files: string[] = JSON.parse(require('node:fs').readFileSync(join(work, 'files.json'), 'utf8'));
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts', 'dist/engines/s3.js']));
  expect(files.filter((f) => !/^(dist\/(lib|engines|esm)\/|package\.json$|README\.md$|LICENSE$)/.test(f))).toEqual([]);
  expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
});

test.each(['cjs', 'esm'] as const)('an upload through the installed package works from %s', (flavour) => {
  const app = join(work, 'app');
  const file = join(app, flavour === 'cjs' ? 'server.cjs' : 'server.mjs');
  writeFileSync(file, script(flavour));
  const result = JSON.parse(run('node', [file], app).trim());
  expect(result).toEqual({
    ok: [['small.txt', 'memory', 5, 64], ['large.bin', 'disk', 5000, 64]],
    status: 413,
    error: { code: 'LIMIT_FILE_SIZE', spool: true },
  });
  expect(readdirSync(join(app, 'node_modules', 'express-spool'))).toContain('dist');
});
