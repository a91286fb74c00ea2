#!/usr/bin/env node
// Re-renders a report from its JSON (bench/results/latest.json by default) with the current targets and
// report code, e.g. after a target's floor explanation changed; the measurements are not touched.
//
//   node bench/rerender.mjs [bench/results/latest.json]

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evaluateTargets } from './lib/targets.mjs';
import { report } from './lib/report.mjs';

const file = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), 'results', 'latest.json');
const j = JSON.parse(readFileSync(file, 'utf8'));
const modes = [...new Set(Object.values(j.results).flatMap((byMode) => Object.keys(byMode)))];
const targets = evaluateTargets(j.workloads, j.results, j.digest, modes, j.paired);
const targetModes = modes.filter((m) => targets.some((t) => t.byMode[m]));
const md = report({ opts: j.options, machine: j.machine, W: j.workloads, R: j.results, digest: j.digest, paired: j.paired, targets, targetModes, s3: j.s3, resumableS3: j.resumableS3, total: j.total, phases: j.phases });
writeFileSync(file.replace(/\.json$/, '.md'), md);
writeFileSync(file, `${JSON.stringify({ ...j, targets }, null, 1)}\n`);
process.stdout.write(`wrote ${file.replace(/\.json$/, '.md')}\n`);
