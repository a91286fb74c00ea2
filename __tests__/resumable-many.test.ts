/**
 * Many instances (#15): resumable uploads on one S3 bucket and one Redis, served by several processes
 * behind a round-robin TCP proxy. Each instance is a child process (a TypeScript require hook, as in
 * resumable-s3.test.ts) running __tests__/helpers/many-instances-child.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { resumable, s3ResumableStore } from '../lib/index';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';
import { request, sha256Of, TUS, OCTETS, tusUpload } from './helpers/resumable';

const MiB = 1024 * 1024;
const LEASE = 2_000;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => {
  client = c;
  bucket = b;
});

const HOOK = `
  const ts = require(${JSON.stringify(require.resolve('typescript'))});
  require.extensions['.ts'] = (module, filename) => {
    const source = require('node:fs').readFileSync(filename, 'utf8');
    const { outputText } = ts.transpileModule(source, { fileName: filename, compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } });
    module._compile(outputText, filename);
  };
  require(${JSON.stringify(resolve(__dirname, 'helpers/many-instances-child.ts'))});`;

interface Instance {
  port: number;
  child: ChildProcess;
}

async function startInstance(port: number, prefix: string): Promise<Instance> {
  const child = spawn(process.execPath, ['-e', HOOK, String(port), bucket, prefix, String(LEASE)], {
    env: { ...process.env, NODE_OPTIONS: '', NODE_NO_WARNINGS: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = await new Promise<number>((ok, fail) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk;
      const match = /ready (\d+)/.exec(out);
      if (match) ok(Number(match[1]));
    });
    child.once('exit', (code, signal) => fail(new Error(`instance exited with ${code ?? signal}`)));
  });
  return { port: ready, child };
}

function stop(instance: Instance): Promise<void> {
  if (instance.child.exitCode !== null || instance.child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => {
    instance.child.once('exit', () => done());
    instance.child.kill('SIGKILL');
  });
}

/**
 * Round robin over `ports`, one backend per connection. A cut drops the client's side only and leaves the
 * server's side open and silent for 20 s: the instance keeps a half-open request holding the upload, as
 * when a client's network goes away without a FIN.
 */
async function startBalancer(ports: number[], cut: { minBytes: number; maxBytes: number; maxCuts: number }) {
  let next = 0;
  let cuts = 0;
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const server = net.createServer((socket) => {
    const upstream = net.connect(ports[next++ % ports.length], '127.0.0.1');
    sockets.add(socket).add(upstream);
    const allowance = cut.minBytes + Math.floor(Math.random() * (cut.maxBytes - cut.minBytes));
    let forwarded = 0;
    let halfOpen = false;
    const drop = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('data', (chunk: Buffer) => {
      if (cuts < cut.maxCuts && forwarded + chunk.length > allowance) {
        cuts++;
        halfOpen = true;
        upstream.write(chunk.subarray(0, Math.max(0, allowance - forwarded)));
        socket.destroy(); // the client sees the cut; the server does not
        upstream.removeAllListeners('data');
        upstream.on('data', () => undefined);
        const timer = setTimeout(() => upstream.destroy(), 20_000);
        timers.add(timer);
        return;
      }
      forwarded += chunk.length;
      if (!upstream.write(chunk)) socket.pause();
    });
    upstream.on('drain', () => socket.resume());
    upstream.on('data', (chunk: Buffer) => socket.destroyed || socket.write(chunk));
    socket.on('error', () => undefined).on('close', () => halfOpen || upstream.destroy());
    socket.on('end', () => upstream.end());
    upstream.on('end', () => socket.end());
    upstream.on('error', drop).on('close', () => socket.destroy());
    void drop;
  });
  await new Promise<void>((ready) => server.listen(0, '127.0.0.1', ready));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get cuts() {
      return cuts;
    },
    close: () =>
      new Promise<void>((done) => {
        for (const timer of timers) clearTimeout(timer);
        for (const socket of sockets) socket.destroy();
        server.close(() => done());
      }),
  };
}

