/**
 * The disk store's directory may hold other files: the README's examples put multipart uploads
 * (`diskEngine` / `dest`) and resumable uploads in `./uploads`. The store removes only what it names and
 * has a state or a removal marker for; its sweep goes on past entries it cannot handle; what a crash leaves
 * of a removal or a state write is cleaned up. Found by a hostile review (the sweep deleted every
 * extension-less file older than a minute, and one subdirectory or truncated state stopped every sweep).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { resumable, resumableDiskStore, spool } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, request, startResumable, TUS, type ResumableServer } from './helpers/resumable';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ageOf = (path: string, ms = 120_000) => {
  const past = new Date(Date.now() - ms);
  utimesSync(path, past, past);
};

test('a multipart file stored (dest) in the same directory outlives the resumable sweep, however old', async () => {
  const dir = tempDir('spool-shared-dir-');
  const upload = spool({ dest: dir.path });
  const files = resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0 });
  const app = express();
  app.post('/photos', upload.single('photo'), (req, res) => res.json({ path: req.file!.path }));
  app.use('/files', files);
  const server = await listen(app);
  try {
    const data = randomBytes(64 * 1024);
    const form = new FormData();
    form.append('photo', new Blob([data]), 'photo.jpg');
    const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/photos`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const { path } = (await res.json()) as { path: string };
    ageOf(path);
    await files.sweep();
    expect(readFileSync(path).equals(data)).toBe(true);
  } finally {
    files.close();
    await close(server);
    dir.remove();
  }
});

describe('a shared, untidy directory', () => {
  let srv: ResumableServer;
  beforeEach(async () => {
    // Long enough that each upload's PATCH comes before its expiry on a loaded machine (it flaked at 50 ms).
    srv = await startResumable({ expiration: 1000 });
  });
  afterEach(() => srv.close());

  async function expiredUploads(n: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const res = await request(srv.endpoint, 'POST', { ...TUS, 'Upload-Length': 5 });
      expect(res.status).toBe(201);
      const id = res.headers.location!.split('/').pop()!;
      expect((await request(`${srv.endpoint}/${id}`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('ab'))).status).toBe(204);
      ids.push(id);
    }
    await sleep(1100); // every append renewed its upload's expiry: past it now
    return ids;
  }
  const leftOf = (ids: string[]) => srv.dir.files().filter((name) => ids.some((id) => name === id || name.startsWith(`${id}.`)));

  test('foreign files, old ones included, are never removed: a README, a subdirectory, JSON files, a *.tmp', async () => {
    const ids = await expiredUploads(3);
    const foreign = {
      README: 'hello',
      'report.json': '{"id":"report","offset":1}', // JSON, but not a state this store wrote for `report`
      report: 'the bytes of a report',
      'notes.tmp': 'draft',
      'config.json': '{not json',
    };
    for (const [name, content] of Object.entries(foreign)) writeFileSync(join(srv.dir.path, name), content);
    mkdirSync(join(srv.dir.path, 'archive'));
    for (const name of [...Object.keys(foreign), 'archive']) ageOf(join(srv.dir.path, name));

    expect(await srv.middleware.sweep()).toBe(3); // the expired uploads go, the sweep does not stop at anything
    expect(leftOf(ids)).toEqual([]);
    for (const [name, content] of Object.entries(foreign)) expect(readFileSync(join(srv.dir.path, name), 'utf8')).toBe(content);
    expect(existsSync(join(srv.dir.path, 'archive'))).toBe(true);
  });

  test('a client naming a foreign file as its upload cannot read or remove it', async () => {
    writeFileSync(join(srv.dir.path, 'report.json'), '{"offset":1,"complete":false}');
    writeFileSync(join(srv.dir.path, 'report'), 'the bytes of a report');
    expect((await request(`${srv.endpoint}/report`, 'HEAD', TUS)).status).toBe(404);
    expect((await request(`${srv.endpoint}/report`, 'DELETE', TUS)).status).toBe(404);
    expect(readFileSync(join(srv.dir.path, 'report'), 'utf8')).toBe('the bytes of a report');
    expect(existsSync(join(srv.dir.path, 'report.json'))).toBe(true);
  });

  test('a state the store cannot read (emptied by a power cut) answers 500, is left alone, and does not stop the sweep', async () => {
    const ids = await expiredUploads(12);
    const [broken, ...others] = ids;
    writeFileSync(join(srv.dir.path, `${broken}.json`), '');
    ageOf(join(srv.dir.path, `${broken}.json`));
    const head = await request(`${srv.endpoint}/${broken}`, 'HEAD', TUS);
    expect(head.status).toBe(500);
    // DELETE cannot tell whether it is a completed upload, which belongs to the app: it stays.
    expect((await request(`${srv.endpoint}/${broken}`, 'DELETE', TUS)).status).toBe(500);
    expect(await srv.middleware.sweep()).toBe(others.length);
    expect(leftOf(others)).toEqual([]);
    expect(leftOf([broken]).sort()).toEqual([broken, `${broken}.json`]);
  });

  test('what a crash leaves is swept once older than a minute: an interrupted removal (marker and bytes), a temporary state', async () => {
    const [removing, writing] = await expiredUploads(2);
    const d = srv.dir.path;
    // A removal that stopped after marking: the state renamed to its marker, the bytes still there.
    const { renameSync } = await import('node:fs');
    renameSync(join(d, `${removing}.json`), join(d, `${removing}.removed`));
    // A state write that stopped before its rename.
    const temporary = `${writing}.json.${randomBytes(6).toString('hex')}.tmp`;
    writeFileSync(join(d, temporary), '{"id":');
    expect(await srv.middleware.sweep()).toBe(1); // `writing` expired; the young leftovers stay for now
    expect(leftOf([removing, writing]).sort()).toEqual([removing, `${removing}.removed`, temporary].sort());
    for (const name of [removing, `${removing}.removed`, temporary]) ageOf(join(d, name));
    await srv.middleware.sweep();
    expect(leftOf([removing, writing])).toEqual([]);
  });
});
