/**
 * Fencing without timing (#15): two store instances ("instances" A and B, each with its own middleware and
 * S3Client) on one upload in one bucket. Writer A is held *between its fence check and its S3 write* by a
 * gate in its S3Client's `send` (the S3 server stays real); B takes over and commits; then A's late write
 * goes through. Nothing here waits for a lease or a timer: the order of every step is forced by the gates.
 * A's client must be refused, B's upload must be byte-exact without any of A's bytes, and nothing may be
 * left behind (object, states, tails, multipart uploads).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { redisLocker, resumable, s3ResumableStore, type RedisLocker, type Resumable } from '../lib/index';
import { bucketInspector } from './helpers/bucket-inspector';
import { OCTETS, request, serveAtFiles, TUS } from './helpers/resumable';
import { s3TestClient, useTestBucket } from './setup/s3-env';

const MiB = 1024 * 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let admin: S3Client;
let bucket: string;
useTestBucket((c, b) => {
  admin = c;
  bucket = b;
});

type Match = (command: string, input: Record<string, unknown>) => boolean;

interface Gate {
  /** Resolves when a matching command reached `send` (after every check the store makes before it). */
  readonly reached: Promise<void>;
  /** Lets it go to S3. */
  open(): void;
  /** Settles with the S3 answer to it. */
  readonly done: Promise<unknown>;
}

/** A real S3Client whose `send` can hold the next command that matches, until the test opens the gate. */
function gatedClient(): { client: S3Client; hold(match: Match): Gate; sent: string[] } {
  const client = s3TestClient();
  const send = client.send.bind(client) as (command: unknown, options?: unknown) => Promise<unknown>;
  const gates: { match: Match; arrive: () => void; opened: Promise<void>; finish: (p: Promise<unknown>) => void }[] = [];
  const sent: string[] = [];
  (client as unknown as { send: typeof send }).send = async (command: unknown, options?: unknown) => {
    const name = (command as { constructor: { name: string } }).constructor.name;
    const input = (command as { input: Record<string, unknown> }).input;
    sent.push(`${name} ${String(input.Key ?? '')}`);
    const index = gates.findIndex((gate) => gate.match(name, input));
    if (index < 0) return send(command, options);
    const [gate] = gates.splice(index, 1);
    gate.arrive();
    await gate.opened;
    const answer = send(command, options);
    gate.finish(answer);
    return answer;
  };
  const hold = (match: Match): Gate => {
    let arrive!: () => void;
    let open!: () => void;
    let finish!: (p: Promise<unknown>) => void;
    const reached = new Promise<void>((r) => (arrive = r));
    const opened = new Promise<void>((r) => (open = r));
    const done = new Promise<unknown>((r) => (finish = (p) => r(p.then((v) => v, (e: unknown) => e))));
    gates.push({ match, arrive, opened, finish });
    return { reached, open, done };
  };
  return { client, hold, sent };
}

interface Instance {
  url: string;
  middleware: Resumable;
  gates: ReturnType<typeof gatedClient>;
  locker?: RedisLocker;
  close(): Promise<void>;
}

/** Every onComplete call, on any instance. */
const completions: string[] = [];

async function instance(prefix: string, redis?: { lockPrefix: string }, expiration = 0): Promise<Instance> {
  const gates = gatedClient();
  const locker = redis ? redisLocker({ url: process.env.REDIS_URL!, prefix: redis.lockPrefix }) : undefined;
  const middleware = resumable({
    store: s3ResumableStore({ client: gates.client, bucket, prefix, partSize: '5MiB', fence: locker }),
    locker,
    sweepInterval: 0,
    sha256: true,
    lockTimeout: 2_000,
    expiration,
    onComplete: (file) => void completions.push((file as unknown as { key: string }).key),
  });
  const served = await serveAtFiles(middleware);
  return {
    url: served.url,
    middleware,
    gates,
    locker,
    async close() {
      await served.close();
      await locker?.close();
      gates.client.destroy();
    },
  };
}

const { keysUnder, openUploads, objectBytes } = bucketInspector(() => ({ client: admin, bucket }));

const isUploadPart: Match = (command) => command === 'UploadPartCommand';
const isComplete: Match = (command) => command === 'CompleteMultipartUploadCommand';
const isStateCommit: Match = (command, input) => command === 'PutObjectCommand' && /\.state\.\d+$/.test(String(input.Key));

/**
 * The shared start: A creates a 12 MiB upload and stores 6 MiB (part 1 + a 1 MiB tail); then A starts a
 * second PATCH with 6 MiB of its own bytes and is held at `gate` (set up by `hold`).
 */
async function startStaleWriter(a: Instance, d1: Buffer, x: Buffer, hold: (a: Instance) => Gate) {
  const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 12 * MiB });
  expect(created.status).toBe(201);
  const path = created.headers.location!;
  const first = await request(`${a.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, d1);
  expect(first.status).toBe(204);
  expect(first.headers['upload-offset']).toBe(String(6 * MiB));
  const gate = hold(a);
  const stale = request(`${a.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 6 * MiB }, x);
  await gate.reached;
  return { path, id: path.split('/').pop()!, gate, stale };
}