async function keysUnder(prefix: string): Promise<string[]> {
  const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (res.Contents ?? []).map((o) => o.Key!);
}

/** A store over the same bucket and prefix, for its sweep (the instances run none). */
function sweeper(prefix: string) {
  return resumable({ store: s3ResumableStore({ client, bucket, prefix, partSize: '5MiB' }), sweepInterval: 0 });
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

describe('resumable uploads on many instances (S3 + Redis)', () => {
  test('3 instances behind a round-robin proxy: 20 concurrent uploads through cuts and a SIGKILL + restart, all byte-exact', async () => {
    const prefix = `many-${randomBytes(3).toString('hex')}/`;
    const instances = await Promise.all([0, 1, 2].map(() => startInstance(0, prefix)));
    const ports = instances.map((i) => i.port);
    const balancer = await startBalancer(ports, { minBytes: 256 * 1024, maxBytes: 4 * MiB, maxCuts: 30 });
    // Each: ms from the failure to the first HEAD answered 200, and how many attempts failed in between.
    const resumes: { ms: number; failures: number }[] = [];
    let killed = 0;
    try {
      const sources = Array.from({ length: 20 }, () => randomBytes(5 * MiB + Math.floor(Math.random() * 2 * MiB)));
      const started = Date.now();
      const uploads = sources.map((data) => {
        let failedAt: number | undefined;
        let failures = 0;
        return tusUpload(data, {
          endpoint: `${balancer.url}/files`,
          chunkSize: 3 * MiB,
          retryDelays: [0, 100, 250, 500, 1000, 1000, 1000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000],
          onShouldRetry: (_err, attempt, opts) => {
            failedAt ??= Date.now();
            failures++;
            return attempt < (opts.retryDelays?.length ?? 0);
          },
          onAfterResponse: (req, res) => {
            // Reconnect → accepted resume: from the failure to the first HEAD that answers with the offset.
            if (failedAt !== undefined && req.getMethod() === 'HEAD' && res.getStatus() === 200) {
              resumes.push({ ms: Date.now() - failedAt, failures });
              failedAt = undefined;
              failures = 0;
            }
          },
        });
      });
      // One instance dies mid-run (SIGKILL: no cleanup at all) and comes back on the same port.
      const chaos = (async () => {
        await new Promise((r) => setTimeout(r, 4_000));
        await stop(instances[1]);
        killed++;
        await new Promise((r) => setTimeout(r, 1_000));
        instances[1] = await startInstance(ports[1], prefix);
      })();
      let finished = 0;
      const progress = setInterval(() => process.stderr.write(`[resumable-many] ${((Date.now() - started) / 1000).toFixed(0)} s: ${finished}/${sources.length} done, ${balancer.cuts} cuts, ${resumes.length} resumes\n`), 5_000);
      const results = await Promise.all(uploads.map((u) => u.then((r) => (finished++, r)))).finally(() => clearInterval(progress));
      await chaos;
      const elapsed = Date.now() - started;
      for (const [i, result] of results.entries()) {
        const id = new URL(result.url).pathname.split('/').pop()!;
        const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: prefix + id }));
        expect(await sha256Of(object.Body as Readable)).toBe(createHash('sha256').update(sources[i]).digest('hex'));
      }
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      // Nothing beside each completed object but its last state: no tail, no earlier state, whatever was cut or
      // killed — once a sweep has run (a completion SIGKILLed before its clean-up leaves that to the sweep, or
      // to the next request that reads the upload).
      const before = (await keysUnder(prefix)).filter((key) => /\.(state|tail)\./.test(key)).length - results.length;
      await sweeper(prefix).sweep();
      process.stderr.write(`[resumable-many] leftovers before the sweep: ${before} objects\n`);
      const left = (await keysUnder(prefix)).map((key) => key.slice(prefix.length).replace(/\.state\.\d{10}$/, '.state')).sort();
      const ids = results.map((result) => new URL(result.url).pathname.split('/').pop()!);
      expect(left).toEqual(ids.flatMap((id) => [id, `${id}.state`]).sort());
      // Removal leaves nothing: no object, no state, no tail.
      for (const result of results) {
        const res = await request(result.url.replace(/^http:\/\/[^/]+/, `http://127.0.0.1:${instances[0].port}`), 'DELETE', { ...TUS });
        expect(res.status).toBe(204);
      }
      expect(await keysUnder(prefix)).toEqual([]);
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      resumes.sort((a, b) => a.ms - b.ms);
      const times = resumes.map((r) => r.ms);
      const total = sources.reduce((sum, s) => sum + s.length, 0);
      process.stderr.write(
        `[resumable-many] ${sources.length} uploads, ${(total / MiB).toFixed(0)} MiB in ${(elapsed / 1000).toFixed(1)} s, ` +
          `${balancer.cuts} cuts, ${killed} SIGKILL, ${results.reduce((n, r) => n + r.errors, 0)} client retries; ` +
          `reconnect → accepted resume (n=${resumes.length}): p50 ${percentile(times, 50)} ms, p90 ${percentile(times, 90)} ms, p99 ${percentile(times, 99)} ms, max ${times.at(-1)} ms; ` +
          `slowest: ${resumes.slice(-3).map((r) => `${r.ms} ms (${r.failures} failed attempts)`).join(', ')}\n`,
      );
      expect(balancer.cuts).toBeGreaterThan(10);
    } finally {
      await balancer.close();
      await Promise.all(instances.map(stop));
    }
  }, 150_000);

  test('fencing: a writer frozen past its lease (SIGSTOP) is refused when it wakes; the upload stays byte-exact', async () => {
    const prefix = `fence-${randomBytes(3).toString('hex')}/`;
    const [a, b] = await Promise.all([startInstance(0, prefix), startInstance(0, prefix)]);
    try {
      const data = randomBytes(12 * MiB);
      const created = await request(`http://127.0.0.1:${a.port}/files`, 'POST', { ...TUS, 'Upload-Length': data.length });
      expect(created.status).toBe(201);
      const path = created.headers.location!;
      // A receives 6 MiB (a part goes to S3, a tail sits in its memory), then freezes mid-request.
      const late = http.request(`http://127.0.0.1:${a.port}${path}`, {
        method: 'PATCH',
        headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': data.length },
      });
      const lateAnswer = new Promise<number>((done) => {
        late.on('response', (res) => {
          res.resume();
          done(res.statusCode!);
        });
        late.on('error', () => done(0));
      });
      late.write(data.subarray(0, 6 * MiB));
      await new Promise((r) => setTimeout(r, 1_000));
      a.child.kill('SIGSTOP');
      // B takes over once A's lease lapses (A cannot answer the release message while frozen).
      const t0 = Date.now();
      const head = await request(`http://127.0.0.1:${b.port}${path}`, 'HEAD', { ...TUS });
      const takeover = Date.now() - t0;
      expect(head.status).toBe(200);
      const offset = Number(head.headers['upload-offset']);
      const done = await request(`http://127.0.0.1:${b.port}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': offset }, data.subarray(offset));
      expect(done.status).toBe(204);
      // A wakes up and sends the rest of its body: every write it would make is refused.
      a.child.kill('SIGCONT');
      late.end(data.subarray(6 * MiB));
      const status = await lateAnswer;
      process.stderr.write(`[resumable-many] fencing: B took over after ${takeover} ms (lease ${LEASE} ms, A had committed ${offset} bytes); A's late request answered ${status}\n`);
      expect(status).not.toBe(204);
      const id = path.split('/').pop()!;
      const object = await client.send(new GetObjectCommand({ Bucket: bucket, Key: prefix + id }));
      expect(await sha256Of(object.Body as Readable)).toBe(createHash('sha256').update(data).digest('hex'));
      expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
      expect((await request(`http://127.0.0.1:${b.port}${path}`, 'DELETE', { ...TUS })).status).toBe(204);
      expect(await keysUnder(prefix)).toEqual([]);
    } finally {
      a.child.kill('SIGCONT');
      await Promise.all([stop(a), stop(b)]);
    }
  }, 60_000);
});
