import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';

// Packs the library as npm would publish it, installs the tarball into a fresh app, and runs a real upload
// through it from CommonJS and from ESM.
//
// - The pack runs in a copy of the sources (prepack builds dist/ there): the repository's own dist/ may be
//   missing, stale, or read by other tests at the same time, so it is neither used nor rebuilt.
// - "Installing" lays the tarball out the way npm does (its files in node_modules/express-spool, its declared
//   dependencies beside it), taking those dependencies and express from the project's node_modules. npm
//   itself would need them in its cache or the network (`npm install --offline` fails with ENOTCACHED on a
//   fresh machine). A dependency the library uses but does not declare still fails the test.
const root = resolve(__dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'spool-pack-'));
const app = join(work, 'app');
afterAll(() => rmSync(work, { recursive: true, force: true }));
/** Runs a command; when it fails, the error carries its output (tsc reports on stdout). */
function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    throw new Error(`${[cmd, ...args].join(' ')} (in ${cwd}) failed:\n${stdout ?? ''}${stderr ?? ''}`);
  }
}

/** Not copied: installed or generated, or local state. */
const SKIP = new Set(['node_modules', 'dist', '.git', '.s3-local', 'artifacts', 'uploads', 'coverage']);

/** Links node_modules/<name> in `dir` to the project's copy of the package. */
function linkFromProject(dir: string, name: string): void {
  const target = join(root, 'node_modules', name);
  readFileSync(join(target, 'package.json')); // fails clearly if the project does not have it
  mkdirSync(dirname(join(dir, 'node_modules', name)), { recursive: true });
  symlinkSync(target, join(dir, 'node_modules', name), 'dir');
}

let files: string[];
beforeAll(() => {
  const src = join(work, 'src');
  cpSync(root, src, { recursive: true, filter: (from) => !SKIP.has(relative(root, from)) && !relative(root, from).startsWith('.demo-build-') && !from.endsWith('.tgz') });
  symlinkSync(join(root, 'node_modules'), join(src, 'node_modules'), 'dir'); // tsc and its types for the build
  const out = run('npm', ['pack', '--json', '--pack-destination', work], src); // prepack builds src/dist/
  const [info] = JSON.parse(out.slice(out.indexOf('[')));
  files = info.files.map((f: { path: string }) => f.path);

  const installed = join(app, 'node_modules', 'express-spool');
  mkdirSync(installed, { recursive: true });
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
  run('tar', ['-xzf', join(work, info.filename), '-C', installed, '--strip-components=1'], work);
  const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8'));
  for (const dep of Object.keys(manifest.dependencies ?? {})) linkFromProject(app, dep);
  linkFromProject(app, 'express');
}, 180_000);

const script = (flavour: 'cjs' | 'esm') => `
${flavour === 'cjs' ? "const express = require('express');\nconst { spool, diskEngine, SpoolError } = require('express-spool');" : "import express from 'express';\nimport { spool, diskEngine, SpoolError } from 'express-spool';"}
const upload = spool({ threshold: 1024, rollover: diskEngine({ lifetime: 'temporary' }), limits: { fileSize: 100000 }, sha256: true });
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
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/lib/index.js', 'dist/lib/index.d.ts', 'dist/esm/index.mjs', 'dist/esm/index.d.mts', 'dist/engines/s3.js']));
  expect(files.filter((f) => !/^(dist\/(lib|engines|esm)\/|package\.json$|README\.md$|LICENSE$)/.test(f))).toEqual([]);
  expect(files.filter((f) => f.endsWith('.map'))).toEqual([]);
});

test.each(['cjs', 'esm'] as const)('an upload through the installed package works from %s', (flavour) => {
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

test.each(['cjs', 'esm'] as const)('from %s the entry loads S3, multer interop and resumable uploads only when first called', (flavour) => {
  const file = join(app, flavour === 'cjs' ? 'lazy.cjs' : 'lazy.mjs');
  const load = flavour === 'cjs'
    ? "const { spool, resumable, resumableDiskStore, toMulterStorage, diskEngine } = require('express-spool');\nconst { createRequire } = require('node:module');"
    : "import { spool, resumable, resumableDiskStore, toMulterStorage, diskEngine } from 'express-spool';\nimport { createRequire } from 'node:module';";
  writeFileSync(file, `${load}
const cache = createRequire(process.cwd() + '/').cache;
const loaded = () => Object.keys(cache).filter((p) => p.includes('express-spool')).map((p) => p.split('express-spool/')[1]);
const optional = /s3|resumable|multer|redis/;
spool();
const atStart = loaded().filter((p) => optional.test(p));
const router = resumable({ store: resumableDiskStore({ directory: process.cwd() + '/resumable' }) });
const storage = toMulterStorage(diskEngine());
console.log(JSON.stringify({ atStart, router: typeof router, handle: typeof storage._handleFile, after: loaded().filter((p) => optional.test(p)) }));
router.close?.();
`);
  const result = JSON.parse(run('node', [file], app).trim());
  expect(result.atStart).toEqual([]);
  expect(result.router).toBe('function');
  expect(result.handle).toBe('function');
  expect(result.after).toEqual(expect.arrayContaining(['dist/lib/resumable/handler.js', 'dist/engines/resumable-disk.js', 'dist/lib/multer/to-multer-storage.js']));
  expect(result.after.filter((p: string) => /engines\/s3|redis/.test(p))).toEqual([]);
});
