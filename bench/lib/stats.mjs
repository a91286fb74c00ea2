// Medians and ranges of the timed runs.

export function median(xs) {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!s.length) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** { med, min, max } of the finite values. */
export function spread(xs) {
  const s = xs.filter(Number.isFinite);
  return s.length ? { med: median(s), min: Math.min(...s), max: Math.max(...s) } : { med: NaN, min: NaN, max: NaN };
}

/** Per unit of work: MB/s and CPU s/GB, or req/s and CPU µs/request. */
export const units = (w) => (w.perRequest ? { rate: 'req/s', cpu: 'CPU µs/req' } : { rate: 'MB/s', cpu: 'CPU s/GB' });
const rateOf = (w, r) => (w.perRequest ? r.requests / r.seconds : r.bytes / 1e6 / r.seconds);
const cpuPerUnitOf = (w, r) => (w.perRequest ? (1e6 * r.cpu) / r.requests : r.cpu / (r.bytes / 1e9));

/** target -> summary of its runs of one workload in one client mode. */
export function summarize(w, runsByTarget) {
  const rows = {};
  for (const [target, rs] of Object.entries(runsByTarget)) {
    if (!rs.length) continue;
    rows[target] = {
      n: rs.length,
      seconds: spread(rs.map((r) => r.seconds)),
      rate: spread(rs.map((r) => rateOf(w, r))),
      cpuPerUnit: spread(rs.map((r) => cpuPerUnitOf(w, r))),
      // The same split into user mode (JS, the parser, copies) and the kernel's (socket reads, writes into the page cache).
      userPerUnit: spread(rs.map((r) => cpuPerUnitOf(w, { ...r, cpu: r.cpuUser }))),
      systemPerUnit: spread(rs.map((r) => cpuPerUnitOf(w, { ...r, cpu: r.cpuSystem }))),
      cpuCores: median(rs.map((r) => r.cpu / r.seconds)),
      majorGcs: spread(rs.map((r) => r.majorGcs)),
      minorFaults: spread(rs.map((r) => r.minorFaults)),
      clientCores: median(rs.map((r) => r.client / r.seconds)),
      otherCores: median(rs.map((r) => r.others / r.seconds)),
      peak: spread(rs.map((r) => r.peak)),
      idle: spread(rs.map((r) => r.idle)),
      peakOverIdle: spread(rs.map((r) => r.peak - r.idle)),
      sha256: [...new Set(rs.map((r) => r.sha256Seen))].join(' / '), // express-spool answered with file.sha256: 'true', 'false', or both
    };
  }
  return rows;
}
