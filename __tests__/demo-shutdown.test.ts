// The demo's shutdown with resumable appends still streaming (found by a hostile review): the README's
// "deletes every file it stored (unfinished resumable uploads too)" holds when it resolves and after.
import http from 'node:http';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../examples/config';
import { startDemoServer } from '../examples/server';
import { tempDir } from './helpers/app';

const MiB = 1024 * 1024;

function req(url: string, method: string, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { method, headers }, (res) => {
      let b = '';
      res.setEncoding('utf8').on('data', (d) => (b += d)).on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: b }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

function listAll(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true }).map(String).filter((n) => n !== 'resumable');
}

test('SIGTERM-style shutdown while tus PATCHes stream (past SHUTDOWN_TIMEOUT): nothing is left in UPLOAD_DIR', async () => {
  const dir = tempDir('demo-shutdown-');
  const running = await startDemoServer(loadConfig({ UPLOAD_DIR: dir.path, PORT: '0', SHUTDOWN_TIMEOUT: '200' }), () => undefined);
  const N = 6;
  const sockets: http.ClientRequest[] = [];
  for (let i = 0; i < N; i++) {
    const created = await req(`${running.url}/uploads/`, 'POST', { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(20 * MiB), 'Upload-Metadata': 'filename ' + Buffer.from(`f${i}.bin`).toString('base64') });
    expect(created.status).toBe(201);
    const location = new URL(created.headers.location!, running.url).toString();
    const patch = http.request(location, { method: 'PATCH', headers: { 'Tus-Resumable': '1.0.0', 'Upload-Offset': '0', 'Content-Type': 'application/offset+octet-stream', 'Content-Length': String(20 * MiB) } });
    patch.on('error', () => undefined);
    patch.on('response', (res) => res.resume());
    sockets.push(patch);
    // a trickle: 256 KiB now, then 64 KiB every 20 ms (never finishes within the shutdown timeout)
    patch.write(Buffer.alloc(256 * 1024, i));
    const t = setInterval(() => { if (!patch.destroyed) patch.write(Buffer.alloc(64 * 1024, i)); }, 20);
    patch.on('close', () => clearInterval(t));
    patch.on('error', () => clearInterval(t));
  }
  await new Promise((r) => setTimeout(r, 600));
  await running.shutdown();
  const atResolve = listAll(dir.path);
  for (const s of sockets) s.destroy();
  // Give any append still settling in the background time to write what it would
  await new Promise((r) => setTimeout(r, 1500));
  const left = listAll(dir.path);
  const contents = left.map((n) => readFileSync(path.join(dir.path, n), 'utf8'));
  dir.remove();
  // When shutdown() resolved (the process exits right then under npm start) and a moment later:
  expect({ atResolve, left, contents }).toEqual({ atResolve: [], left: [], contents: [] });
}, 60_000);