/** B resumes like a client would: HEAD for the offset, then the rest of the bytes (its own, not A's). */
async function resume(b: Instance, path: string, y: Buffer) {
  const head = await request(`${b.url}${path}`, 'HEAD', TUS);
  expect(head.status).toBe(200);
  expect(head.headers['upload-offset']).toBe(String(6 * MiB)); // what A committed before it was held
  return request(`${b.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 6 * MiB }, y);
}

describe('s3ResumableStore fencing: a writer held between its check and its S3 write', () => {
  let prefix: string;
  let a: Instance;
  let b: Instance;
  const d1 = randomBytes(6 * MiB); // committed by A before it stalls
  const x = randomBytes(6 * MiB); // A's late bytes: must never appear
  const y = randomBytes(6 * MiB); // B's bytes for the same offsets
  const expected = Buffer.concat([d1, y]);

  afterEach(async () => {
    await Promise.all([a?.close(), b?.close()]);
  });

  test("no shared lock at all: A's late UploadPart lands under a number it claimed, B completes without it (radosgw: copied out of the assembly), A is refused", async () => {
    prefix = `fence1-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    const { path, id, gate, stale } = await startStaleWriter(a, d1, x, (w) => w.gates.hold(isUploadPart));
    // B's completion is held until A's late part is in: the multipart upload then holds a part no state names.
    const completing = b.gates.hold(isComplete);
    const resumed = resume(b, path, y);
    await completing.reached;
    gate.open();
    expect(await gate.done).toHaveProperty('ETag'); // A's UploadPart is in S3 now, under a number of its own
    expect((await stale).status).toBe(423); // its next commit finds B's state under its number
    completing.open();
    const done = await resumed;
    // S3 completes with the parts named; radosgw refuses while A's part is there, and B copies its parts out.
    const copiedOut = b.gates.sent.some((line) => line.startsWith('ListPartsCommand'));
    if (copiedOut) expect(b.gates.sent.filter((line) => line.startsWith('UploadPartCopyCommand')).length).toBeGreaterThanOrEqual(2);
    process.stderr.write(`[resumable-fencing] B completed ${copiedOut ? 'by copying its parts out of the assembly (the server wanted every part)' : 'with the parts named'}\n`);
    expect(done.status).toBe(204);
    expect(done.headers['upload-offset']).toBe(String(12 * MiB));
    const object = await objectBytes(prefix + id);
    expect(sha(object)).toBe(sha(expected));
    expect(object.includes(x.subarray(0, 64 * 1024))).toBe(false);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    expect(await openUploads(prefix)).toEqual([]);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
    expect(await openUploads(prefix)).toEqual([]);
  });

  test("no shared lock at all: A's state commit is held (its fence check passed) while B commits; A's commit then fails create-only (412 → 423)", async () => {
    prefix = `fence2-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    // 1 MiB more: A writes its new tail (old tail + these bytes, < 5 MiB), then its one state commit is held.
    const { path, id, gate, stale } = await startStaleWriter(a, d1, x.subarray(0, MiB), (w) => w.gates.hold(isStateCommit));
    const completing = b.gates.hold(isComplete);
    const resumed = resume(b, path, y);
    await completing.reached; // B has committed (its claim, its part, its tail) and is about to complete
    gate.open();
    expect(await gate.done).toMatchObject({ name: 'PreconditionFailed' });
    expect((await stale).status).toBe(423);
    completing.open();
    expect((await resumed).status).toBe(204);
    const object = await objectBytes(prefix + id);
    expect(sha(object)).toBe(sha(expected));
    expect(object.includes(x.subarray(0, 64 * 1024))).toBe(false);
    // A's tail, named by no state that counts, went with B's completion.
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
  });

  test("no shared lock at all: A's tail and state commit are held until B has completed and cleaned up; A's commit lands below the latest state, A is refused all the same and removes what it left", async () => {
    prefix = `fence4-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    let commit!: Gate;
    const { path, id, gate, stale } = await startStaleWriter(a, d1, x.subarray(0, MiB), (w) => {
      commit = w.gates.hold(isStateCommit);
      return w.gates.hold((c, i) => c === 'PutObjectCommand' && /\.tail\./.test(String(i.Key)));
    });
    expect((await resume(b, path, y)).status).toBe(204);
    gate.open();
    await commit.reached;
    commit.open();
    // The state number A commits was B's, deleted at completion: create-only lets it in, but it is not the
    // latest (the completed state is), so it counts for nothing; A's request is refused when it checks.
    expect((await stale).status).toBe(423);
    const object = await objectBytes(prefix + id);
    expect(sha(object)).toBe(sha(expected));
    const head = await request(`${b.url}${path}`, 'HEAD', TUS);
    expect(head.headers['upload-offset']).toBe(String(12 * MiB));
    // A found the state it started from deleted (B's clean-up): it removed its own tail and refused state.
    expect((await keysUnder(prefix)).filter((key) => key.includes('.tail.'))).toHaveLength(0);
    expect(await b.middleware.sweep()).toBe(0);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    expect(await openUploads(prefix)).toEqual([]);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
  });

  test("no shared lock at all: A is held at CompleteMultipartUpload after its sealing state; B takes over from that state and completes the same object; A's late completion finds it done and is refused; onComplete ran once", async () => {
    prefix = `fence5-${randomBytes(3).toString('hex')}/`;
    [a, b] = await Promise.all([instance(prefix), instance(prefix)]);
    const all = Buffer.concat([d1, x]);
    const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': all.length });
    const path = created.headers.location!;
    const id = path.split('/').pop()!;
    const gate = a.gates.hold(isComplete);
    const stale = request(`${a.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, all);
    await gate.reached; // every byte is in, A committed the state that seals the upload, then stalled
    const head = await request(`${b.url}${path}`, 'HEAD', TUS); // all bytes in, not complete: B completes it
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe(String(all.length));
    gate.open();
    // A's CompleteMultipartUpload names the same parts: S3 and radosgw answer a repeated one with the same
    // object again (or NoSuchUpload once they have forgotten it); either way A then checks the object's size
    // and tries to commit the completed state, whose number B took.
    const late = (await gate.done) as { name?: string; ETag?: string };
    expect(late.ETag !== undefined || late.name === 'NoSuchUpload').toBe(true);
    expect((await stale).status).toBe(423);
    expect(completions.filter((key) => key === prefix + id)).toHaveLength(1);
    expect(sha(await objectBytes(prefix + id))).toBe(sha(all));
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    expect(await openUploads(prefix)).toEqual([]);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
  });

  test("redisLocker: A passed its Redis fence check, its lease is then lost (the key deleted) and B takes the lock; A's late UploadPart and everything after it count for nothing", async () => {
    prefix = `fence3-${randomBytes(3).toString('hex')}/`;
    const lockPrefix = `${prefix}:`;
    [a, b] = await Promise.all([instance(prefix, { lockPrefix }), instance(prefix, { lockPrefix })]);
    const { path, id, gate, stale } = await startStaleWriter(a, d1, x, (w) => w.gates.hold(isUploadPart));
    // A's lease lapses (as when its process froze): B can take the lock without A letting go.
    const redis = new (require('ioredis') as typeof import('ioredis')).Redis(process.env.REDIS_URL!);
    try {
      expect(await redis.del(`${lockPrefix}lock:${id}`)).toBe(1);
    } finally {
      redis.disconnect();
    }
    const completing = b.gates.hold(isComplete);
    const resumed = resume(b, path, y);
    await completing.reached;
    gate.open();
    await gate.done;
    expect((await stale).status).toBe(423);
    completing.open();
    expect((await resumed).status).toBe(204);
    const object = await objectBytes(prefix + id);
    expect(sha(object)).toBe(sha(expected));
    expect(object.includes(x.subarray(0, 64 * 1024))).toBe(false);
    expect((await keysUnder(prefix)).map((key) => key.replace(/\.state\.\d+$/, '.state'))).toEqual([id, `${id}.state`]);
    expect(await openUploads(prefix)).toEqual([]);
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
    expect(await openUploads(prefix)).toEqual([]);
  });

  test('redisLocker: the sweep of instance B leaves alone an expired upload that instance A is appending to', async () => {
    prefix = `sweep-${randomBytes(3).toString('hex')}/`;
    const lockPrefix = `${prefix}:`;
    const expiration = 1_500;
    [a, b] = await Promise.all([instance(prefix, { lockPrefix }, expiration), instance(prefix, { lockPrefix }, expiration)]);
    const created = await request(`${a.url}/files`, 'POST', { ...TUS, 'Upload-Length': 2 * MiB });
    const path = created.headers.location!;
    const id = path.split('/').pop()!;
    // A's append holds the upload (its tail write is held) while the upload's expiry passes.
    const gate = a.gates.hold((c, i) => c === 'PutObjectCommand' && /\.tail\./.test(String(i.Key)));
    const appending = request(`${a.url}${path}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, x.subarray(0, MiB));
    await gate.reached;
    await new Promise((r) => setTimeout(r, expiration + 100)); // only to make the upload expired, not to order anything
    await b.middleware.sweep(); // B holds no lock for it: it must not take it from A
    expect((await keysUnder(prefix)).some((key) => key.startsWith(`${id}.state.`))).toBe(true);
    gate.open();
    const appended = await appending;
    expect(appended.status).toBe(204);
    expect(appended.headers['upload-offset']).toBe(String(MiB));
    const head = await request(`${b.url}${path}`, 'HEAD', TUS); // its expiry renewed by the append
    expect(head.status).toBe(200);
    expect(head.headers['upload-offset']).toBe(String(MiB));
    expect((await request(`${b.url}${path}`, 'DELETE', TUS)).status).toBe(204);
    expect(await keysUnder(prefix)).toEqual([]);
  });
});
