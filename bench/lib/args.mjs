// Command line of bench/run.mjs, and what --quick changes.

import { resolve } from 'node:path';
import { MODES } from './workloads.mjs';

const ALL = ['a', 'b', 'c', 'c-app', 'd', 's3'];

export const USAGE = `usage: node bench/run.mjs [--quick] [--rounds N] [--only a,b,c,c-app,d,s3] [--modes keep-alive,close]
                          [--no-verify] [--cpu-prof DIR] [--node-flags "FLAGS"] [--app-heap MIB]
                          [--out FILE.md]
  --quick       2 rounds (c and S3: 1), a 2 runs per round, c 8 × 64 MiB, d 500 requests, verification
                in one mode: a check that everything works (~3 min; longer on a busy machine)
  --rounds N    rounds of every workload (default 7; --quick: 2, c, S3 and resumable 1)
  --only LIST   only these workloads (s3 = the S3 pair; c-app = c with an app-sized heap in every server)
  --modes LIST  client modes (default both)
  --no-verify   skip the verified warm-up runs
  --cpu-prof    servers run under node --cpu-prof (summarise: node bench/profile-summary.mjs DIR/*.cpuprofile)
  --node-flags  Node options for every server process, e.g. "--initial-old-space-size=128"
                (bench/README.md, "Large uploads and V8's old-generation limit")
  --app-heap    every server process holds about MIB MiB of JS objects, as an application would
                (the bare servers hold ~8 MB; same README section)
  --out         report file (default bench/results/latest.md for a full default run, else partial.md)
`;

export function parseArgs(argv) {
  const o = { quick: false, rounds: null, only: ALL, modes: MODES, verify: true, cpuProf: null, nodeFlags: [], appHeapMiB: 0, out: null };
  for (let i = 0; i < argv.length; i++) {
    let [a, v] = argv[i].split(/=(.*)/s);
    const val = () => v ?? argv[++i];
    const list = () => val().split(',').map((s) => s.trim()).filter(Boolean);
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--rounds': o.rounds = Number(val()); break;
      case '--only': o.only = list(); break;
      case '--modes': o.modes = list(); break;
      case '--no-verify': o.verify = false; break;
      case '--cpu-prof': o.cpuProf = resolve(val()); break;
      case '--node-flags': o.nodeFlags = val().split(/\s+/).filter(Boolean); break;
      case '--app-heap': o.appHeapMiB = Number(val()); break;
      case '--out': o.out = val(); break;
      case '--help': process.stdout.write(USAGE); process.exit(0); break;
      default: throw new Error(`unknown argument ${argv[i]}\n${USAGE}`);
    }
  }
  for (const k of o.only) if (!ALL.includes(k)) throw new Error(`unknown workload ${k}`);
  for (const m of o.modes) if (!MODES.includes(m)) throw new Error(`unknown mode ${m}`);
  if (o.rounds != null && !(o.rounds >= 1)) throw new Error('--rounds must be ≥ 1');
  if (!(o.appHeapMiB >= 0)) throw new Error('--app-heap must be a number of MiB ≥ 0');
  o.full = !o.quick && o.rounds == null && o.only === ALL && o.modes === MODES && o.verify && !o.cpuProf && !o.nodeFlags.length && !o.appHeapMiB;
  o.rounds ??= o.quick ? 2 : 7;
  // c (16 × 64 MiB), the S3 pair and resumable runs each take a fresh server and ~1 s: as many rounds as a, b
  // and d, since four samples let one slow run move a median by 10–20% (session 23: c3 0.87× in one full run,
  // 1.00× of the plain handler in the next)
  o.freshRounds = o.quick ? 1 : o.rounds;
  return o;
}
