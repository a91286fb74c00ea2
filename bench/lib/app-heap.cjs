// Preloaded into every server process by `node bench/run.mjs --app-heap MIB`: allocates JS objects until
// the heap in use has grown by MIB MiB (48 leaves ~40 MiB live after a full GC) and holds them for the whole run, as an application's own state would (routes, caches, sessions). The bare
// bench servers hold ~8 MB, and V8 sizes its old-generation limit from that: see bench/README.md,
// "Large uploads and V8's old-generation limit".
'use strict';

const mib = Number(process.env.BENCH_APP_HEAP_MIB);
if (mib > 0) {
  const held = [];
  const target = process.memoryUsage().heapUsed + mib * 1024 * 1024;
  let i = 0;
  while (process.memoryUsage().heapUsed < target) {
    for (let n = 0; n < 10_000; n++, i++) held.push({ id: i, name: `item-${i}`, tags: [i % 7, i % 11] });
  }
  globalThis[Symbol.for('express-spool.bench.app-heap')] = held;
}
