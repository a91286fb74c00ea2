/**
 * sweep() reads the store's listing, then removes what it saw expired. A request that started before the
 * expiry and ends between the listing and the removal renews the upload (or completes it: then its file
 * belongs to the app): the sweep must decide on a fresh read, not on its listing. A real disk store whose
 * listing waits at a gate until that request has answered; the bytes are checked by sha256.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resumableDiskStore, SpoolError, type ResumableStore } from '../lib/index';
import { close, tempDir } from './helpers/app';
import { OCTETS, request, sha256Of, startResumable, TUS } from './helpers/resumable';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** The store, with a listing that reads everything first, says so, then waits for `go` before handing it out. */
function gatedListing(inner: ResumableStore) {
  let listed!: () => void;
  const seen = new Promise<void>((resolve) => (listed = resolve));
  let go!: () => void;
  const gate = new Promise<void>((resolve) => (go = resolve));
  async function* list() {
    const all = [];
    for await (const upload of inner.list()) all.push(upload);
    listed();
    await gate;
    yield* all;
  }
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'list') return list;
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store, seen, go };
}

test.each([
  ['completes it (its file is the app\'s)', 10],
  ['renews its expiry (half of it sent)', 5],
])('a request that ends between the sweep\'s listing and its removal %s: the upload stays', async (_label, sent) => {
  const dir = tempDir('spool-sweep-stale-');
  const { store, seen, go } = gatedListing(resumableDiskStore({ directory: dir.path }));
  const server = await startResumable({ store, expiration: 1500 }, dir);
  try {
    const data = Buffer.from('0123456789');
    const res = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': data.length });
    expect(res.status).toBe(201);
    const url = server.url + res.headers.location!;
    const id = url.split('/').pop()!;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    async function* body() {
      yield data.subarray(0, 3);
      await held;
      yield data.subarray(3, sent);
    }
    const patching = request(url, 'PATCH', { ...TUS, ...OCTETS, 'Upload-Offset': 0, 'Content-Length': sent }, body());
    await new Promise((r) => setTimeout(r, 1700)); // expired by the clock, the PATCH still running
    const sweeping = server.middleware.sweep();
    await seen; // the listing holds the upload as it was: expired
    release();
    expect((await patching).status).toBe(204);
    go();
    expect(await sweeping).toBe(0);

    expect(existsSync(join(dir.path, id))).toBe(true);
    const head = await request(url, 'HEAD', TUS);
    expect([head.status, head.headers['upload-offset']]).toEqual([200, String(sent)]);
    if (sent === data.length) {
      expect(server.completed.map((c) => c.readBack)).toEqual([sha(data)]);
      expect(await sha256Of(server.completed[0].file.stream())).toBe(sha(data)); // after the sweep, still there
    } else {
      expect(server.completed).toEqual([]);
    }
  } finally {
    server.middleware.close();
    await close(server.server);
    dir.remove();
  }
}, 30_000);

test('an upload the store refuses to remove as busy (UPLOAD_LOCKED) is kept for the next sweep, and the sweep goes on with the others', async () => {
  const dir = tempDir('spool-sweep-busy-');
  const inner = resumableDiskStore({ directory: dir.path });
  let busy = '';
  const store = new Proxy(inner, {
    get(target, key) {
      if (key === 'remove') {
        return async (id: string) => {
          if (id === busy) throw new SpoolError('UPLOAD_LOCKED', 'the store is busy with it');
          return target.remove(id);
        };
      }
      if (key === 'list') {
        // The busy one first: a sweep that stopped at it would remove nothing.
        return async function* () {
          const all = [];
          for await (const upload of target.list()) all.push(upload);
          yield* all.sort((a, b) => Number(b.id === busy) - Number(a.id === busy));
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const server = await startResumable({ store, expiration: 300 }, dir);
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await request(server.endpoint, 'POST', { ...TUS, 'Upload-Length': 10 });
      expect(res.status).toBe(201);
      ids.push(res.headers.location!.split('/').pop()!);
    }
    busy = ids[0];
    await new Promise((r) => setTimeout(r, 500)); // all three expired
    expect(await server.middleware.sweep()).toBe(2);
    expect(dir.files().filter((f) => f.endsWith('.json')).sort()).toEqual([`${busy}.json`]);
    busy = '';
    expect(await server.middleware.sweep()).toBe(1); // the next sweep takes it
    expect(dir.files()).toEqual([]);
  } finally {
    server.middleware.close();
    await close(server.server);
    dir.remove();
  }
}, 30_000);
