// Writes the ESM entry (dist/esm/index.mjs + .d.mts) as a thin wrapper over the CommonJS build,
// so both module systems share one copy of the code (and one SpoolError class for instanceof).
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const cjs = require('../dist/lib/index.js');
const names = Object.keys(cjs).filter((name) => name !== '__esModule' && name !== 'default').sort();
mkdirSync(new URL('../dist/esm/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('../dist/esm/index.mjs', import.meta.url),
  `import cjs from '../lib/index.js';\n\nexport const {\n${names.map((n) => `  ${n},`).join('\n')}\n} = cjs;\n`,
);
writeFileSync(new URL('../dist/esm/index.d.mts', import.meta.url), `export * from '../lib/index.js';\n`);
console.log(`dist/esm: ${names.length} named exports`);
