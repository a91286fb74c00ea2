// Streaming sha256, measured paired in one process: express-spool's own path (spool-path.mjs: the real
// middleware, no network, the file bytes counted and dropped) over a workload's body with `sha256` off, the same
// with it on, and the digest alone (digest.mjs) over the same file bytes, back to back and in rotating order.
// One sample = (CPU on − CPU off) ÷ CPU of the digest, each measured over a block of one run's requests.
//
// Why besides the servers' figures: over HTTP the two hashing servers are separate processes, and their
// hash-off runs alone spread by more than the digest costs (kernel time, GCs, one process being slower than
// another for its whole life), so the difference of their medians cannot resolve "at most 1.1× the digest".
// Here the three runs share one process, one heap and the same bytes within a few hundred ms. That process is a
// child of its own (`pairedShaInChild`), with a small heap: the bench's own process holds every workload's body,
// and its GCs would scatter the small-file samples.
//
//   node bench/lib/sha-paired.mjs <fileSize> <count> <reps> <turn>   (prints the samples as JSON)

import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chunkify, parseOnce } from '../parser-micro.mjs';
import { digestOnce } from './digest.mjs';
import { spoolPathAdapter } from './spool-path.mjs';
import { makeBody } from './workloads.mjs';

const CHUNK = 64 * 1024;
const paths = { off: spoolPathAdapter({ sha256: false }), on: spoolPathAdapter({ sha256: true }) };

/** CPU seconds (user + kernel: the total is exact, the split between them is not; this path makes no system calls to speak of). */
const cpuSeconds = (start) => {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e6;
};

/** One request with this one body through express-spool's path; checks the file's size. */
async function through(factory, w, chunks) {
  const seen = await parseOnce(factory, w, chunks, 'count');
  if (seen.files.length !== w.files || seen.files.some((f) => f.bytes !== w.fileSize)) {
    throw new Error(`sha256 pair: express-spool's path saw ${seen.files.map((f) => f.bytes).join(', ')} bytes, want ${w.files} × ${w.fileSize}`);
  }
}

/**
 * `reps` samples for workload body `w` (a makeBody() result) sent `count` times; `turn` rotates the order of the
 * three runs. Each run is a block of `count` requests (or digests), so that the GCs each one causes fall mostly
 * within it. Each sample: { on, off, digest } CPU seconds, `ratio` = (on − off) ÷ digest, and `digestBetween`: the
 * digest's CPU when each one runs between two hash-off requests instead of in a loop of its own (its code and
 * data no longer warm in the caches), the cost a hash has inside a request.
 */
export async function pairedShaSamples(w, count, reps, turn = 0) {
  const chunks = chunkify(w.body, CHUNK);
  const runs = {
    off: async () => {
      for (let n = 0; n < count; n++) await through(paths.off, w, chunks);
    },
    on: async () => {
      for (let n = 0; n < count; n++) await through(paths.on, w, chunks);
    },
    digest: async () => {
      for (let n = 0; n < count; n++) digestOnce(w.file);
    },
  };
  const names = Object.keys(runs);
  const samples = [];
  for (let r = 0; r < reps; r++) {
    const s = {};
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + turn + r) % names.length];
      const t0 = process.cpuUsage();
      await runs[name]();
      s[name] = cpuSeconds(t0);
    }
    let between = 0;
    let measuring = 0;
    for (let n = 0; n < count; n++) {
      await through(paths.off, w, chunks);
      let t0 = process.cpuUsage();
      digestOnce(w.file);
      between += cpuSeconds(t0);
      t0 = process.cpuUsage();
      measuring += cpuSeconds(t0);
    }
    samples.push({ ...s, ratio: (s.on - s.off) / s.digest, digestBetween: between - measuring });
  }
  return samples;
}

/** `reps` samples for workload `w` (its file size, `count` files per run) from a fresh child process. */
export function pairedShaInChild(w, reps, turn) {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), String(w.fileSize), String(w.count), String(reps), String(turn)], { encoding: 'utf8', maxBuffer: 1 << 20 });
  return JSON.parse(out);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [fileSize, count, reps, turn] = process.argv.slice(2).map(Number);
  const w = makeBody(fileSize);
  await pairedShaSamples(w, count, 3, turn); // warm-up: the JIT, the library loaded, the heap grown
  process.stdout.write(JSON.stringify(await pairedShaSamples(w, count, reps, turn)));
}
