// STORAGE=s3: the S3 client and bucket for the rollover engine, and the local S3 server when no endpoint
// is configured (the one the tests use), so the S3 path runs on a fresh machine without an account.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3Settings } from './config';

export interface S3Backend {
  client: S3Client;
  bucket: string;
  /** Where the objects go, for the startup message ('AWS' when the SDK picks the endpoint). */
  endpoint: string;
  /** Releases the client and stops the local server if this process started it. */
  stop(): Promise<void>;
}

// Not the tests' .s3-local: their global teardown deletes that directory, daemons and all.
const LOCAL_S3_DIR = path.join(os.tmpdir(), 'express-spool-demo-s3');

/** Builds the client (starting the local server first when there is no endpoint) and ensures the bucket. */
export async function openS3(settings: S3Settings, log: (line: string) => void): Promise<S3Backend> {
  let { endpoint, credentials, region } = settings;
  let stopLocal: (() => Promise<void>) | undefined;
  if (endpoint === undefined) {
    log(`S3_ENDPOINT is not set: starting a local S3 server in ${LOCAL_S3_DIR} (first run may install Ceph) …`);
    const vars = await runLocalS3('start');
    stopLocal = async () => void (await runLocalS3('stop'));
    endpoint = vars.S3_ENDPOINT;
    credentials = { accessKeyId: vars.S3_ACCESS_KEY_ID, secretAccessKey: vars.S3_SECRET_ACCESS_KEY };
    region = vars.S3_REGION || region;
  }
  const client = new S3Client({
    endpoint,
    region,
    credentials, // undefined: the SDK's default chain
    // S3-compatible servers want path-style URLs, and older ones reject the SDK's default checksum headers.
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const stop = async () => {
    client.destroy();
    await stopLocal?.();
  };
  try {
    await ensureBucket(client, settings.bucket, region);
  } catch (err) {
    await stop();
    throw new Error(`S3 bucket ${settings.bucket} at ${endpoint} is not usable: ${describeS3Error(err)}`, { cause: err });
  }
  return { client, bucket: settings.bucket, endpoint, stop };
}

async function ensureBucket(client: S3Client, bucket: string, region: string): Promise<void> {
  try {
    await client.send(new HeadBucketCommand({ Bucket: bucket }));
    return;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
  }
  try {
    await client.send(
      new CreateBucketCommand({
        Bucket: bucket,
        // us-east-1 is the one region that refuses an explicit LocationConstraint.
        ...(region === 'us-east-1' ? {} : { CreateBucketConfiguration: { LocationConstraint: region as never } }),
      }),
    );
  } catch (err) {
    // Another demo process may have created it meanwhile.
    if ((err as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw err;
  }
}

function describeS3Error(err: unknown): string {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  return `${e.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${e.message || 'no message'}`;
}

/** scripts/local-s3.sh from examples/ (ts-jest) or dist/examples/ (npm start). */
function localS3Script(): string {
  const candidates = [path.resolve(__dirname, '..', 'scripts'), path.resolve(__dirname, '..', '..', 'scripts')]
    .map((dir) => path.join(dir, 'local-s3.sh'));
  const found = candidates.find((file) => existsSync(file));
  if (!found) throw new Error(`scripts/local-s3.sh not found (looked at ${candidates.join(', ')}); set S3_ENDPOINT instead`);
  return found;
}

/** Runs the script (its log goes to our stderr) and parses the `export NAME=value` lines it prints. */
function runLocalS3(command: 'start' | 'stop'): Promise<Record<string, string>> {
  const script = localS3Script();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [script, command, LOCAL_S3_DIR], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      const vars = Object.fromEntries(
        [...stdout.matchAll(/^export ([A-Z0-9_]+)=(.*)$/gm)].map((m) => [m[1], m[2].replace(/^(['"])(.*)\1$/, '$2')]),
      );
      if (code === 0 && (command === 'stop' || vars.S3_ENDPOINT)) return resolve(vars);
      reject(
        new Error(
          `${script} ${command} failed (exit ${code}); its log is above. ` +
            'To use another S3-compatible server, set S3_ENDPOINT (and credentials).',
        ),
      );
    });
  });
}
