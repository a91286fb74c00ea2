import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

// Every TypeScript snippet in the README must type-check against the real API: a renamed option or export
// breaks this test, not a reader's build. Free names a snippet uses without defining are declared here.
const root = resolve(__dirname, '..');

const AMBIENT: Record<string, string> = {
  express: "import express from 'express';",
  spool: "import { spool } from 'express-spool';",
  diskEngine: "import { diskEngine } from 'express-spool';",
  memoryEngine: "import { memoryEngine } from 'express-spool';",
  spoolEngine: "import { spoolEngine } from 'express-spool';",
  s3Engine: "import { s3Engine } from 'express-spool';",
  SpoolError: "import { SpoolError } from 'express-spool';",
  MemoryBudget: "import { MemoryBudget } from 'express-spool';",
  StorageEngine: "import type { StorageEngine } from 'express-spool';",
  S3Client: "import { S3Client } from '@aws-sdk/client-s3';",
  Readable: "import { Readable } from 'node:stream';",
  fs: "import fs from 'node:fs';",
  crypto: "import crypto from 'node:crypto';",
  app: 'declare const app: import("express").Express;',
  handler: 'declare const handler: import("express").RequestHandler;',
  client: 'declare const client: import("@aws-sdk/client-s3").S3Client;',
  upload: 'declare const upload: import("express-spool").Spool;',
  accountId: 'declare const accountId: string;',
  accessKeyId: 'declare const accessKeyId: string;',
  secretAccessKey: 'declare const secretAccessKey: string;',
  id: 'declare const id: string;',
  readBack: 'declare function readBack(id: string): import("node:stream").Readable;',
  drop: 'declare function drop(id: string): Promise<void>;',
};
// Snippets run inside Express handlers that have req.user (an app's own augmentation).
const GLOBAL = 'declare global { namespace Express { interface Request { user: { id: string } } } }\nexport {};\n';

function snippets(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  return [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

function withAmbient(code: string): string {
  const defined = (name: string) =>
    new RegExp(`\\bimport\\b[^;]*\\b${name}\\b[^;]*from|\\b(const|let|function|class)\\s+${name}\\b`).test(code);
  const used = (name: string) => new RegExp(`(?<![.\\w])${name}\\b`).test(code);
  const preamble = Object.entries(AMBIENT).filter(([name]) => used(name) && !defined(name)).map(([, line]) => line);
  return `${preamble.join('\n')}\n${code}\nexport {};\n`;
}

test('every ts snippet in the README type-checks against the public API', () => {
  const blocks = snippets();
  expect(blocks.length).toBeGreaterThanOrEqual(8);
  // Outside the repository; its node_modules is the project's, so the snippets' imports resolve as in it.
  const work = mkdtempSync(join(tmpdir(), 'spool-readme-'));
  try {
    symlinkSync(join(root, 'node_modules'), join(work, 'node_modules'), 'dir');
    blocks.forEach((code, i) => writeFileSync(join(work, `snippet-${i}.ts`), withAmbient(code)));
    writeFileSync(join(work, 'globals.ts'), GLOBAL);
    writeFileSync(
      join(work, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true, // what a new project's tsconfig has: a snippet must compile as pasted into one
          target: 'ES2022', module: 'commonjs', moduleResolution: 'node', esModuleInterop: true, skipLibCheck: true, noEmit: true,
          types: ['node'], baseUrl: root, paths: { 'express-spool': ['lib/index.ts'] },
        },
        include: ['*.ts'],
      }),
    );
    let output = '';
    try {
      execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', work], { encoding: 'utf8' });
    } catch (err) {
      output = (err as { stdout?: string }).stdout ?? String(err);
    }
    if (process.env.README_TSC_OUT) writeFileSync(process.env.README_TSC_OUT, output);
    expect(output).toBe('');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}, 60_000);
