// An S3 server for the S3 pair: the one named by S3_ENDPOINT (with S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY,
// S3_REGION), else a throw-away local Ceph radosgw from scripts/local-s3.sh in its own directory (so it
// does not share one with the tests' server), stopped again afterwards. Plus a bucket for the run.

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCRIPT = join(ROOT, 'scripts', 'local-s3.sh');

function localS3(command, dir) {
  const r = spawnSync('bash', [SCRIPT, command, dir], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
    timeout: 10 * 60 * 1000, // the first start may apt-get install Ceph
    killSignal: 'SIGKILL',
  });
  const vars = {};
  for (const line of (r.stdout ?? '').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2];
  }
  const why = r.error?.message ?? (r.status !== 0 ? `exit status ${r.status}: ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' / ')}` : null);
  return { ok: !why && !!vars.S3_ENDPOINT, why, vars };
}

/**
 * Resolves with { env (BENCH_S3_* for the servers), about, close() } or { skipped: reason }.
 * @param {(msg: string) => void} log
 */
export async function openS3(log) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'; // its notice about future Node versions
  let vars;
  let stop = async () => {};
  let about;
  if (process.env.S3_ENDPOINT) {
    vars = process.env;
    about = `external S3 server ${vars.S3_ENDPOINT}`;
  } else {
    const dir = join(os.tmpdir(), 'express-spool-bench-s3');
    const before = localS3('status', dir);
    let r = before;
    // A few attempts: the script picks free ports, and another cluster starting at the same moment
    // (the tests' own) can take one between its check and the daemon's bind.
    for (let attempt = 1; !r.ok && attempt <= 3; attempt++) {
      log(`starting a local Ceph radosgw (scripts/local-s3.sh)${attempt > 1 ? `, attempt ${attempt}` : ''}…`);
      r = localS3('start', dir);
      if (!r.ok) localS3('stop', dir);
    }
    if (!r.ok) return { skipped: `scripts/local-s3.sh start failed 3 times; last: ${r.why ?? 'no S3_ENDPOINT in its output'}` };
    vars = r.vars;
    about = `local Ceph radosgw (scripts/local-s3.sh, ${r.vars.S3_ENDPOINT})`;
    if (!before.ok) stop = async () => void localS3('stop', dir);
  }
  let client;
  let bucket;
  try {
    const { S3Client, CreateBucketCommand } = require('@aws-sdk/client-s3');
    client = new S3Client({
      endpoint: vars.S3_ENDPOINT,
      region: vars.S3_REGION || 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: vars.S3_ACCESS_KEY_ID, secretAccessKey: vars.S3_SECRET_ACCESS_KEY },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    bucket = `spool-bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    client?.destroy();
    await stop();
    return { skipped: `could not create a bucket on ${vars.S3_ENDPOINT}: ${err?.message ?? err}` };
  }
  return {
    about,
    env: {
      BENCH_S3_ENDPOINT: vars.S3_ENDPOINT,
      BENCH_S3_ACCESS_KEY_ID: vars.S3_ACCESS_KEY_ID,
      BENCH_S3_SECRET_ACCESS_KEY: vars.S3_SECRET_ACCESS_KEY,
      BENCH_S3_REGION: vars.S3_REGION || 'us-east-1',
      BENCH_S3_BUCKET: bucket,
    },
    async close() {
      try {
        await emptyAndDelete(client, bucket);
      } catch (err) {
        log(`could not delete bucket ${bucket}: ${err?.message ?? err}`);
      }
      client.destroy();
      await stop();
    },
  };
}

async function emptyAndDelete(client, bucket) {
  const { ListObjectsV2Command, DeleteObjectsCommand, ListMultipartUploadsCommand, AbortMultipartUploadCommand, DeleteBucketCommand } =
    require('@aws-sdk/client-s3');
  const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const u of uploads.Uploads ?? []) await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
  for (;;) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
    const Objects = (page.Contents ?? []).map((o) => ({ Key: o.Key }));
    if (!Objects.length) break;
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects, Quiet: true } }));
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}
