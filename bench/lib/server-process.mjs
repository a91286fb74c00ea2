// The client's handle on one target server (bench/server.mjs) in its own process.

import { fork } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { memory } from './proc.mjs';

const SERVER = join(dirname(fileURLToPath(import.meta.url)), '..', 'server.mjs');
const APP_HEAP = join(dirname(fileURLToPath(import.meta.url)), 'app-heap.cjs');

export class Server {
  /**
   * @param {string} name  target name (see bench/server.mjs)
   * @param {string} dir   where it stores files; for express-spool's defaults also its TMPDIR
   * @param {{ cpuProf?: string, nodeFlags?: string[], appHeapMiB?: number, env?: object }} [options]
   */
  static async start(name, dir, { cpuProf, nodeFlags, appHeapMiB, env } = {}) {
    mkdirSync(dir, { recursive: true });
    const { execArgv, env: runEnv } = serverSpawn(name, dir, { cpuProf, nodeFlags, appHeapMiB });
    const child = fork(SERVER, [name, dir], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      execArgv,
      env: { ...runEnv, ...env },
    });
    const ready = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`server ${name} exited with ${code} before listening`)));
    });
    const s = new Server();
    Object.assign(s, { name, dir, child, pid: ready.pid, port: ready.port, seq: 0 });
    child.on('exit', (code, signal) => {
      s.exited = true;
      if (!s.stopping) process.stderr.write(`!! server ${name} exited unexpectedly (${code ?? signal})\n`);
    });
    return s;
  }

  /** Sends an IPC command and resolves with the server's answer. */
  command(cmd, extra = {}) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      // (a server that dies first never answers)
      const onExit = () => {
        this.child.off('message', onMsg);
        reject(new Error(`${this.name} ${cmd}: the server exited`));
      };
      const onMsg = (m) => {
        if (m?.ack !== id) return;
        this.child.off('message', onMsg).off('exit', onExit);
        if (m.error) reject(new Error(`${this.name} ${cmd}: ${m.error}`));
        else resolve(m);
      };
      if (this.exited) return onExit();
      this.child.on('message', onMsg).once('exit', onExit);
      this.child.send({ cmd, id, ...extra }, (err) => err && onExit());
    });
  }

  setVerify(on) {
    return this.command('verify', { on });
  }

  /** CPU seconds the server process has used so far (all threads, µs resolution). */
  async cpuSeconds() {
    return (await this.usage()).cpu;
  }

  /**
   * CPU seconds so far (in all, in user and in kernel mode), the full (mark-compact) GCs the process has run
   * so far, and its minor page faults (pages of memory it touched for the first time, or again after giving
   * them back).
   */
  async usage() {
    const u = await this.command('cpu');
    return { cpu: u.cpuMicros / 1e6, user: u.userMicros / 1e6, system: u.systemMicros / 1e6, majorGcs: u.majorGcs, minorFaults: u.minorFaults };
  }

  rss() {
    return memory(this.pid).rss;
  }

  /** Paths of the files under the target's directory (any depth). */
  storedFiles() {
    return readdirSync(this.dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath ?? e.path, e.name));
  }

  /** Deletes stored files (not directories: an engine may have created its directory once) and S3 objects. */
  async removeStored() {
    for (const f of this.storedFiles()) rmSync(f, { force: true });
    await this.command('cleanup');
  }

  async stop() {
    if (this.exited || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.stopping = true;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    // (a child that died meanwhile: the send fails, and it is killed for sure)
    this.child.send({ cmd: 'exit' }, (err) => err && this.child.kill('SIGKILL'));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * How a target's server process is started (bench/server.mjs and resumable-main.mjs alike): `--cpu-prof` when
 * asked, the run's `--node-flags`, and with `--app-heap` the preload that holds an application-sized heap (its
 * size in BENCH_APP_HEAP_MIB); its TMPDIR is the target's directory.
 */
export function serverSpawn(name, dir, { cpuProf, nodeFlags = [], appHeapMiB = 0 } = {}) {
  const prof = cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${cpuProf}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`] : [];
  const heap = appHeapMiB > 0 ? ['--require', APP_HEAP] : [];
  return {
    execArgv: [...prof, ...nodeFlags, ...heap],
    // (the AWS SDK's notice about future Node versions is noise here)
    env: { ...process.env, TMPDIR: dir, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', BENCH_APP_HEAP_MIB: String(appHeapMiB) },
  };
}
