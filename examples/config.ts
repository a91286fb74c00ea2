// Demo settings from environment variables, validated in one pass so a bad start lists every problem.
import path from 'node:path';
import { parseSize } from '../lib';

export type RolloverKind = 'disk' | 's3';

export interface S3Settings {
  /** Unset: the demo starts a local S3-compatible server (scripts/local-s3.sh). */
  endpoint?: string;
  bucket: string;
  region: string;
  /** Unset: the SDK's default credential chain (env, shared config, instance role, …). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export interface DemoConfig {
  host: string;
  port: number;
  /** Files that end within this many bytes stay in memory. */
  threshold: number;
  /** Bytes all in-flight uploads may hold in memory together. */
  memoryBudget: number;
  maxFileSize: number;
  /** Files per request (the page's "send as one request" mode shows LIMIT_FILE_COUNT with it). */
  maxFiles: number;
  /** Bytes of finished in-memory files the demo keeps for download; older ones are evicted past it. */
  memoryStoreCap: number;
  /** Absolute path of the rollover directory (STORAGE=disk). */
  uploadDir: string;
  storage: RolloverKind;
  s3: S3Settings;
  /** Milliseconds in-flight uploads get to finish on SIGINT/SIGTERM. */
  shutdownTimeout: number;
}

/** Every variable the demo reads, with its default (as the README documents them). */
export const DEFAULTS = {
  HOST: '127.0.0.1',
  PORT: '3000',
  SPOOL_THRESHOLD: '1MiB',
  MEMORY_BUDGET: '64MiB',
  UPLOAD_DIR: './uploads',
  MAX_FILE_SIZE: '100MiB',
  MAX_FILES: '20',
  MEMORY_STORE_CAP: '256MiB',
  SHUTDOWN_TIMEOUT: '10000',
  STORAGE: 'disk',
  S3_BUCKET: 'express-spool-demo',
  S3_REGION: 'us-east-1',
} as const;

/** Thrown with every problem found, one per line, ready to print. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
}

type Env = Record<string, string | undefined>;

/** Reads and validates the demo's settings; throws a ConfigError naming each bad variable. */
export function loadConfig(env: Env = process.env, cwd = process.cwd()): DemoConfig {
  const problems: string[] = [];
  // An empty variable counts as unset: `PORT= npm start` should not be an error.
  const raw = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === '' ? undefined : value;
  };
  const value = (name: keyof typeof DEFAULTS): string => raw(name) ?? DEFAULTS[name];
  const bad = (name: string, expected: string): void => {
    problems.push(`${name}=${JSON.stringify(env[name])}: expected ${expected}`);
  };

  const size = (name: keyof typeof DEFAULTS, min = 0): number => {
    const bytes = parseSize(value(name));
    if (bytes === undefined || bytes < min || !Number.isFinite(bytes)) {
      bad(name, `a byte count${min > 0 ? ` of at least ${min}` : ''}, such as 1048576, 512KB or 1MiB`);
      return NaN; // never returned to callers (we throw); keeps the cross-checks below quiet
    }
    return bytes;
  };
  const integer = (name: keyof typeof DEFAULTS, min: number, max: number, what: string): number => {
    const text = value(name);
    const n = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(n >= min && n <= max)) {
      bad(name, what);
      return min;
    }
    return n;
  };

  const port = integer('PORT', 0, 65535, 'an integer from 0 to 65535 (0 picks a free port)');
  const threshold = size('SPOOL_THRESHOLD');
  // The library refuses a budget smaller than one request's share (192 KiB): say so by this variable's name.
  const memoryBudget = size('MEMORY_BUDGET', 192 * 1024);
  const maxFileSize = size('MAX_FILE_SIZE', 1);
  const maxFiles = integer('MAX_FILES', 1, 10_000, 'an integer from 1 to 10000');
  const memoryStoreCap = size('MEMORY_STORE_CAP');
  const shutdownTimeout = integer('SHUTDOWN_TIMEOUT', 0, 3_600_000, 'milliseconds, an integer from 0 to 3600000');
  // A file kept in memory must fit the store, or it could never be listed for download.
  if (threshold > memoryStoreCap) {
    problems.push(`SPOOL_THRESHOLD (${threshold} bytes) must not exceed MEMORY_STORE_CAP (${memoryStoreCap} bytes)`);
  }

  const storage = value('STORAGE').toLowerCase();
  if (storage !== 'disk' && storage !== 's3') bad('STORAGE', "'disk' or 's3'");
  // S3 variables only matter (and are only checked) with STORAGE=s3.
  const s3Problems: string[] = [];
  const s3 = s3Settings(raw, value, (name, expected) => s3Problems.push(`${name}=${JSON.stringify(env[name])}: expected ${expected}`), s3Problems);
  if (storage === 's3') problems.push(...s3Problems);
  if (problems.length > 0) throw new ConfigError(problems);

  return {
    host: value('HOST'),
    port,
    threshold,
    memoryBudget,
    maxFileSize,
    maxFiles,
    memoryStoreCap,
    uploadDir: path.resolve(cwd, value('UPLOAD_DIR')),
    storage: storage === 's3' ? 's3' : 'disk',
    s3,
    shutdownTimeout,
  };
}

function s3Settings(
  raw: (name: string) => string | undefined,
  value: (name: keyof typeof DEFAULTS) => string,
  bad: (name: string, expected: string) => void,
  problems: string[],
): S3Settings {
  const endpoint = raw('S3_ENDPOINT');
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+/.test(endpoint)) bad('S3_ENDPOINT', 'an http:// or https:// URL');
  const bucket = value('S3_BUCKET');
  // S3's naming rules, so a typo fails here instead of as an opaque error on the first upload.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    bad('S3_BUCKET', 'a bucket name of 3-63 lowercase letters, digits, dots and hyphens');
  }
  const accessKeyId = raw('S3_ACCESS_KEY_ID');
  const secretAccessKey = raw('S3_SECRET_ACCESS_KEY');
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    problems.push('S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together (or neither, for the SDK default chain)');
  }
  return {
    endpoint,
    bucket,
    region: value('S3_REGION'),
    credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
  };
}
