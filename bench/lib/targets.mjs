// The targets of issue #13, checked against the medians of one run. Every target is a ratio of two
// things measured in the same interleaved rounds; `spool` is express-spool with its default options.

import { MiB } from './workloads.mjs';

const BUDGET = 64 * MiB; // the default memoryBudget
const RSS_SLACK = 32 * MiB;
// README "The memory bound": what the process holds beyond the budget
const V8_HEADROOM = 64 * MiB;
const PER_UPLOAD = 640 * 1024;

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
      const extra = on.cpuPerUnit.med - off.cpuPerUnit.med;
      return { x: extra / dg.med, detail: `(${on.cpuPerUnit.med.toFixed(d)} − ${off.cpuPerUnit.med.toFixed(d)}) ÷ ${dg.med.toFixed(d)} CPU ${u}` };
    },
  });
  const rss = {
    limit: `≤ ${(BUDGET + RSS_SLACK) / MiB} MiB`,
    ok: (x) => x <= 1,
    ratio: (R, m) => {
      const s = R.c?.[m]?.spool;
      if (!s) return null;
      const p = s.peakOverIdle;
      const f = (b) => (b / MiB).toFixed(0);
      return { x: p.med / (BUDGET + RSS_SLACK), detail: `+${f(p.med)} MiB (${f(p.min)}–${f(p.max)}) over idle ${f(s.idle.med)} MiB`, shown: `+${f(p.med)} MiB` };
    },
  };

  const T = [];
  const add = (workload, text, def, prefix = workload) => T.push({ id: `${prefix}${T.filter((t) => t.id.startsWith(prefix)).length + 1}`, workload, text, ...def });
  for (const [k, ceiling] of [['a', 0.8], ['b', 0.95], ['c', 0.95]]) {
    add(k, 'throughput vs `multer-disk`', rate(k, 'spool', 'multer-disk', 1.2));
    add(k, 'CPU per GB vs `multer-disk`', cpu(k, 'spool', 'multer-disk', 1));
    add(k, 'throughput vs `ceiling-disk`', rate(k, 'spool', 'ceiling-disk', ceiling));
    add(k, 'streaming sha256: (CPU hash-on − hash-off) ÷ digest CPU', shaCost(k));
  }
  add('c', 'peak RSS − idle RSS (default 64 MiB budget + 32 MiB)', rss);
  add('d', 'req/s vs `multer-memory`', rate('d', 'spool', 'multer-memory', 1.2));
  add('d', 'CPU per request vs `multer-memory`', cpu('d', 'spool', 'multer-memory', 1));
  add('d', 'CPU per request vs bare Express + @fastify/busboy (`busboy-mem`)', cpu('d', 'spool', 'busboy-mem', 1.5));
  add('d', 'streaming sha256: (CPU hash-on − hash-off) ÷ digest CPU', shaCost('d'));
  for (const k of Object.keys(W).filter((k) => k.startsWith('s3-'))) {
    add(k, '`spool-s3` throughput vs `multer-s3`', rate(k, 'spool-s3', 'multer-s3', 1), 'S');
  }

  // Resumable (issue #14): tus 1.0 uploads in 8 MiB PATCHes, fresh server per run, keep-alive.
  // Memory: README "The memory bound": peak − idle ≤ memoryBudget + 64 MiB (V8) + 640 KiB × admitted uploads.
  const resumableRss = (k, t) => {
    const bound = BUDGET + V8_HEADROOM + PER_UPLOAD * W[k].concurrency;
    const f = (b) => (b / MiB).toFixed(0);
    return {
      limit: `≤ ${(bound / MiB).toFixed(0)} MiB`,
      ok: (x) => x <= 1,
      ratio: (R, m) => {
        const s = R[k]?.[m]?.[t];
        if (!s) return null;
        const p = s.peakOverIdle;
        return { x: p.med / bound, detail: `+${f(p.med)} MiB (${f(p.min)}–${f(p.max)}) over idle ${f(s.idle.med)} MiB`, shown: `+${f(p.med)} MiB` };
      },
    };
  };
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
    add(k, 'throughput `spool-tus-disk` vs `tus-file`', rate(k, 'spool-tus-disk', 'tus-file', 1.2), 'R');
    add(k, 'throughput `spool-tus-s3` vs `tus-s3`', rate(k, 'spool-tus-s3', 'tus-s3', 1.2), 'R');
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
 * @returns {{ id, workload, text, limit, byMode: { [mode]: { x, ok, detail } } }[]}
 */
export function evaluateTargets(W, R, digest, modes) {
  return definitions(W)
    .filter((t) => R[t.workload])
    .map((t) => {
      const byMode = {};
      for (const m of modes) {
        const r = t.ratio(R, m, digest);
        if (r) byMode[m] = { ...r, ok: Number.isFinite(r.x) ? t.ok(r.x) : null };
      }
      return { id: t.id, workload: t.workload, text: t.text, limit: t.limit, byMode };
    })
    .filter((t) => Object.keys(t.byMode).length);
}
