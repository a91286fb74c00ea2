// npm run soak: 64 concurrent clients upload mixed sizes (1 KiB – 64 MiB) for 60 s against one server
// process; every upload must come back byte-exact, and the server's peak RSS must stay within
// idle + memory budget + a stated overhead. Options: --seconds N, --clients N.
import { fork } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const SECONDS = arg('seconds', 60);
const CLIENTS = arg('clients', 64);
const BUDGET = 64 * 1024 * 1024;
const OVERHEAD = 96 * 1024 * 1024; // stated bound for everything that is not upload data
const MiB = 1024 * 1024;

const dir = mkdtempSync(join(tmpdir(), 'spool-soak-'));
const server = fork(new URL('./soak-server.mjs', import.meta.url), { env: { ...process.env, SOAK_DIR: dir } });
const { port } = await new Promise((resolve) => server.once('message', resolve));
const procStatus = (key) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))[1]) * 1024;
await new Promise((r) => setTimeout(r, 500));
const idle = procStatus('VmRSS');

// A pool of payloads with log-uniform sizes, built once: the client must not dominate the 2 cores.
const BOUNDARY = '----SoakBoundary9f8e7d';
const payloads = Array.from({ length: 32 }, (_, i) => {
  const size = i === 0 ? 1024 : i === 1 ? 64 * MiB : Math.round(Math.exp(Math.log(1024) + Math.random() * Math.log(64 * 1024)));
  const data = randomBytes(size);
  const head = Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="p${i}"\r\nContent-Type: application/octet-stream\r\n\r\n`);
  const body = Buffer.concat([head, data, Buffer.from(`\r\n--${BOUNDARY}--\r\n`)]);
  return { size, body, sha256: createHash('sha256').update(data).digest('hex') };
});

const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
const stats = { uploads: 0, bytes: 0, mismatches: 0, errors: 0, memory: 0, disk: 0 };
const post = (payload) =>
  new Promise((resolve, reject) => {
    const req = http.request(
      { port, host: '127.0.0.1', path: '/upload', method: 'POST', agent, headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}`, 'content-length': payload.body.length } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c)).on('end', () => resolve({ status: res.statusCode, json: JSON.parse(Buffer.concat(chunks).toString()) }));
      },
    );
    req.on('error', reject);
    req.end(payload.body);
  });

let peak = idle;
const sampler = setInterval(() => (peak = Math.max(peak, procStatus('VmRSS'))), 50);
const deadline = Date.now() + SECONDS * 1000;
const started = Date.now();
await Promise.all(
  Array.from({ length: CLIENTS }, async () => {
    while (Date.now() < deadline) {
      const payload = payloads[Math.floor(Math.random() * payloads.length)];
      try {
        const { status, json } = await post(payload);
        const file = json.files?.[0];
        if (status !== 200 || !file) stats.errors++;
        else if (file.size !== payload.size || file.reread !== payload.sha256 || file.streamed !== payload.sha256) stats.mismatches++;
        else {
          stats.uploads++;
          stats.bytes += payload.size;
          stats[file.storage]++;
        }
      } catch {
        stats.errors++;
      }
    }
  }),
);
clearInterval(sampler);
const elapsed = (Date.now() - started) / 1000;
const hwm = procStatus('VmHWM');
const budgetAfter = await new Promise((resolve) => http.get({ port, host: '127.0.0.1', path: '/budget', agent }, (res) => { let t = ''; res.on('data', (c) => (t += c)).on('end', () => resolve(JSON.parse(t).used)); }));
await new Promise((r) => setTimeout(r, 300));
const left = readdirSync(dir).length;
server.kill();
agent.destroy();
rmSync(dir, { recursive: true, force: true });

const peakRss = Math.max(peak, hwm);
const bound = idle + BUDGET + OVERHEAD;
const lines = [
  `soak: ${CLIENTS} clients × ${SECONDS} s, payload sizes 1 KiB – 64 MiB`,
  `uploads ok: ${stats.uploads} (memory ${stats.memory}, disk ${stats.disk}), ${(stats.bytes / MiB).toFixed(0)} MiB, ${(stats.bytes / MiB / elapsed).toFixed(1)} MiB/s`,
  `byte mismatches: ${stats.mismatches}, failed requests: ${stats.errors}, temp files left: ${left}, budget in use after: ${budgetAfter}`,
  `server RSS: idle ${(idle / MiB).toFixed(0)} MiB, peak ${(peakRss / MiB).toFixed(0)} MiB (VmHWM), bound idle + budget 64 MiB + overhead 96 MiB = ${(bound / MiB).toFixed(0)} MiB`,
];
console.log(lines.join('\n'));
const ok = stats.mismatches === 0 && stats.errors === 0 && left === 0 && budgetAfter === 0 && peakRss <= bound && stats.uploads > 0;
console.log(ok ? 'soak: PASS' : 'soak: FAIL');
process.exit(ok ? 0 : 1);
