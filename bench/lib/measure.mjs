// One timed run of one workload against one server, with its checks.

import { machineBusySeconds, peakRss } from './proc.mjs';
import { expected } from './workloads.mjs';
import { now, requestHead, runPool } from './http-client.mjs';

/**
 * @param {import('./server-process.mjs').Server} server
 * @param {{ key, fileSize, count, concurrency }} w  the workload
 * @param {object} body   makeBody(w.fileSize)
 * @param {{ mode: 'keep-alive'|'close', verify?: boolean }} options
 * @returns {{ seconds, bytes, requests, cpu, client, others, peak, rssBefore, rssAfter, finish, sha256Seen }}
 */
export async function runOnce(server, w, body, { mode, verify = false }) {
  const want = expected(server.name, w.fileSize);
  const keepAlive = mode === 'keep-alive';
  const head = requestHead({ port: server.port, contentType: body.headers['content-type'], length: body.body.length, keepAlive });
  if (verify) await server.setVerify(true);
  const rssBefore = server.rss();
  const usage0 = await server.usage();
  const busy0 = machineBusySeconds();
  const self0 = process.cpuUsage();
  const problems = [];
  const hashes = new Set();
  const peak = peakRss(server.pid);
  const t0 = now();
  const finish = await runPool({
    port: server.port,
    head,
    body: body.body,
    count: w.count,
    concurrency: w.concurrency,
    keepAlive,
    t0,
    onResponse: (res, i) => {
      if (problems.length > 5) return;
      if (res.status !== 200) return void problems.push(`#${i}: HTTP ${res.status} ${res.body.toString().slice(0, 300)}`);
      const { files } = res.json();
      if (files?.length !== 1) return void problems.push(`#${i}: ${files?.length} files in the answer`);
      const f = files[0];
      const wantSize = want.raw ? body.body.length : w.fileSize;
      const wantSha = want.raw ? body.bodySha256 : body.fileSha256;
      if (f.size !== wantSize && !want.sizeUnknown) problems.push(`#${i}: size ${f.size}, want ${wantSize}`);
      if (f.storage !== want.storage) problems.push(`#${i}: storage ${f.storage}, want ${want.storage}`);
      if (want.spool) {
        hashes.add(f.sha256 !== undefined);
        if (f.sha256 !== undefined && f.sha256 !== body.fileSha256) problems.push(`#${i}: express-spool's sha256 ${f.sha256} is wrong`);
        if (want.sha256 !== undefined && want.sha256 !== (f.sha256 !== undefined)) problems.push(`#${i}: sha256 ${want.sha256 ? 'missing' : 'present'}`);
      }
      if (verify && f.stored !== wantSha) problems.push(`#${i}: stored bytes sha256 ${f.stored}, want ${wantSha}`);
    },
  });
  const seconds = (now() - t0) / 1e3;
  const mem = peak.stop();
  const usage = await server.usage();
  const cpu = usage.cpu - usage0.cpu;
  const selfCpu = process.cpuUsage(self0);
  const client = (selfCpu.user + selfCpu.system) / 1e6;
  // What the rest of the machine did meanwhile (other processes, unattributed kernel work): a noise gauge.
  const others = Math.max(0, machineBusySeconds() - busy0 - cpu - client);
  if (verify) await server.setVerify(false);
  if (want.filesLeft) {
    const n = server.storedFiles().length;
    if (n !== w.count) problems.push(`${n} files on disk, want ${w.count}`);
  }
  await server.removeStored();
  if (problems.length) throw new Error(`${server.name} / ${w.key} / ${mode}${verify ? ' (verification)' : ''}: ${problems.join('; ')}`);
  return {
    seconds,
    bytes: w.count * body.body.length,
    requests: w.count,
    cpu,
    cpuUser: usage.user - usage0.user,
    cpuSystem: usage.system - usage0.system,
    majorGcs: usage.majorGcs - usage0.majorGcs,
    minorFaults: usage.minorFaults - usage0.minorFaults,
    client,
    others,
    peak: mem.peak,
    rssBefore,
    rssAfter: mem.rssAfter,
    finish,
    sha256Seen: hashes.size === 1 ? [...hashes][0] : undefined,
  };
}
