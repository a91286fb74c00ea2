/**
 * A directory shared with a multipart engine that keeps clients' (sanitized) filenames, as a hostile review
 * set it up: a client uploads `<victim>.json` holding a forged state (or `<victim>.removed`), then asks the
 * resumable handler to DELETE or PATCH `<victim>`, or waits for the sweep, to have another user's file
 * `<victim>` removed or overwritten. The store takes as its own only names of its ids' shape (16 random
 * bytes, base64url: 22 characters), so ordinary names like these are never its uploads. A writer that lets
 * clients choose 22-character base64url names could still forge one: the README asks for a directory of the
 * store's own.
 */
import { existsSync, readFileSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { diskEngine, resumable, resumableDiskStore, spool } from '../lib/index';
import { close, listen, tempDir } from './helpers/app';
import { OCTETS, request, TUS } from './helpers/resumable';

const sanitize = (name: string) => name.replace(/[^A-Za-z0-9._-]/g, '_');

async function setup() {
  const dir = tempDir('rev20e-shared-');
  const upload = spool({ storage: diskEngine({ directory: dir.path, filename: (_req, file) => sanitize(file.originalname) }) });
  const files = resumable({ store: resumableDiskStore({ directory: dir.path }), sweepInterval: 0 });
  const app = express();
  app.post('/docs', upload.single('doc'), (req, res) => res.json({ path: req.file!.path }));
  app.use('/files', files);
  const server = await listen(app);
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const post = async (name: string, data: Buffer | string) => {
    const form = new FormData();
    form.append('doc', new Blob([data]), name);
    return fetch(`${base}/docs`, { method: 'POST', body: form });
  };
  return { dir, base, post, done: async () => (files.close(), await close(server), dir.remove()) };
}

const forged = (id: string) => JSON.stringify({ id, offset: 0, complete: true, length: 0, metadata: {}, createdAt: 0, extra: {} });

test("a forged state at an ordinary name: DELETE of that name is 404 and another user's file stays", async () => {
  const s = await setup();
  try {
    // A user stores a document; its name is the client's, sanitized.
    expect((await s.post('Invoice_2024', 'victim bytes')).status).toBe(200);
    const victim = join(s.dir.path, 'Invoice_2024');
    // The attacker uploads a "document" whose name and content make it look like the store's state.
    expect((await s.post('Invoice_2024.json', forged('Invoice_2024'))).status).toBe(200);
    const res = await request(`${s.base}/files/Invoice_2024`, 'DELETE', { ...TUS });
    expect(existsSync(victim)).toBe(true);
    expect(res.status).toBe(404);
  } finally {
    await s.done();
  }
});

test("a forged state at an ordinary name: PATCH of that name does not overwrite another user's file", async () => {
  const s = await setup();
  try {
    expect((await s.post('Payroll', 'victim bytes')).status).toBe(200);
    const victim = join(s.dir.path, 'Payroll');
    const state = JSON.stringify({ id: 'Payroll', offset: 0, complete: false, length: 5, metadata: {}, createdAt: 0, extra: {} });
    expect((await s.post('Payroll.json', state)).status).toBe(200);
    const patch = await request(`${s.base}/files/Payroll`, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0 }, Buffer.from('PWNED'));
    expect(patch.status).toBe(404);
    expect(readFileSync(victim, 'utf8')).toBe('victim bytes');
  } finally {
    await s.done();
  }
});

test("an uploaded file named `<victim>.removed` does not make the sweep delete another user's file", async () => {
  const s = await setup();
  try {
    expect((await s.post('Contract', 'victim bytes')).status).toBe(200);
    const victim = join(s.dir.path, 'Contract');
    expect((await s.post('Contract.removed', 'anything')).status).toBe(200);
    // The attacker only has to wait a minute (the sweep's ORPHAN_AGE); the test ages the marker instead.
    const past = new Date(Date.now() - 120_000);
    utimesSync(join(s.dir.path, 'Contract.removed'), past, past);
    const files = resumable({ store: resumableDiskStore({ directory: s.dir.path }), sweepInterval: 0 });
    await files.sweep();
    files.close();
    expect(existsSync(victim)).toBe(true);
    expect(existsSync(join(s.dir.path, 'Contract.removed'))).toBe(true); // a client's file too
  } finally {
    await s.done();
  }
});
