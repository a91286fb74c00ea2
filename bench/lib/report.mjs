// bench/results/*.md: the targets first, then every workload's table.

import { MiB, TARGET_ABOUT } from './workloads.mjs';
import { median, units } from './stats.mjs';
import { RESUMABLE_ABOUT, isResumableKey, tusVersions } from './resumable.mjs';

const fin = (x) => Number.isFinite(x);
const f = (x, d = 0) => (fin(x) ? x.toFixed(d) : '—');
const mib = (b) => (fin(b) ? (b / MiB).toFixed(0) : '—');
const range = (s, d = 0, g = (x) => x) => `${f(g(s.min), d)}–${f(g(s.max), d)}`;
const toMiB = (b) => b / MiB;

function targetsTable(targets, modes) {
  const L = [`| | workload | target | limit | ${modes.join(' | ')} | details (${modes.join('; ')}) |`, `|---|---|---|--:|${modes.map(() => '--:|').join('')}---|`];
  for (const t of targets) {
    const cells = modes.map((m) => {
      const r = t.byMode[m];
      if (!r) return '—';
      return `${r.shown ?? `${f(r.x, 2)}×`} ${r.ok == null ? '?' : r.ok ? '✅ met' : '❌ missed'}`;
    });
    const details = modes.map((m) => t.byMode[m]?.detail).filter(Boolean).join('; ');
    L.push(`| ${t.id} | ${t.workload} | ${t.text} | ${t.limit} | ${cells.join(' | ')} | ${details} |`);
  }
  // Where a target is missed: the floor it hits, measured in the same run (bench/README.md, "Profile").
  const floors = targets.flatMap((t) => modes.filter((m) => t.byMode[m]?.floor).map((m) => `- **${t.id}** (${m}): ${t.byMode[m].floor}.`));
  if (floors.length) L.push('', 'Missed targets, and the floor each one hits in this run:', '', ...floors);
  return L.join('\n');
}

function workloadTable(w, byMode) {
  const u = units(w);
  const cpuDigits = w.perRequest ? 0 : 2;
  const cols = ['target', 'mode', 'median s', 'min–max s', u.rate, `min–max ${u.rate}`, '× ceiling-disk', u.cpu, `min–max ${u.cpu}`, 'of which user / kernel', 'server cores', 'client / other cores', 'full GCs per run', 'peak RSS MiB (max)'];
  if (w.fresh) cols.push('idle RSS MiB', 'peak − idle MiB', 'min–max');
  cols.push('file.sha256');
  const L = [`| ${cols.join(' | ')} |`, `|---|---|${cols.slice(2).map(() => '--:').join('|')}|`];
  for (const [mode, rows] of Object.entries(byMode)) {
    const ceil = rows['ceiling-disk'];
    for (const [t, r] of Object.entries(rows)) {
      const cells = [
        `\`${t}\``,
        mode,
        f(r.seconds.med, 3),
        range(r.seconds, 3),
        f(r.rate.med),
        range(r.rate),
        ceil ? `${f(r.rate.med / ceil.rate.med, 2)}×` : '—',
        f(r.cpuPerUnit.med, cpuDigits),
        range(r.cpuPerUnit, cpuDigits),
        `${f(r.userPerUnit?.med, cpuDigits)} / ${f(r.systemPerUnit?.med, cpuDigits)}`,
        f(r.cpuCores, 2),
        `${f(r.clientCores, 2)} / ${f(r.otherCores, 2)}`,
        Number.isFinite(r.majorGcs?.med) ? `${f(r.majorGcs.med, 0)} (${f(r.majorGcs.min, 0)}–${f(r.majorGcs.max, 0)})` : '—',
        mib(r.peak.max),
      ];
      if (w.fresh) cells.push(mib(r.idle.med), mib(r.peakOverIdle.med), range(r.peakOverIdle, 0, toMiB));
      cells.push({ true: 'yes', false: 'no' }[r.sha256] ?? (r.sha256 ? `⚠ mixed (${r.sha256})` : ''));
      L.push(`| ${cells.join(' | ')} |`);
    }
  }
  return L.join('\n');
}

