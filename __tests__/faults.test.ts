import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import request from 'supertest';
import { diskEngine, spool } from '../lib';
import { close, echoApp, eventually, listen, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody, randomData, sha256 } from './helpers/multipart';

/** A real, tiny filesystem: a tmpfs mounted for the test (needs root, as CI runs). */
function mountTmpfs(options: string): { path: string; unmount(): void } {
  const path = join(tmpdir(), `spool-tmpfs-${process.pid}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(path);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    rmSync(path, { recursive: true, force: true });
    throw err;
  }
  return {
    path,
    unmount: () => {
      execFileSync('umount', [path]);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

// Why tmpfs cannot be mounted here (not root, or a container without CAP_SYS_ADMIN), or undefined. Those
// tests are then skipped, and say so, rather than fail (or pass) for a reason that is not theirs.
const noTmpfs = ((): string | undefined => {
  try {
    mountTmpfs('size=64k').unmount();
    return undefined;
  } catch (err) {
    const { stderr, message } = err as { stderr?: Buffer; message: string };
    return `${process.getuid?.() === 0 ? '' : 'not root: '}${(stderr?.toString() || message).trim().split('\n')[0]}`;
  }
})();
if (noTmpfs) console.warn(`SKIPPED: the engine-fault tests need to mount a tmpfs (run as root): ${noTmpfs}`);

(noTmpfs ? describe.skip : describe)(`engine faults → typed 5xx, nothing left, other requests unaffected${noTmpfs ? ` [SKIPPED: cannot mount a tmpfs: ${noTmpfs}]` : ''}`, () => {
  test('the disk fills up mid-file → 507 STORAGE_FULL, partial file removed', async () => {
    const full = mountTmpfs('size=1m');
    const healthy = tempDir();
    try {
      const small = spool({ threshold: 0, rollover: diskEngine({ directory: full.path }) });
      const roomy = spool({ threshold: 0, rollover: diskEngine({ directory: healthy.path }), sha256: true });
      const other = randomData(3 * 1024 * 1024);
      const [failed, ok] = await Promise.all([
        request(echoApp(small.any())).post('/upload').attach('f', randomData(3 * 1024 * 1024), 'big'),
        request(echoApp(roomy.any())).post('/upload').attach('f', other, 'ok'),
      ]);
      expect(failed.status).toBe(507);
      expect(failed.body.error.code).toBe('STORAGE_FULL');
      expect(readdirSync(full.path)).toEqual([]);
      expect(ok.status).toBe(200);
      expect(ok.body.files[0].sha256).toBe(sha256(other));
    } finally {
      full.unmount();
      healthy.remove();
    }
  });

  test('a directory that cannot be written → 500 STORAGE_FAILED, earlier files of the request removed', async () => {
    const readonly = mountTmpfs('ro,size=1m');
    const healthy = tempDir();
    try {
      let calls = 0;
      const good = diskEngine({ directory: healthy.path });
      const bad = diskEngine({ directory: readonly.path });
      const upload = spool({ storage: { name: 'alternating', store: (s, f, c) => (calls++ === 0 ? good : bad).store(s, f, c) } });
      const res = await request(echoApp(upload.any())).post('/upload').attach('f', randomData(1000), 'first').attach('f', randomData(1000), 'second');
      expect(res.status).toBe(500);
      expect(res.body.error.code).toBe('STORAGE_FAILED');
      expect(res.body.error.message).toMatch(/EROFS/);
      expect(healthy.files()).toEqual([]); // the first file, already stored, was removed
      expect(upload.memoryBudget.used).toBe(0);
    } finally {
      readonly.unmount();
      healthy.remove();
    }
  });
});

describe('leak check: 1,000 aborted and 1,000 completed requests in one process', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const openFds = () => readdirSync('/proc/self/fd').length;

  test('heap and open file descriptors return to within a small bound of the start (1,000 aborted and 1,000 completed requests, every completed one answered 200)', async () => {
    const dir = tempDir();
    const upload = spool({ threshold: 32 * 1024, rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }) });
    const server = await listen(echoApp(upload.any()));
    const { port } = server.address() as AddressInfo;
    const body = multipartBody([
      { name: 'small', filename: 's', data: randomData(8 * 1024) },
      { name: 'large', filename: 'l', data: randomData(100 * 1024) },
    ]);
    const head = `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=${BOUNDARY}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    // The status line each completed request was answered with (Connection: close, so one answer each).
    const answers = new Map<string, number>();
    const once = (abortAt?: number) =>
      new Promise<void>((resolve) => {
        let answer = '';
        const socket = net.connect(port, '127.0.0.1', () => {
          socket.write(head);
          if (abortAt === undefined) socket.write(body);
          else socket.write(body.subarray(0, abortAt), () => setTimeout(() => socket.destroy(), 1));
        });
        socket.on('data', (d: Buffer) => (answer += d.toString('latin1'))).on('error', () => undefined).on('close', () => {
          if (abortAt === undefined) {
            const status = answer.split('\r\n')[0];
            answers.set(status, (answers.get(status) ?? 0) + 1);
          }
          resolve();
        });
      });
    const round = async (n: number) => {
      for (let i = 0; i < n; i += 10) {
        await Promise.all(Array.from({ length: 10 }, (_, j) => once((i + j) % 2 === 0 ? undefined : ((i + j) * 7919) % body.length)));
      }
    };
    try {
      await round(200); // warm up: JIT, pools, lazily created objects
      expect(Object.fromEntries(answers)).toEqual({ 'HTTP/1.1 200 OK': 100 });
      answers.clear();
      await eventually(() => expect(dir.files()).toEqual([]));
      gc();
      const heapBefore = process.memoryUsage().heapUsed;
      const fdsBefore = openFds();
      await round(2000); // 1,000 completed + 1,000 aborted
      expect(Object.fromEntries(answers)).toEqual({ 'HTTP/1.1 200 OK': 1000 }); // every completed one was served
      await eventually(() => expect(dir.files()).toEqual([]));
      await eventually(() => expect(upload.memoryBudget.used).toBe(0));
      await new Promise((r) => setTimeout(r, 100));
      gc();
      const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
      const fdGrowth = openFds() - fdsBefore;
      console.log(`leak check: heap ${(heapGrowth / 1024).toFixed(0)} KiB, fds ${fdGrowth} after 2,000 requests`);
      expect(heapGrowth).toBeLessThan(4 * 1024 * 1024); // bound: 4 MiB (≈ 2 KiB per request would already trip it)
      expect(fdGrowth).toBeLessThanOrEqual(2);
    } finally {
      await close(server);
      dir.remove();
    }
  }, 120_000);
});
