/**
 * The memory budget is a real bound: a smaller run of `npm run memory-bound` (scripts/memory-bound.mjs),
 * with real sockets against a separate server process (scripts/memory-bound-server.mjs, one per load),
 * must keep the server's
 *
 *     peak RSS − idle RSS  ≤  memoryBudget + FIXED + PER_REQUEST × (peak admitted requests)
 *
 * with every upload byte-exact (streamed sha256 and an independent re-read / GetObject against the
 * client's digest; text fields by digest of req.body), every refusal a 503 with Retry-After (the client
 * retries until all are stored), the budget back to 0 and nothing left on disk or in the bucket.
 *
 * FIXED and PER_REQUEST are the README's stated overhead, measured on the full loads (500 slow text
 * clients, 64 × 16–64 MiB to disk, 64 × 16–32 MiB to S3): FIXED is V8's headroom (new space up to 2 × 16
 * MiB, garbage awaiting a GC — part buffers, parser strings), PER_REQUEST what an admitted upload holds
 * outside the budget (socket, IncomingMessage, busboy and file stream, tap and write-stream buffers:
 * ~500–700 KiB measured after a forced GC, against a REQUEST_SHARE of 192 KiB). The slack is in those
 * constants, not added here: on this 2-core machine the smaller loads below peak at about half the bound
 * (text 52–54 of 109 MiB, disk 31–32 of 90 MiB, S3 48–59 of 87.5 MiB with the part buffers released — see
 * below), so GC timing noise (±10 MiB between runs of these loads) does not flip them.
 *
 * (c) fails while engines/s3-multipart.ts keeps released part buffers reachable (the `first` parameter for
 * the whole upload, `part` while the next part's reservation waits): ~10 MiB per upload outside the budget,
 * peak − idle 142 MiB here (680–705 MiB on the full load).
 *
 * The library is loaded from the TypeScript sources, transpiled on the fly (what the tree holds now).
 */
import { execFileSync, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts', 'memory-bound.mjs');
const FIXED = '64MiB';
const PER_REQUEST = '640KiB';
const MiB = 1024 * 1024;

interface Row {
  load: string;
  budget: number;
  clients: number;
  ok: number;
  mismatches: number;
  refusedAtAdmission: number;
  failedAfterAdmission: number;
  missingRetryAfter: number;
  retries: number;
  resets: Record<string, number>;
  errors: Record<string, number>;
  gaveUp: number;
  idle: number;
  peak: number;
  delta: number;
  peakUsed: number;
  peakAdmitted: number;
  bound: number;
  usedAfter: number;
  leftovers: number;
  atPeak?: Record<string, number>;
}

// The sources, transpiled once for the three runs (inside the repository, where the dependencies resolve).
const LIB_DIR = path.join(ROOT, 'node_modules', '.cache', 'express-spool-memory-bound', `jest-${process.pid}`);
let lib: string;
beforeAll(() => {
  lib = execFileSync(process.execPath, [SCRIPT, '--transpile-to', LIB_DIR], { encoding: 'utf8' }).trim();
});
afterAll(() => rmSync(LIB_DIR, { recursive: true, force: true }));

/** Runs the script for one load and returns its one result row (and the script's log, for failures). */
function measure(args: string[]): Promise<{ row: Row; log: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, ...args, '--lib', lib, '--json', '--fixed', FIXED, '--per-request', PER_REQUEST], {
      cwd: ROOT,
      env: process.env, // S3_* from the jest global setup
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk));
    child.stderr.on('data', (chunk: Buffer) => (out += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('MEMORY_BOUND_JSON '));
      if (!line) return reject(new Error(`memory-bound.mjs exited ${code} without a result:\n${out}`));
      const { rows } = JSON.parse(line.slice('MEMORY_BOUND_JSON '.length)) as { rows: Row[] };
      resolve({ row: rows[0], log: out.split('\n').filter((l) => !l.startsWith('MEMORY_BOUND_JSON ')).join('\n') });
    });
  });
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

function expectWithinBound({ row, log }: { row: Row; log: string }): void {
  console.log(
    `${row.load}, budget ${mib(row.budget)}: peak − idle ${mib(row.delta)} (idle ${mib(row.idle)}, peak ${mib(row.peak)}), ` +
      `bound ${mib(row.bound)} (budget + ${FIXED} + ${PER_REQUEST} × ${row.peakAdmitted} admitted); ` +
      `503s ${row.refusedAtAdmission} at admission, ${row.failedAfterAdmission} after; ${row.ok}/${row.clients} stored`,
  );
  // Every upload stored, byte-exact, every refusal a 503 with Retry-After, nothing left behind.
  expect({
    stored: row.ok,
    mismatches: row.mismatches,
    otherStatuses: row.errors,
    gaveUp: row.gaveUp,
    refusalsWithoutRetryAfter: row.missingRetryAfter,
    budgetUsedAfter: row.usedAfter,
    leftovers: row.leftovers,
    budgetNeverPassed: row.peakUsed <= row.budget,
  }).toEqual({
    stored: row.clients,
    mismatches: 0,
    otherStatuses: {},
    gaveUp: 0,
    refusalsWithoutRetryAfter: 0,
    budgetUsedAfter: 0,
    leftovers: 0,
    budgetNeverPassed: true,
  });
  if (row.delta > row.bound) {
    throw new Error(
      `${row.load}: peak RSS − idle RSS ${mib(row.delta)} > bound ${mib(row.bound)}; at the RSS peak the server had ` +
        `heap ${mib(row.atPeak?.heapUsed ?? 0)}, array buffers ${mib(row.atPeak?.arrayBuffers ?? 0)}, budget used ` +
        `${mib(row.atPeak?.used ?? 0)}\n${log}`,
    );
  }
}

describe('the memory budget is a real bound (peak RSS − idle ≤ budget + stated overhead), real sockets, separate server process', () => {
  test('(a) 150 slow clients sending text fields, budget 8 MiB: refusals are 503 + Retry-After, retried until all are stored', async () => {
    const result = await measure([
      '--loads', 'text', '--budgets', '8MiB',
      '--text-clients', '150', '--text-size', '32KiB-96KiB', '--text-fields', '2-6', '--text-duration', '1500',
      '--retry-delay', '200', '--admission-timeout', '1000',
    ]);
    expectWithinBound(result);
    // 150 requests × (share + fields) do not fit 8 MiB at once: the budget must have said no, and been full.
    expect(result.row.refusedAtAdmission + result.row.failedAfterAdmission).toBeGreaterThan(0);
    expect(result.row.peakUsed).toBeGreaterThan(4 * MiB);
  }, 40_000);

  test('(b) 16 concurrent 8–16 MiB uploads through the spool to disk, budget 16 MiB', async () => {
    expectWithinBound(await measure(['--loads', 'disk', '--budgets', '16MiB', '--disk-clients', '16', '--disk-size', '8MiB-16MiB', '--retry-delay', '200']));
  }, 40_000);

  test('(c) 12 concurrent 10–12 MiB uploads through the spool to S3 (5 MiB parts), budget 16 MiB', async () => {
    expectWithinBound(
      await measure(['--loads', 's3', '--budgets', '16MiB', '--s3-clients', '12', '--s3-size', '10MiB-12MiB', '--part-size', '5MiB', '--retry-delay', '200']),
    );
  }, 60_000);
});
