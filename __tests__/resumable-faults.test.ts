import { createHash } from 'node:crypto';
import http from 'node:http';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { patternChunks, patternSha256 } from './helpers/multipart';
import { eventually } from './helpers/app';
import { OCTETS, request, startCuttingProxy, startResumable, TUS, tusUpload, type ResumableServer } from './helpers/resumable';

const MiB = 1024 * 1024;
const sha = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');
const retryForever = { retryDelays: [0, 10, 20, 50, 100, 200, 400], onShouldRetry: () => true };

describe('resumable: faults', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    srv = await startResumable({ limits: { fileSize: '1GiB' } });
  });
  afterEach(() => srv.close());

  test('256 MiB streamed from a generator through a proxy that cuts the connection >= 50 times: byte-exact', async () => {
    const source = { size: 256 * MiB, seed: 14 };
    const proxy = await startCuttingProxy(srv.url, { minBytes: 256 * 1024, maxBytes: 6 * MiB, maxCuts: 60 });
    try {
      const { errors } = await tusUpload(Readable.from(patternChunks(source), { objectMode: false }), {
        endpoint: `${proxy.url}/files`,
        uploadSize: source.size,
        chunkSize: 16 * MiB,
        ...retryForever,
      });
      expect(proxy.cuts).toBeGreaterThanOrEqual(50);
      expect(errors).toBeGreaterThanOrEqual(50);
    } finally {
      await proxy.close();
    }
    expect(srv.completed).toHaveLength(1);
    const expected = patternSha256(source);
    expect(srv.completed[0].size).toBe(source.size);
    expect(srv.completed[0].sha256).toBe(expected);
    expect(srv.completed[0].readBack).toBe(expected);
  }, 300_000);

  test('IETF draft (tus-js-client ietf-draft-05) through the cutting proxy: byte-exact', async () => {
    const source = { size: 24 * MiB + 7, seed: 5 };
    const proxy = await startCuttingProxy(srv.url, { minBytes: 64 * 1024, maxBytes: 2 * MiB, maxCuts: 20 });
    try {
      await tusUpload(Readable.from(patternChunks(source), { objectMode: false }), {
        endpoint: `${proxy.url}/files`,
        protocol: 'ietf-draft-05',
        uploadSize: source.size,
        chunkSize: 4 * MiB,
        ...retryForever,
      });
      expect(proxy.cuts).toBe(20);
    } finally {
      await proxy.close();
    }
    expect(srv.completed[0].readBack).toBe(patternSha256(source));
    expect(srv.completed[0].sha256).toBe(patternSha256(source));
  }, 120_000);

  test('server restarted mid-upload (new middleware over the same directory): the upload resumes, byte-exact', async () => {
    const source = { size: 48 * MiB, seed: 9 };
    let restarted = false;
    let offsetAtRestart = 0;
    const { errors } = await tusUpload(Readable.from(patternChunks(source), { objectMode: false }), {
      endpoint: srv.endpoint,
      uploadSize: source.size,
      chunkSize: 8 * MiB,
      ...retryForever,
      onProgress: (sent) => {
        if (!restarted && sent > 20 * MiB) {
          restarted = true;
          offsetAtRestart = sent;
          void srv.restart();
        }
      },
    });
    expect(restarted).toBe(true);
    expect(errors).toBeGreaterThanOrEqual(1);
    expect(offsetAtRestart).toBeGreaterThan(0);
    expect(srv.completed).toHaveLength(1);
    // The running hash died with the first middleware: the digest was read back from disk at completion.
    expect(srv.completed[0].sha256).toBe(patternSha256(source));
    expect(srv.completed[0].readBack).toBe(patternSha256(source));
  }, 120_000);

  test('a PATCH that dies mid-body keeps what was written: offset == bytes on disk', async () => {
    const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 4 * MiB });
    const url = srv.url + created.headers.location!;
    const id = created.headers.location!.split('/').pop()!;
    await new Promise<void>((resolve) => {
      const req = http.request(url, { method: 'PATCH', headers: { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': 4 * MiB } });
      req.on('error', () => resolve());
      req.write(Buffer.alloc(MiB, 7), () => setTimeout(() => req.destroy(), 100));
    });
    await eventually(async () => {
      const head = await request(url, 'HEAD', TUS);
      expect(Number(head.headers['upload-offset'])).toBe(MiB);
      expect(statSync(join(srv.dir.path, id)).size).toBe(MiB);
    });
  });

  test('a creation-with-upload that dies before its first byte leaves nothing', async () => {
    await new Promise<void>((resolve) => {
      const req = http.request(srv.endpoint, { method: 'POST', headers: { ...TUS, ...OCTETS, 'Upload-Length': 100, 'Content-Length': 100 } });
      req.on('error', () => resolve());
      req.flushHeaders();
      setTimeout(() => req.destroy(), 100);
    });
    await eventually(() => expect(srv.dir.files()).toEqual([]));
  });

  test('two clients append to the same upload at once: the older request is ended, final bytes exact', async () => {
    const data = Buffer.from(Array.from({ length: 2 * MiB }, (_, i) => (i * 13) & 0xff));
    const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': data.length });
    const url = srv.url + created.headers.location!;
    // A sends 512 KiB, then stalls with its body unfinished (a client whose network went quiet).
    let releaseA!: () => void;
    const stalled = new Promise<void>((resolve) => (releaseA = resolve));
    async function* bodyA() {
      yield data.subarray(0, 512 * 1024);
      await stalled;
      yield data.subarray(512 * 1024);
    }
    const a = request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': data.length }, bodyA()).catch((err: Error) => err);
    await eventually(() => expect(statSync(join(srv.dir.path, created.headers.location!.split('/').pop()!)).size).toBe(512 * 1024));
    // B resumes from 0, as a client that believes A failed: A is ended, its bytes recorded, B learns the offset.
    const b = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, data);
    expect(b.status).toBe(409);
    expect(b.headers['upload-offset']).toBe(String(512 * 1024));
    const answerA = await a;
    releaseA();
    expect(answerA instanceof Error ? 'reset' : answerA.status).toEqual(expect.anything());
    if (!(answerA instanceof Error)) expect(answerA.status).toBe(423);
    const rest = await request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 512 * 1024 }, data.subarray(512 * 1024));
    expect(rest.status).toBe(204);
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(srv.completed[0].sha256).toBe(sha(data));
  });

  test('two tus-js-clients upload the same file to the same URL at once: both finish, bytes exact', async () => {
    const data = Buffer.from(Array.from({ length: 6 * MiB }, (_, i) => (i * 7) & 0xff));
    const created = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': data.length });
    const uploadUrl = srv.url + created.headers.location!;
    const results = await Promise.allSettled([
      tusUpload(data, { uploadUrl, chunkSize: 256 * 1024, ...retryForever }),
      tusUpload(data, { uploadUrl, chunkSize: 256 * 1024, ...retryForever }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
    expect(srv.completed).toHaveLength(1);
    expect(srv.completed[0].readBack).toBe(sha(data));
    expect(srv.completed[0].sha256).toBe(sha(data));
  });
});

describe('resumable: expiration', () => {
  test('expired uploads answer 410 until swept; sweep() removes bytes and state, keeps completed uploads; no orphans', async () => {
    const srv = await startResumable({ expiration: 300 });
    try {
      const make = async (length: number, body: string) => {
        const res = await request(srv.endpoint, 'POST', { ...TUS, ...OCTETS, 'Upload-Length': length }, Buffer.from(body));
        expect(res.status).toBe(201);
        if (body.length < length) expect(res.headers['upload-expires']).toBeDefined();
        return srv.url + res.headers.location!;
      };
      const unfinished = await make(10, 'abc');
      const empty = await make(10, '');
      const finished = await make(3, 'xyz');
      expect(srv.dir.files()).toHaveLength(5); // 2 data files + 3 states (the empty upload has no data file)
      await new Promise((r) => setTimeout(r, 400));
      expect((await request(unfinished, 'HEAD', TUS)).status).toBe(410);
      expect(await srv.middleware.sweep()).toBe(2);
      expect((await request(unfinished, 'HEAD', TUS)).status).toBe(404);
      expect((await request(empty, 'HEAD', TUS)).status).toBe(404);
      expect((await request(finished, 'HEAD', TUS)).status).toBe(200);
      const id = finished.split('/').pop()!;
      expect(srv.dir.files().sort()).toEqual([id, `${id}.json`]);
    } finally {
      await srv.close();
    }
  });

  test('the sweep interval runs by itself (unref’d timer)', async () => {
    const srv = await startResumable({ expiration: 100, sweepInterval: 150 });
    try {
      await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 10 });
      expect(srv.dir.files()).toHaveLength(1);
      await eventually(() => expect(srv.dir.files()).toEqual([]), 2000);
    } finally {
      await srv.close();
    }
  });
});
