// The targets of issue #13, checked against the medians of one run. Every target is a ratio of two
// things measured in the same interleaved rounds; `spool` is express-spool with its default options.

import { MiB } from './workloads.mjs';

const BUDGET = 64 * MiB; // the default memoryBudget
const RSS_SLACK = 32 * MiB;
// README "The memory bound": what the process holds beyond the budget
const V8_HEADROOM = 64 * MiB;
const PER_UPLOAD = 640 * 1024;
// The S3 engine's parts in flight with its defaults: partSize 8 MiB × (queueSize 4 + 1).
const S3_PARTS = 40 * MiB;

/** Target definitions: `ratio(res, mode)` returns { x, detail } or null when something is missing. */
function definitions(W) {
  const rate = (k, a, b, min) => ({
    limit: `≥ ${min}×`,
    ok: (x) => x >= min,
    ratio: (R, m) => {
      const A = R[k]?.[m]?.[a];
      const B = R[k]?.[m]?.[b];
      if (!A || !B) return null;
      const u = W[k].perRequest ? 'req/s' : 'MB/s';
      const time = W[k].reportTime ? ` (${A.seconds.med.toFixed(3)} vs ${B.seconds.med.toFixed(3)} s)` : '';
      return { x: A.rate.med / B.rate.med, detail: `${A.rate.med.toFixed(0)} vs ${B.rate.med.toFixed(0)} ${u}${time}` };
    },
  });
  const cpu = (k, a, b, max) => ({
    limit: `≤ ${max}×`,
    ok: (x) => x <= max,
    ratio: (R, m) => {
      const A = R[k]?.[m]?.[a];
      const B = R[k]?.[m]?.[b];
      if (!A || !B) return null;
      const u = W[k].perRequest ? 'µs/req' : 's/GB';
      const d = W[k].perRequest ? 0 : 2;
      return { x: A.cpuPerUnit.med / B.cpuPerUnit.med, detail: `${A.cpuPerUnit.med.toFixed(d)} vs ${B.cpuPerUnit.med.toFixed(d)} CPU ${u}` };
    },
  });
  const shaCost = (k) => ({
    limit: '≤ 1.1×',
    ok: (x) => x <= 1.1,
    ratio: (R, m, digest) => {
      const on = R[k]?.[m]?.['spool-sha256'];
      const off = R[k]?.[m]?.['spool-nohash'];
      const dg = digest?.[k];
      if (!on || !off || !dg) return null;
      const u = W[k].perRequest ? 'µs/req' : 's/GB';
      const d = W[k].perRequest ? 1 : 3;
      // Hashing is user-mode work; the kernel's share (socket reads, page-cache writes and the faults behind
      // them) differs between two server processes by more than the digest costs, so user time is compared.
      const user = Number.isFinite(on.userPerUnit?.med) && Number.isFinite(off.userPerUnit?.med);
      const [a, b] = user ? [on.userPerUnit.med, off.userPerUnit.med] : [on.cpuPerUnit.med, off.cpuPerUnit.med];
      const total = user ? `; in total CPU (user + kernel): (${on.cpuPerUnit.med.toFixed(d)} − ${off.cpuPerUnit.med.toFixed(d)}) ÷ ${dg.med.toFixed(d)}` : '';
      return { x: (a - b) / dg.med, detail: `(${a.toFixed(d)} − ${b.toFixed(d)}) ÷ ${dg.med.toFixed(d)} ${user ? 'user ' : ''}CPU ${u}${total}` };
    },
  });
  // The same goal measured paired in one process (lib/sha-paired.mjs): no sockets, no second server, so shown once.
  const pairedSha = (k) => ({
    limit: '≤ 1.1×',
    ok: (x) => x <= 1.1,
    ratio: (R, m, digest, paired) => {
      const p = paired?.byWorkload?.[k];
      if (!p || m !== paired.mode) return null;
      const d = W[k].perRequest ? 1 : 3;
      const u = W[k].perRequest ? 'µs/req' : 's/GB';
      const r = (x) => x.toFixed(2);
      return {
        x: p.ratio.med,
        detail: `median of ${p.n} paired samples (${r(p.ratio.min)}–${r(p.ratio.max)}); medians (${p.on.med.toFixed(d)} − ${p.off.med.toFixed(d)}) ÷ ${p.digest.med.toFixed(d)} CPU ${u}`,
      };
    },
  });
  /** `target`'s peak RSS − idle RSS on workload `k` within `bound` bytes. */
  const peakRss = (k, target, bound) => {
    const f = (b) => (b / MiB).toFixed(0);
    return {
      limit: `≤ ${f(bound)} MiB`,
      ok: (x) => x <= 1,
      ratio: (R, m) => {
        const s = R[k]?.[m]?.[target];
        if (!s) return null;
        const p = s.peakOverIdle;
        return { x: p.med / bound, detail: `+${f(p.med)} MiB (${f(p.min)}–${f(p.max)}) over idle ${f(s.idle.med)} MiB`, shown: `+${f(p.med)} MiB` };
      },
    };
  };

  // The floor a missed target hits, from the same run: what servers without express-spool's work reach.
  const of = (R, k, m, t) => R[k]?.[m]?.[t];
  const x2 = (a, b) => `${(a / b).toFixed(2)}×`;
  const cpuU = (k) => (W[k].perRequest ? 'CPU µs/req' : 'CPU s/GB');
  const cpuF = (k, v) => v.toFixed(W[k].perRequest ? 0 : 2);
  /** Throughput: how far the fastest server that still writes every byte (`ceiling`) is from the reference. */
  const rateFloor = (k, reference, ceilingTarget, label) => (R, m) => {
    const c = of(R, k, m, ceilingTarget);
    const ref = of(R, k, m, reference);
    const sp = of(R, k, m, 'spool');
    if (!c || !ref || !sp) return null;
    return `${label} \`${ceilingTarget}\` reaches ${x2(c.rate.med, ref.rate.med)} \`${reference}\`; express-spool reaches ${x2(sp.rate.med, c.rate.med)} of it${fullGcs(sp, ref, reference)}${handWritten(R, k, m, ref, reference)}${cpuAgainstFloor(R, k, m, ref, reference)}${newMemory(k, sp, ref, reference)}${twinNoise(R, k, m)}`;
  };
  /** The textbook handler (the same parser, `stream.pipeline` into `fs.createWriteStream`): what a disk upload costs without any library. */
  const handWritten = (R, k, m, ref, reference) => {
    const h = of(R, k, m, 'busboy-disk');
    if (!h) return '';
    const gcs = Number.isFinite(h.majorGcs?.med) ? `, ${h.majorGcs.med.toFixed(0)} full GCs per run` : '';
    const s = of(R, k, m, 'busboy-stream');
    const fast = s ? `, and \`busboy-stream\` (the same handler writing the way \`ceiling-disk\` writes) ${x2(s.rate.med, ref.rate.med)}` : '';
    return `; the hand-written handler \`busboy-disk\` reaches ${x2(h.rate.med, ref.rate.med)} \`${reference}\`${gcs}${fast}`;
  };
  /** V8's full GCs per run on the bare servers' small heaps (bench/README, "Large uploads and V8's old-generation limit"). */
  const fullGcs = (sp, ref, reference) => {
    if (!Number.isFinite(sp.majorGcs?.med) || !Number.isFinite(ref.majorGcs?.med)) return '';
    if (sp.majorGcs.med <= ref.majorGcs.med + 2) return `; full GCs per run (median): express-spool ${sp.majorGcs.med.toFixed(0)}, \`${reference}\` ${ref.majorGcs.med.toFixed(0)}`;
    return `; full GCs per run (median): express-spool ${sp.majorGcs.med.toFixed(0)}, \`${reference}\` ${ref.majorGcs.med.toFixed(0)} (V8 counts the ArrayBuffers allocated since the last full GC, socket reads included until a young GC sweeps them, against an old-generation limit sized from the live heap; a bare server's ~8 MB heap sits on V8's 8 MB marking threshold, where trifles decide: bench/README.md, "Large uploads and V8's old-generation limit", and the \`c-app\` rows)`;
  };
  /**
   * Fresh servers: the pages each took from the kernel per run (new memory, or memory malloc had given back).
   * On a VM that hands freed memory back to its host (free page reporting), such a page costs a fault in the
   * hypervisor too, billed as kernel time.
   */
  const newMemory = (k, sp, ref, reference) => {
    if (!Number.isFinite(sp.minorFaults?.med) || !Number.isFinite(ref.minorFaults?.med)) return '';
    if (!W[k].fresh && sp.minorFaults.med < 1000) return '';
    const mib = (n) => ((n * 4096) / MiB).toFixed(0);
    const counts = `; minor page faults per run (median; each a page the process took from the kernel: new memory, or memory malloc had given back; ~3–5 µs of kernel time each on the machine of bench/README.md, "New memory on a fresh server"): express-spool ${sp.minorFaults.med.toFixed(0)} (${mib(sp.minorFaults.med)} MiB), \`${reference}\` ${ref.minorFaults.med.toFixed(0)} (${mib(ref.minorFaults.med)} MiB)`;
    if (W[k].fresh) return `${counts}; express-spool holds the first MiB of each file in memory by design (the spool threshold) and up to 448 KiB of socket chunks queued behind each file's write in flight`;
    // The idle-heap explanation only where this run shows it: many more pages than the reference's.
    if (sp.minorFaults.med < 4 * ref.minorFaults.med + 1000) return counts;
    return `${counts}; the servers of a and b sit idle while the other workloads run, and after an idle minute V8 shrinks the bare heap: express-spool's server then takes back per file pages glibc's malloc had given back to the kernel`;
  };
  /** With hashing off by default, `spool-nohash` runs the very same options as `spool`: their ratio is the run's noise. */
  const twinNoise = (R, k, m) => {
    const sp = of(R, k, m, 'spool');
    const twin = of(R, k, m, 'spool-nohash');
    if (!sp || !twin || sp.sha256 !== 'false') return '';
    return `; \`spool-nohash\` (the same options, hashing being off by default) reached ${x2(twin.rate.med, sp.rate.med)} \`spool\`'s throughput in the same rounds: the noise between two identical servers`;
  };
  /** CPU split into user mode (JS, the parser, copies) and the kernel's (socket reads, page-cache writes). */
  const split = (k, r) => (Number.isFinite(r.userPerUnit?.med) ? ` (${cpuF(k, r.userPerUnit.med)} user + ${cpuF(k, r.systemPerUnit.med)} kernel)` : '');
  /**
   * The least a multipart-to-disk server spends: the parser's user time (`busboy-drop`) plus the kernel time of
   * the raw body-to-file server (`ceiling-disk`: socket reads and page-cache writes of the same bytes).
   */
  const floorCpu = (k, m, R) => {
    const p = of(R, k, m, 'busboy-drop');
    const w = of(R, k, m, 'ceiling-disk');
    if (!p || !w || !Number.isFinite(p.userPerUnit?.med) || !Number.isFinite(w.systemPerUnit?.med)) return null;
    return { value: p.userPerUnit.med + w.systemPerUnit.med, text: `the parser's user time (\`busboy-drop\`) ${cpuF(k, p.userPerUnit.med)} + the raw write's kernel time (\`ceiling-disk\`) ${cpuF(k, w.systemPerUnit.med)} = ${cpuF(k, p.userPerUnit.med + w.systemPerUnit.med)} ${cpuU(k)}` };
  };
  const diskCpuFloor = (k) => (R, m) => {
    const p = of(R, k, m, 'busboy-drop');
    const w = of(R, k, m, 'ceiling-disk');
    const sp = of(R, k, m, 'spool');
    if (!p || !w || !sp) return null;
    const tight = floorCpu(k, m, R);
    const least = tight
      ? `the least a multipart-to-disk server spends: ${tight.text}; express-spool ${cpuF(k, sp.cpuPerUnit.med)}${split(k, sp)}, ${x2(sp.cpuPerUnit.med, tight.value)} that floor`
      : `parser alone (\`busboy-drop\`) ${cpuF(k, p.cpuPerUnit.med)} + raw write (\`ceiling-disk\`) ${cpuF(k, w.cpuPerUnit.med)} = ${cpuF(k, p.cpuPerUnit.med + w.cpuPerUnit.med)} ${cpuU(k)} (each counts the socket reads once: an upper bound of the floor); express-spool ${cpuF(k, sp.cpuPerUnit.med)}`;
    const multer = of(R, k, m, 'multer-disk');
    return multer ? least + newMemory(k, sp, multer, 'multer-disk') : least;
  };
  /**
   * Throughput vs the raw body-to-file server: what the fastest plain parse-and-write handler (`busboy-stream`:
   * the same parser, each file written the way `ceiling-disk` writes) reaches of it, then the CPU floor.
   */
  const parseAndWriteFloor = (k) => (R, m) => {
    const cpuFloor = diskCpuFloor(k)(R, m);
    const s = of(R, k, m, 'busboy-stream');
    const c = of(R, k, m, 'ceiling-disk');
    const sp = of(R, k, m, 'spool');
    if (!s || !c || !sp) return cpuFloor;
    const lead = `the fastest plain multipart-to-disk handler, \`busboy-stream\` (the same parser, no library, each file written the way \`ceiling-disk\` writes), reaches ${x2(s.rate.med, c.rate.med)} \`ceiling-disk\`, and express-spool ${x2(sp.rate.med, s.rate.med)} of \`busboy-stream\``;
    return cpuFloor ? `${lead}; ${cpuFloor}` : lead;
  };
  /** Throughput vs a reference: the CPU each spends per GB against the floor, when the run is CPU-bound. */
  const cpuAgainstFloor = (R, k, m, ref, reference) => {
    const sp = of(R, k, m, 'spool');
    const tight = floorCpu(k, m, R);
    if (!sp || !tight) return '';
    return `; CPU per GB: express-spool ${cpuF(k, sp.cpuPerUnit.med)}${split(k, sp)}, \`${reference}\` ${cpuF(k, ref.cpuPerUnit.med)}${split(k, ref)}, and the least any multipart-to-disk server spends, ${tight.text} (\`${reference}\` spends ${x2(ref.cpuPerUnit.med, tight.value)} that floor)`;
  };
  /** sha256: the hash is the digest's own update per chunk; the difference of two medians carries the runs' spread. */
  const shaFloor = (k) => (R, m, digest) => {
    const off = of(R, k, m, 'spool-nohash');
    const dg = digest?.[k];
    if (!off || !dg) return null;
    const s = Number.isFinite(off.userPerUnit?.med) ? off.userPerUnit : off.cpuPerUnit;
    const what = s === off.userPerUnit ? 'user CPU' : 'CPU';
    return `the hash-off runs alone spread ${cpuF(k, s.min)}–${cpuF(k, s.max)} ${what} ${cpuU(k).replace('CPU ', '')}, ${((s.max - s.min) / dg.med).toFixed(1)}× the digest's cost: the difference of two medians is within that noise (the hash itself is one \`update()\` per chunk, no copies)`;
  };
  /** Paired sha256: what hashing adds beyond the digest in a loop, against what one digest costs inside a request. */
  const pairedShaFloor = (k) => (R, m, digest, paired) => {
    const p = paired?.byWorkload?.[k];
    if (!p) return null;
    const d = W[k].perRequest ? 1 : 3;
    const u = W[k].perRequest ? 'µs/req' : 's/GB';
    const added = p.on.med - p.off.med;
    return `hashing on adds ${added.toFixed(d)} CPU ${u} to express-spool's path; the digest alone costs ${p.digest.med.toFixed(d)} in a loop of its own but ${p.digestBetween.med.toFixed(d)} when each one runs between two hash-off requests (its code and data no longer warm in the caches; median of the same samples), so streaming sha256 costs ${x2(added, p.digestBetween.med)} a digest done inside a request${W[k].perRequest ? ' (per file: one `crypto.hash()` call when the file arrives in one chunk, else a Hash object and one `update()` per chunk; the hex digest kept on the file)' : ' (one `update()` per chunk, no copies)'}; the samples spread ${p.ratio.min.toFixed(2)}–${p.ratio.max.toFixed(2)}`;
  };
  /** Small files: bare Express + the same parser keeping the bytes, against multer-memory. */
  const smallFloor = (what) => (R, m) => {
    const b = of(R, 'd', m, 'busboy-mem');
    const drop = of(R, 'd', m, 'busboy-drop');
    const mm = of(R, 'd', m, 'multer-memory');
    const sp = of(R, 'd', m, 'spool');
    if (!b || !mm || !drop) return null;
    // The floor is Express plus a parser: `busboy-drop` does nothing else (it does not even keep the bytes).
    const [key, unit] = what === 'rate' ? ['rate', "req/s"] : ['cpuPerUnit', 'CPU per request'];
    const spool = sp
      ? `; express-spool reaches ${x2(sp.rate.med, drop.rate.med)} \`busboy-drop\`'s req/s at ${x2(sp.cpuPerUnit.med, drop.cpuPerUnit.med)} its CPU per request (${x2(sp.cpuPerUnit.med, b.cpuPerUnit.med)} \`busboy-mem\`'s)`
      : '';
    return `Express and the parser alone (\`busboy-drop\`: bare Express + @fastify/busboy, the bytes dropped) reach ${x2(drop[key].med, mm[key].med)} \`multer-memory\`'s ${unit}, \`busboy-mem\` (the bytes kept) ${x2(b[key].med, mm[key].med)}${spool}`;
  };

  const T = [];
  const add = (workload, text, def, prefix = workload) => T.push({ id: `${prefix}${T.filter((t) => t.id.startsWith(prefix)).length + 1}`, workload, text, ...def });
  for (const [k, ceiling] of [['a', 0.8], ['b', 0.95], ['c', 0.95]]) {
    add(k, 'throughput vs `multer-disk`', { ...rate(k, 'spool', 'multer-disk', 1.2), floor: rateFloor(k, 'multer-disk', 'ceiling-disk', 'the raw body-to-file server') });
    add(k, 'CPU per GB vs `multer-disk`', { ...cpu(k, 'spool', 'multer-disk', 1), floor: diskCpuFloor(k) });
    add(k, 'throughput vs `ceiling-disk`', { ...rate(k, 'spool', 'ceiling-disk', ceiling), floor: parseAndWriteFloor(k) });
    add(k, 'streaming sha256: (user CPU hash-on − hash-off) ÷ digest CPU', { ...shaCost(k), floor: shaFloor(k) });
  }
  add('c', 'peak RSS − idle RSS (default 64 MiB budget + 32 MiB)', peakRss('c', 'spool', BUDGET + RSS_SLACK));
  for (const k of ['a', 'b', 'c', 'd']) add(k, 'streaming sha256, paired in one process: (CPU hash-on − hash-off) ÷ digest CPU', { ...pairedSha(k), floor: pairedShaFloor(k) }, 'H');
  // c-app: the same goals with an app-sized heap in every server (workloads.mjs).
  add('c-app', 'throughput vs `multer-disk`', { ...rate('c-app', 'spool', 'multer-disk', 1.2), floor: rateFloor('c-app', 'multer-disk', 'ceiling-disk', 'the raw body-to-file server') }, 'C');
  add('c-app', 'CPU per GB vs `multer-disk`', { ...cpu('c-app', 'spool', 'multer-disk', 1), floor: diskCpuFloor('c-app') }, 'C');
  add('c-app', 'throughput vs `ceiling-disk`', { ...rate('c-app', 'spool', 'ceiling-disk', 0.95), floor: parseAndWriteFloor('c-app') }, 'C');
  add('d', 'req/s vs `multer-memory`', { ...rate('d', 'spool', 'multer-memory', 1.2), floor: smallFloor('rate') });
  add('d', 'CPU per request vs `multer-memory`', { ...cpu('d', 'spool', 'multer-memory', 1), floor: smallFloor('cpu') });
  add('d', 'CPU per request vs bare Express + @fastify/busboy (`busboy-mem`)', cpu('d', 'spool', 'busboy-mem', 1.5));
  add('d', 'streaming sha256: (user CPU hash-on − hash-off) ÷ digest CPU', { ...shaCost('d'), floor: shaFloor('d') });
  for (const k of Object.keys(W).filter((k) => k.startsWith('s3-'))) {
    const s3Ceiling = (R, m) => {
      const sp = of(R, k, m, 'spool-s3');
      const ref = of(R, k, m, 'multer-s3');
      const c = of(R, k, m, 'ceiling-s3');
      if (!sp || !ref || !c) return null;
      return `the raw body-to-S3 server \`ceiling-s3\` (no parser; the same S3 library as multer-s3) reaches ${x2(c.rate.med, ref.rate.med)} \`multer-s3\` (${c.rate.med.toFixed(0)} MB/s); express-spool reaches ${x2(sp.rate.med, c.rate.med)} of it; the S3 server and everything else took ${sp.otherCores.toFixed(2)} / ${ref.otherCores.toFixed(2)} / ${c.otherCores.toFixed(2)} of the machine's 2 cores (express-spool / multer-s3 / ceiling-s3)`;
    };
    add(k, '`spool-s3` throughput vs `multer-s3`', { ...rate(k, 'spool-s3', 'multer-s3', 1), floor: s3Ceiling }, 'S');
  }
  // RSS flat in file size: whatever the file's size, `spool-s3` stays within its parts (partSize × (queueSize + 1),
  // 40 MiB with the defaults) plus V8's headroom (README "The memory bound").
  for (const k of Object.keys(W).filter((k) => k.startsWith('s3-'))) {
    add(k, "`spool-s3` peak RSS − idle RSS (40 MiB of parts + 64 MiB, whatever the file's size)", peakRss(k, 'spool-s3', S3_PARTS + V8_HEADROOM), 'S');
  }

  // Resumable (issue #14): tus 1.0 uploads in 8 MiB PATCHes, fresh server per run, keep-alive.
  // Memory: README "The memory bound": peak − idle ≤ memoryBudget + 64 MiB (V8) + 640 KiB × admitted uploads.
  const resumableRss = (k, t) => peakRss(k, t, BUDGET + V8_HEADROOM + PER_UPLOAD * W[k].concurrency);
  const noDiskWrites = (k, t, other) => ({
    limit: '= 0 B',
    ok: (x) => x === 0,
    ratio: (R, m) => {
      const s = R[k]?.[m]?.[t];
      if (!s?.diskWrites) return null;
      const o = R[k]?.[m]?.[other]?.diskWrites;
      const b = (x) => (x === 0 ? '0 B' : x < MiB ? `${(x / 1024).toFixed(0)} KiB` : `${(x / MiB).toFixed(1)} MiB`);
      // every run must write nothing: the largest run counts
      return { x: s.diskWrites.max, detail: `max ${b(s.diskWrites.max)} over ${s.n} runs${o ? ` (\`${other}\`: median ${b(o.med)}, ${(o.med / (W[k].count * W[k].fileSize)).toFixed(2)}× the bytes uploaded)` : ''}`, shown: b(s.diskWrites.max) };
    },
  });
  for (const k of Object.keys(W).filter((k) => /^r\d+$/.test(k))) {
    const cpuSplit = (r) => `${r.cpuPerUnit.med.toFixed(2)} (${r.userPerUnit.med.toFixed(2)} user + ${r.systemPerUnit.med.toFixed(2)} kernel)`;
    const tusCeiling = (R, m) => {
      const a = of(R, k, m, 'spool-tus-disk');
      const b = of(R, k, m, 'tus-file');
      const c = of(R, k, m, 'ceiling-tus');
      if (!a || !b || !c) return null;
      return `the raw PATCH-to-file server \`ceiling-tus\` reaches ${(c.rate.med / b.rate.med).toFixed(2)}× \`tus-file\`'s throughput (${c.rate.med.toFixed(0)} MB/s); express-spool reaches ${(a.rate.med / c.rate.med).toFixed(2)}× of it, at ${cpuSplit(a)} CPU s/GB (\`tus-file\` ${cpuSplit(b)}, \`ceiling-tus\` ${cpuSplit(c)})`;
    };
    add(k, 'throughput `spool-tus-disk` vs `tus-file`', { ...rate(k, 'spool-tus-disk', 'tus-file', 1.2), floor: tusCeiling }, 'R');
    const s3Load = (R, m) => {
      const a = of(R, k, m, 'spool-tus-s3');
      const b = of(R, k, m, 'tus-s3');
      if (!a || !b) return null;
      const c = of(R, k, m, 'ceiling-tus-s3');
      const ceiling = c ? `the raw PATCH-to-UploadPart server \`ceiling-tus-s3\` reaches ${x2(c.rate.med, b.rate.med)} \`tus-s3\`'s throughput (${c.rate.med.toFixed(0)} MB/s); express-spool reaches ${x2(a.rate.med, c.rate.med)} of it; ` : '';
      return `${ceiling}the S3 server and everything else took ${a.otherCores.toFixed(2)} / ${b.otherCores.toFixed(2)}${c ? ` / ${c.otherCores.toFixed(2)}` : ''} of the machine's 2 cores during these runs (express-spool / @tus/server${c ? ' / ceiling-tus-s3' : ''}): all wait on the same radosgw`;
    };
    add(k, 'throughput `spool-tus-s3` vs `tus-s3`', { ...rate(k, 'spool-tus-s3', 'tus-s3', 1.2), floor: s3Load }, 'R');
    add(k, `\`spool-tus-disk\` peak RSS − idle RSS (64 MiB budget + 64 MiB + 640 KiB × ${W[k].concurrency})`, resumableRss(k, 'spool-tus-disk'), 'R');
    add(k, `\`spool-tus-s3\` peak RSS − idle RSS (64 MiB budget + 64 MiB + 640 KiB × ${W[k].concurrency})`, resumableRss(k, 'spool-tus-s3'), 'R');
    add(k, '`spool-tus-s3` bytes written to local disk (/proc/PID/io write_bytes)', noDiskWrites(k, 'spool-tus-s3', 'tus-s3'), 'R');
  }
  return T;
}

/**
 * @param {object} W        workload definitions by key
 * @param {object} R        R[workload][mode][target] = summary (stats.summarize)
 * @param {object} digest   digest[workload] = spread of digest CPU per unit
 * @param {string[]} modes
 * @param {object} [paired] { mode, byWorkload: { [workload]: paired sha256 summary } } (run.mjs)
 * @returns {{ id, workload, text, limit, byMode: { [mode]: { x, ok, detail } } }[]}
 */
export function evaluateTargets(W, R, digest, modes, paired) {
  return definitions(W)
    .filter((t) => R[t.workload])
    .map((t) => {
      const byMode = {};
      for (const m of modes) {
        const r = t.ratio(R, m, digest, paired);
        if (!r) continue;
        const ok = Number.isFinite(r.x) ? t.ok(r.x) : null;
        byMode[m] = { ...r, ok, floor: ok === false ? (t.floor?.(R, m, digest, paired) ?? undefined) : undefined };
      }
      return { id: t.id, workload: t.workload, text: t.text, limit: t.limit, byMode };
    })
    .filter((t) => Object.keys(t.byMode).length);
}
