// What the client reads about a server process from procfs (Linux only).

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

/** { rss, hwm } of a process in bytes (VmRSS, VmHWM). */
export function memory(pid) {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Resets VmHWM to the current RSS (clear_refs "5"); false where the kernel does not allow it. */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Busy CPU seconds of the whole machine (all cores; everything but idle and iowait). */
export function machineBusySeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLK_TCK;
}

/**
 * Peak RSS of a process during a run: VmRSS sampled every `everyMs` ms, and VmHWM (reset at the start
 * where the kernel allows it, so it is the true peak of this run). `stop()` returns the larger of the two.
 */
export function peakRss(pid, everyMs = 20) {
  const hwmReset = resetPeak(pid);
  let max = memory(pid).rss;
  const timer = setInterval(() => {
    try {
      max = Math.max(max, memory(pid).rss);
    } catch {}
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const m = memory(pid);
      return { peak: Math.max(max, m.rss, hwmReset ? m.hwm : 0), sampled: Math.max(max, m.rss), rssAfter: m.rss };
    },
  };
}
