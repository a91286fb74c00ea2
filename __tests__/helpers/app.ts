import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type ErrorRequestHandler, type RequestHandler } from 'express';

/** Answers every error as JSON with its code and status, like an app would. */
export const jsonErrors: ErrorRequestHandler = (err, _req, res, _next) => {
  res.status(typeof err.status === 'number' ? err.status : 500).json({
    error: { code: err.code, message: err.message, field: err.field, storageErrors: err.storageErrors?.length ?? 0 },
  });
};

/** Describes uploaded files without buffers, so responses stay small. */
export function describeFiles(files: unknown): unknown {
  if (!files) return files;
  if (Array.isArray(files)) return files.map(describeFile);
  if (typeof files === 'object' && 'fieldname' in (files as object)) return describeFile(files);
  return Object.fromEntries(Object.entries(files as Record<string, unknown[]>).map(([k, v]) => [k, v.map(describeFile)]));
}

function describeFile(file: any): unknown {
  const { buffer, ...rest } = file;
  return { ...rest, bufferLength: buffer?.length };
}

/** An Express app with `route` mounted at POST /upload that echoes body and files. */
export function echoApp(...route: RequestHandler[]): express.Express {
  const app = express();
  app.post('/upload', ...route, (req, res) => {
    res.json({ body: { ...(req as any).body }, file: describeFiles((req as any).file), files: describeFiles((req as any).files) });
  });
  app.use(jsonErrors);
  return app;
}

export function listen(app: express.Express): Promise<Server> {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server));
  });
}

export function close(server: Server): Promise<void> {
  server.closeAllConnections?.();
  return new Promise((resolve) => server.close(() => resolve()));
}

export function tempDir(prefix = 'spool-test-'): { path: string; files(): string[]; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    files: () => readdirSync(path),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** Polls until `check` passes or the timeout elapses (for cleanup that completes after the response). */
export async function eventually(check: () => void | Promise<void>, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** This process's open file descriptors on files under `dir` (Linux: /proc/self/fd). */
export function fdsUnder(dir: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir);
    } catch {
      return false;
    }
  }).length;
}
