// The machine and the versions a result was measured with.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function machineInfo() {
  const v = (p) => {
    try {
      return JSON.parse(readFileSync(join(ROOT, 'node_modules', p, 'package.json'), 'utf8')).version;
    } catch {
      return '?';
    }
  };
  let git = '';
  try {
    git = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'lib', 'engines'], { encoding: 'utf8' }).trim();
    if (dirty) git += ' + uncommitted changes in lib/ or engines/';
  } catch {}
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: cpus[0]?.model ?? '?',
    cores: cpus.length,
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    load: os.loadavg().map((x) => +x.toFixed(2)),
    tmpdir: os.tmpdir(),
    node: process.version,
    versions: {
      'express-spool': `${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version}${git ? ` (${git})` : ''}`,
      express: v('express'),
      multer: v('multer'),
      'multer-s3': v('multer-s3'),
      '@fastify/busboy': v('@fastify/busboy'),
      '@aws-sdk/client-s3': v('@aws-sdk/client-s3'),
    },
  };
}

/** Newest modification time of the built package (dist/lib, dist/engines): to notice a rebuild during a run. */
export function distFingerprint() {
  let newest = 0;
  for (const d of ['lib', 'engines']) {
    const dir = join(ROOT, 'dist', d);
    for (const f of readdirSync(dir)) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
  }
  return newest;
}