/** A resumable workload's table: like workloadTable's, with the local disk writes and express-spool's pair ratios. */
function resumableTable(w, byMode) {
  const cols = ['target', 'median s', 'min–max s', 'MB/s', 'min–max MB/s', '× tus', 'CPU s/GB', 'min–max CPU s/GB', 'of which user / kernel', 'server cores', 'client / other cores', 'peak RSS MiB (max)', 'idle RSS MiB', 'peak − idle MiB', 'min–max', 'disk writes MiB', 'min–max', 'file.sha256'];
  const L = [`| ${cols.join(' | ')} |`, `|---|${cols.slice(1).map(() => '--:').join('|')}|`];
  const other = { 'spool-tus-disk': 'tus-file', 'ceiling-tus': 'tus-file', 'spool-tus-s3': 'tus-s3', 'ceiling-tus-s3': 'tus-s3' };
  for (const rows of Object.values(byMode)) {
    for (const [t, r] of Object.entries(rows)) {
      const vs = rows[other[t]];
      L.push(`| ${[
        `\`${t}\``,
        f(r.seconds.med, 3),
        range(r.seconds, 3),
        f(r.rate.med),
        range(r.rate),
        vs ? `${f(r.rate.med / vs.rate.med, 2)}×` : '—',
        f(r.cpuPerUnit.med, 2),
        range(r.cpuPerUnit, 2),
        Number.isFinite(r.userPerUnit.med) ? `${f(r.userPerUnit.med, 2)} / ${f(r.systemPerUnit.med, 2)}` : '—',
        f(r.cpuCores, 2),
        `${f(r.clientCores, 2)} / ${f(r.otherCores, 2)}`,
        mib(r.peak.max),
        mib(r.idle.med),
        mib(r.peakOverIdle.med),
        range(r.peakOverIdle, 0, toMiB),
        f(r.diskWrites.med / MiB, 1),
        range(r.diskWrites, 1, toMiB),
        { true: 'yes', false: 'no' }[r.sha256] ?? '',
      ].join(' | ')} |`);
    }
  }
  return L.join('\n');
}

export function report({ opts, machine, W, R, digest, paired, targets, targetModes, s3, resumableS3, total, phases }) {
  const modes = opts.modes;
  const onlyResumable = Object.keys(R).length > 0 && Object.keys(R).every(isResumableKey);
  const L = ['# express-spool benchmark', ''];
  if (!opts.full) L.push(`> ${opts.quick ? 'Quick' : 'Partial'} run (options changed from the defaults): a smoke test, not a result to quote.`, '');
  if (opts.nodeFlags?.length) L.push(`> Every server process ran with the Node options \`${opts.nodeFlags.join(' ')}\`.`, '');
  if (opts.appHeapMiB) L.push(`> Every server process held about ${opts.appHeapMiB} MiB of JS objects for the whole run (\`--app-heap\`), as an application would; idle RSS includes them.`, '');
  L.push(
    `${machine.date} · ${machine.os} · ${machine.cores}× ${machine.cpu} · ${machine.memGiB} GiB RAM · load average before / after ${machine.load[0]} / ${machine.loadAfter?.[0] ?? '?'} · tmpdir ${machine.tmpdir}`,
    '',
    `Node ${machine.node} · ${Object.entries({ ...machine.versions, ...(onlyResumable || Object.keys(W).some(isResumableKey) ? tusVersions() : {}) }).map(([k, v]) => `${k} ${v}`).join(' · ')}`,
    '',
  );
  if (onlyResumable) {
    L.push(
      `Only the resumable workloads ran (section “Resumable”). Every target is its own server process on 127.0.0.1. ` +
        `CPU = the server process's \`process.cpuUsage()\` (all threads) over the run. Peak RSS = the larger of VmHWM (reset before the run) and VmRSS sampled every 20 ms. ` +
        `Run time ${(total / 60).toFixed(1)} min (${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(', ')}).`,
      '',
    );
  } else L.push(
    `Every target is its own server process on 127.0.0.1; the client (this process) writes pre-built bodies over raw sockets, ` +
      `in two modes: **keep-alive** (connections reused) and **close** (one connection per request, \`Connection: close\`, head and body in one write). ` +
      `Rounds interleave the targets (A B C …, order rotated each round): ${opts.rounds} rounds of a, b and d${W.a || W.d ? ` (${[W.a && `a: ${W.a.perRound}`, W.d && `d: ${W.d.perRound}`].filter(Boolean).join(", ")} runs per round)` : ''}, ` +
      `${opts.freshRounds} of c and the S3 pair, each run of those against a fresh server process${W.d?.perRoundServers ? '; d gets new server processes every round, each warmed up with one untimed run per mode (one process of a target can run ~15% slower than another for its whole life)' : ''}. ` +
      `${opts.verify ? `Before the rounds, one verified run per target, workload and ${opts.quick ? `mode (${modes[0]} only)` : 'mode'}: each server re-reads what it stored and answers its sha256. ` : ''}` +
      `Every response is checked (status, size, storage, express-spool's sha256). Medians with min–max. MB = 10^6 bytes of request body; ` +
      `CPU = the server process's \`process.cpuUsage()\` (all threads) over the run. Peak RSS = the larger of VmHWM (reset before the run) and VmRSS sampled every 20 ms. ` +
      `Run time ${(total / 60).toFixed(1)} min (${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(', ')}).`,
    '',
  );
  // (not the S3 runs: there the S3 server's own work is "other")
  const others = Object.entries(R)
    .filter(([k]) => !k.startsWith('s3-'))
    .flatMap(([, byMode]) => Object.values(byMode).flatMap((rows) => Object.entries(rows).filter(([t]) => !t.endsWith('-s3')).map(([, r]) => r.otherCores)));
  const noise = median(others);
  if (fin(noise)) {
    L.push(`Other load during the timed runs (CPU of everything but the server and the client, median): **${f(noise, 2)} of ${machine.cores} cores**` +
      (noise > 0.25 ? ' — ⚠ the machine was shared: lean on the CPU ratios more than on the throughput ratios.' : '.'), '');
  }
  const spoolHash = new Set(Object.values(R).flatMap((byMode) => Object.values(byMode).map((rows) => rows.spool?.sha256)).filter(Boolean));
  if (spoolHash.size === 1) {
    const on = spoolHash.has('true');
    L.push(`\`spool\` (defaults) answered ${on ? 'with' : 'without'} \`file.sha256\`: hashing is ${on ? 'on' : 'off'} by default in this build.`, '');
  }
  if (machine.distChanged || spoolHash.size > 1) {
    L.push('> ⚠ `dist/` was rebuilt while the bench ran: later server processes loaded another build than earlier ones. Run again.', '');
  }
  L.push('## Targets', '', '`spool` = express-spool with its default options. Ratios compare medians from the same rounds.', '', targetsTable(targets, targetModes ?? modes), '');
  const isS3 = (k) => k.startsWith('s3-');
  for (const [k, w] of Object.entries(W)) {
    if (!R[k] || isS3(k) || isResumableKey(k)) continue;
    L.push(`## ${k}) ${w.title}`, '', workloadTable(w, R[k]), '');
    if (w.fresh) L.push('Idle RSS: after start-up and one 16 KiB request (libraries loaded), just before the run. Peak − idle: median (min–max) over runs.', '');
  }
  if (Object.keys(digest).length) {
    L.push('## sha256 digest cost', '', 'CPU of `crypto.createHash(\'sha256\')` over the same file bytes as one run of the workload (one hash per file, 64 KiB updates), in the client process, once per round.', '');
    L.push('| workload | digest CPU per unit | min–max |', '|---|--:|--:|');
    for (const [k, s] of Object.entries(digest)) {
      const u = units(W[k]);
      const d = W[k].perRequest ? 1 : 3;
      L.push(`| ${k} | ${f(s.med, d)} ${u.cpu} | ${range(s, d)} |`);
    }
    L.push('');
  }
  const pairedKeys = Object.keys(paired?.byWorkload ?? {});
  if (pairedKeys.length) {
    L.push('## sha256 paired in one process', '', 'The targets H1–H4: express-spool\'s own parsing path (`bench/lib/spool-path.mjs`: the built middleware, no network, the file bytes counted and dropped) over the workload\'s body with `sha256` off, then on, then the digest alone over the same file bytes, each a block of one run\'s requests, back to back in a child process of the bench (rotating order; 3 samples per round, 9 for small files). A sample is (CPU on − off) ÷ the digest\'s CPU; the last column is the digest\'s CPU when each one runs between two hash-off requests. Over HTTP the two hashing servers are separate processes whose hash-off runs alone spread by more than the digest costs.', '');
    L.push('| workload | samples | ratio (median) | min–max | hash off | hash on | digest alone, in a loop | digest alone, between requests |', '|---|--:|--:|--:|--:|--:|--:|--:|');
    for (const k of pairedKeys) {
      const p = paired.byWorkload[k];
      const u = units(W[k]);
      const d = W[k].perRequest ? 1 : 3;
      L.push(`| ${k} | ${p.n} | ${p.ratio.med.toFixed(2)}× | ${p.ratio.min.toFixed(2)}–${p.ratio.max.toFixed(2)} | ${f(p.off.med, d)} | ${f(p.on.med, d)} | ${f(p.digest.med, d)} | ${f(p.digestBetween?.med, d)} ${u.cpu} |`);
    }
    L.push('');
  }
  if (s3) {
    L.push('## S3 pair', '');
    L.push(s3.skipped ? `**Skipped**: ${s3.skipped}` : `On ${s3.about}, one bucket; one file per run, each against a fresh server process (idle RSS after one 16 KiB request).`, '');
    const s3Keys = Object.keys(W).filter((k) => R[k] && isS3(k));
    for (const k of s3Keys) L.push(`### ${W[k].title}`, '', workloadTable(W[k], R[k]), '');
    if (s3Keys.length > 1) {
      const rss = (t) => s3Keys.map((k) => `${mib(R[k]['keep-alive'][t]?.peakOverIdle.med)} MiB (${W[k].fileSize / MiB} MiB file)`).join(' → ');
      L.push(`Peak − idle RSS as the file grows: ` +
        `\`spool-s3\` ${rss('spool-s3')}; \`multer-s3\` ${rss('multer-s3')}. (Here “other cores” is mostly the S3 server's own work.)`, '');
    }
  }
  const rKeys = Object.keys(W).filter((k) => R[k] && isResumableKey(k));
  if (rKeys.length) {
    const v = tusVersions();
    L.push('## Resumable (tus 1.0)', '');
    L.push(
      `express-spool's \`resumable()\` against @tus/server ${v['@tus/server']} (@tus/file-store ${v['@tus/file-store']}, @tus/s3-store ${v['@tus/s3-store']}). ` +
        `A tus 1.0 client on node:http: per upload one keep-alive connection, \`POST\` with \`Upload-Length\` (no body), then ${W[rKeys[0]].chunk / MiB} MiB ` +
        `\`PATCH\`es (\`Content-Type: application/offset+octet-stream\`) one after another, each answer's \`Upload-Offset\` checked; file bytes are slices of one random buffer made once. ` +
        `Every run against a fresh server process (idle RSS after one 16 KiB upload); ${opts.freshRounds} round${opts.freshRounds > 1 ? 's' : ''}, servers interleaved, order rotated. ` +
        `${opts.verify ? 'Before the rounds one verified run per server: the server re-reads every completed upload (disk file, S3 object) and its sha256 must match. ' : ''}` +
        `Every run checks that each upload completed (express-spool's \`onComplete\`, @tus/server's \`onUploadFinish\`) with the right size, and express-spool's \`file.sha256\`. ` +
        `MB = 10^6 bytes of file. Disk writes = the server process's \`write_bytes\` in /proc/PID/io over the run (page-cache writes count when dirtied, ` +
        `also for files deleted before they reach the disk).`,
      '',
    );
    if (resumableS3?.skipped) L.push(`**S3 pair skipped**: ${resumableS3.skipped}`, '');
    else if (resumableS3?.about) L.push(`S3 pair on ${resumableS3.about}, one bucket.`, '');
    for (const k of rKeys) L.push(`### ${k}) ${W[k].title}`, '', resumableTable(W[k], R[k]), '');
  }
  L.push('## Servers', '', ...Object.entries(TARGET_ABOUT).map(([t, a]) => `- \`${t}\`: ${a}`));
  if (rKeys.length) L.push(...Object.entries(RESUMABLE_ABOUT).map(([t, a]) => `- \`${t}\`: ${a}`));
  L.push('');
  return L.join('\n');
}
