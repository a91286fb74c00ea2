// The cost of sha256 itself: CPU time of crypto.createHash('sha256') over the same file bytes a workload
// uploads (one hash per file, fed in 64 KiB chunks as a socket would deliver them), in this process.
// (CPU of hash-on − CPU of hash-off) ÷ this = what streaming sha256 costs relative to the digest's own work.

import { createHash } from 'node:crypto';

const CHUNK = 64 * 1024;

/** CPU seconds to hash `file` `count` times. */
export function digestCpuSeconds(file, count) {
  const t0 = process.cpuUsage();
  for (let n = 0; n < count; n++) digestOnce(file);
  const u = process.cpuUsage(t0);
  return (u.user + u.system) / 1e6;
}

/** One file's sha256, fed in 64 KiB chunks as a socket would deliver them. */
export function digestOnce(file) {
  const h = createHash('sha256');
  for (let o = 0; o < file.length; o += CHUNK) h.update(file.subarray(o, o + CHUNK));
  return h.digest();
}
