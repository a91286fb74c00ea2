// The demo page driven in real Chromium as a hostile user would (written by a hostile review): cancelled
// uploads, errors on the rows, filenames holding HTML, uploaded pages, same names, many and empty files.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { loadConfig } from '../examples/config';
import { startDemoServer, type RunningDemo } from '../examples/server';
import { tempDir } from './helpers/app';
import { chromiumMissing, chromiumPath } from './setup/browser';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let browser: Browser;
beforeAll(async () => {
  const missing = chromiumMissing();
  if (missing) throw new Error(missing);
  browser = await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run'],
    timeout: 30_000,
  });
});
afterAll(async () => browser?.close());

async function demo(env: Record<string, string> = {}): Promise<{ running: RunningDemo; dir: ReturnType<typeof tempDir>; logs: string[] }> {
  const dir = tempDir('demo-browser-');
  const logs: string[] = [];
  const running = await startDemoServer(loadConfig({ UPLOAD_DIR: dir.path, PORT: '0', ...env }), (l) => logs.push(l));
  return { running, dir, logs };
}

/** Runs `body` against a fresh demo server and browser context; both are closed, the directory removed. */
async function withPage(
  env: Record<string, string>,
  options: Parameters<Browser['newContext']>[0],
  body: (t: { running: RunningDemo; dir: ReturnType<typeof tempDir>; context: BrowserContext; page: Page }) => Promise<void>,
): Promise<void> {
  const { running, dir } = await demo(env);
  const context = await browser.newContext(options);
  const page = await context.newPage();
  try {
    await body({ running, dir, context, page });
  } finally {
    await context.close();
    await running.shutdown();
    dir.remove();
  }
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? (e as any).path, e.name));
}

async function throttle(context: BrowserContext, page: Page, bytesPerSecond: number): Promise<void> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond });
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${check}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const row = (name: string) => `li.upload-row[data-name="${name}"]`;

test('probe: a throttled upload can be watched in progress (sanity for the tests below)', async () => {
  const { running, dir } = await demo();
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    await page.goto(running.url);
    await throttle(context, page, 2 * MiB);
    await page.setInputFiles('#file-input', [{ name: 'slow.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(8 * MiB, 1) }]);
    await until(async () => Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow')) >= 10, 20_000);
    const v = Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow'));
    expect(v).toBeLessThan(100);
  } finally {
    await context.close();
    await running.shutdown();
    dir.remove();
  }
}, 60_000);

async function closedCleanly(running: RunningDemo, dir: string): Promise<{ files: string[]; listed: number }> {
  const deadline = Date.now() + 20_000;
  let files = filesUnder(dir);
  while (files.length > 0 && running.demo.store.size === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    files = filesUnder(dir);
  }
  return { files, listed: running.demo.store.size };
}

test('closing the tab mid-upload leaves no partial file on disk: none, or the whole file listed', async () => {
  await withPage({}, {}, async ({ running, dir, context, page }) => {
    await page.goto(running.url);
    await throttle(context, page, 2 * MiB);
    await page.setInputFiles('#file-input', [{ name: 'closed.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(16 * MiB, 2) }]);
    await until(async () => Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow')) >= 20, 20_000);
    expect(filesUnder(dir.path).length).toBe(1); // rolled over to disk, being written
    await page.close();
    // Chromium may let the upload of a closed page finish at full speed (the throttle went with the page):
    // then it is stored whole and listed; else nothing stays. Never a partial file.
    const settled = await closedCleanly(running, dir.path);
    if (settled.listed === 0) expect(settled.files).toEqual([]);
    else expect({ listed: settled.listed, sizes: settled.files.map((f) => statSync(f).size) }).toEqual({ listed: 1, sizes: [16 * MiB] });
  });
}, 60_000);

test('navigating away mid-upload leaves no partial file on disk', async () => {
  await withPage({}, {}, async ({ running, dir, context, page }) => {
    await page.goto(running.url);
    await throttle(context, page, 2 * MiB);
    await page.setInputFiles('#file-input', [{ name: 'away.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(16 * MiB, 3) }]);
    await until(async () => Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow')) >= 20, 20_000);
    await page.goto('about:blank');
    expect(await closedCleanly(running, dir.path)).toEqual({ files: [], listed: 0 });
  });
}, 60_000);

test('a file far over MAX_FILE_SIZE on a slow link: the row shows LIMIT_FILE_SIZE (README: "or the server\'s error code and message")', async () => {
  await withPage({ MAX_FILE_SIZE: '1MiB' }, {}, async ({ running, dir, context, page }) => {
    await page.goto(running.url);
    await throttle(context, page, 4 * MiB);
    await page.setInputFiles('#file-input', [{ name: 'huge.iso', mimeType: 'application/octet-stream', buffer: Buffer.alloc(40 * MiB, 4) }]);
    await page.locator(`${row('huge.iso')}[data-state="error"]`).waitFor({ timeout: 40_000 });
    const code = await page.getAttribute(row('huge.iso'), 'data-code');
    const text = await page.textContent(`${row('huge.iso')} .error`);
    expect({ code, text }).toEqual({ code: 'LIMIT_FILE_SIZE', text: 'LIMIT_FILE_SIZE File too large' });
    expect(await closedCleanly(running, dir.path)).toEqual({ files: [], listed: 0 });
  });
}, 90_000);

test('server gone mid-upload: the row says so (NETWORK_ERROR), partial file removed', async () => {
  await withPage({}, {}, async ({ running, dir, context, page }) => {
    await page.goto(running.url);
    await throttle(context, page, 2 * MiB);
    await page.setInputFiles('#file-input', [{ name: 'gone.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(16 * MiB, 5) }]);
    await until(async () => Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow')) >= 20, 20_000);
    running.server.close(); // the server goes away: no listener, its connections cut
    running.server.closeAllConnections();
    await page.locator(`${row('gone.bin')}:not([data-state="uploading"])`).waitFor({ timeout: 20_000 });
    expect(await page.getAttribute(row('gone.bin'), 'data-state')).toBe('error');
    expect(await page.getAttribute(row('gone.bin'), 'data-code')).toBe('NETWORK_ERROR');
    expect(await closedCleanly(running, dir.path)).toEqual({ files: [], listed: 0 });
  });
}, 60_000);

test('filenames with HTML are shown as text in both lists (multipart and tus), never parsed', async () => {
  const { running, dir } = await demo();
  const context = await browser.newContext();
  const page = await context.newPage();
  const dialogs: string[] = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
  const evil = `<img src=x onerror=alert(1)><svg onload=alert(2)>'&amp;.txt`;
  try {
    await page.goto(running.url);
    await page.setInputFiles('#file-input', [{ name: evil, mimeType: 'text/html', buffer: Buffer.from('<script>alert(3)</script>') }]);
    await page.locator('li.stored-row').first().waitFor({ timeout: 20_000 });
    await page.check('#resumable');
    await page.setInputFiles('#file-input', [{ name: `tus-${evil}`, mimeType: 'text/html', buffer: Buffer.from('<script>alert(4)</script>') }]);
    await until(async () => (await page.locator('li.stored-row').count()) === 2, 20_000);
    expect(await page.locator('main img, main svg, main script').count()).toBe(0);
    const names = await page.locator('li.stored-row .name').allTextContents();
    expect(names.sort()).toEqual([evil, `tus-${evil}`].sort());
    await page.reload();
    await until(async () => (await page.locator('li.stored-row').count()) === 2, 20_000);
    expect(await page.locator('main img, main svg, main script').count()).toBe(0);
    expect(dialogs).toEqual([]);
  } finally {
    await context.close();
    await running.shutdown();
    dir.remove();
  }
}, 60_000);

test('an uploaded .html / .svg is downloaded, never rendered on the demo origin', async () => {
  await withPage({}, { acceptDownloads: true }, async ({ running, context, page }) => {
    await page.goto(running.url);
    const html = Buffer.from('<html><body><script>document.title="PWNED"</script>hello</body></html>');
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" onload="document.title=\'PWNED\'"><script>document.title="PWNED"</script></svg>');
    await page.setInputFiles('#file-input', [
      { name: 'page.html', mimeType: 'text/html', buffer: html },
      { name: 'pic.svg', mimeType: 'image/svg+xml', buffer: svg },
    ]);
    await until(async () => (await page.locator('li.stored-row').count()) === 2, 20_000);
    const listed = (await (await page.request.get(`${running.url}/api/files`)).json()) as { files: { id: string; originalname: string }[] };
    for (const f of listed.files) {
      const res = await page.request.get(`${running.url}/api/files/${f.id}`);
      const h = res.headers();
      expect(h['x-content-type-options']).toBe('nosniff');
      expect(h['content-disposition']).toMatch(/^attachment;/);
      expect(h['content-security-policy']).toMatch(/sandbox/);
      // Navigating to it: a download, not a page.
      const tab = await context.newPage();
      const dl = tab.waitForEvent('download', { timeout: 10_000 });
      await tab.goto(`${running.url}/api/files/${f.id}`).catch(() => undefined);
      expect((await dl).suggestedFilename()).toBe(f.originalname);
      await tab.close();
    }
  });
}, 60_000);

test('two uploads of the same name (different bytes, at once): both kept, each downloads its own bytes', async () => {
  await withPage({}, {}, async ({ running, page }) => {
    await page.goto(running.url);
    const a = Buffer.alloc(2 * MiB, 0xaa);
    const b = Buffer.alloc(2 * MiB, 0xbb);
    await page.setInputFiles('#file-input', [{ name: 'same.bin', mimeType: 'application/octet-stream', buffer: a }]);
    await page.setInputFiles('#file-input', [{ name: 'same.bin', mimeType: 'application/octet-stream', buffer: b }]);
    await until(async () => (await page.locator('li.stored-row').count()) === 2, 20_000);
    const listed = (await (await page.request.get(`${running.url}/api/files`)).json()) as { files: { id: string; sha256: string }[] };
    expect(listed.files.map((f) => f.sha256).sort()).toEqual([sha256(a), sha256(b)].sort());
    for (const f of listed.files) {
      const body = await (await page.request.get(`${running.url}/api/files/${f.id}`)).body();
      expect(sha256(body)).toBe(f.sha256);
    }
  });
}, 60_000);

test('many files: 60 at once, each in its own request, all stored and listed', async () => {
  await withPage({}, {}, async ({ running, page }) => {
    await page.goto(running.url);
    const files = Array.from({ length: 60 }, (_, i) => ({ name: `many-${i}.bin`, mimeType: 'application/octet-stream', buffer: Buffer.alloc(i % 2 ? 1500 * KiB : 10 * KiB, i) }));
    await page.setInputFiles('#file-input', files);
    await until(async () => (await page.locator('li.upload-row[data-state="done"]').count()) === 60, 60_000);
    await until(async () => (await page.locator('li.stored-row').count()) === 60, 10_000);
    expect(running.demo.store.size).toBe(60);
  });
}, 90_000);

test('resumable: the same file chosen twice while the first runs: both rows finish, and every listed file downloads', async () => {
  const { running, dir, logs } = await demo();
  const files = tempDir('rev21a-files-');
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    const data = Buffer.alloc(6 * MiB, 7);
    const file = path.join(files.path, 'twice.bin');
    writeFileSync(file, data);
    await page.goto(`${running.url}/?chunkSize=${256 * KiB}`);
    await page.check('#resumable');
    await throttle(context, page, 3 * MiB);
    await page.setInputFiles('#file-input', file);
    await until(async () => Number(await page.getAttribute('[role=progressbar]', 'aria-valuenow')) >= 10, 20_000);
    await page.setInputFiles('#file-input', file);
    await until(async () => (await page.locator('li.upload-row[data-state="uploading"], li.upload-row[data-state="retrying"]').count()) === 0, 60_000);
    const states = await page.locator('li.upload-row').evaluateAll((els) => els.map((e) => `${(e as any).dataset.state}:${(e as any).dataset.code ?? ''}`));
    const listed = (await (await page.request.get(`${running.url}/api/files`)).json()) as { files: { id: string; sha256: string; size: number }[] };
    const downloads: string[] = [];
    for (const f of listed.files) {
      const res = await page.request.get(`${running.url}/api/files/${f.id}`);
      downloads.push(res.status() === 200 ? sha256(await res.body()) : `HTTP ${res.status()}`);
    }
    expect({ states, downloads: downloads.map((d) => d === sha256(data)) }).toEqual({ states: ['done:', 'done:'], downloads: listed.files.map(() => true) });
    // Deleting one listed copy must not take the bytes of another listed copy
    if (listed.files.length === 2) {
      await page.request.delete(`${running.url}/api/files/${listed.files[0].id}`);
      const res = await page.request.get(`${running.url}/api/files/${listed.files[1].id}`);
      expect(res.status()).toBe(200);
      expect(sha256(await res.body())).toBe(sha256(data));
    }
  } finally {
    console.log(logs.join('\n'));
    await context.close();
    await running.shutdown();
    dir.remove();
    files.remove();
  }
}, 90_000);

test('send as one request: past MAX_FILES every row shows LIMIT_FILE_COUNT; one file too large fails them all and nothing stays on disk', async () => {
  await withPage({ MAX_FILES: '3', MAX_FILE_SIZE: '2MiB' }, {}, async ({ running, dir, page }) => {
    await page.goto(running.url);
    await page.check('#one-request');
    await page.setInputFiles('#file-input', Array.from({ length: 4 }, (_, i) => ({ name: `n${i}.bin`, mimeType: 'application/octet-stream', buffer: Buffer.alloc(1500 * KiB, i) })));
    await until(async () => (await page.locator('li.upload-row[data-state="error"]').count()) === 4, 20_000);
    expect(new Set(await page.locator('li.upload-row').evaluateAll((els) => els.map((e) => (e as any).dataset.code)))).toEqual(new Set(['LIMIT_FILE_COUNT']));
    await page.click('#clear-uploads');
    await page.setInputFiles('#file-input', [
      { name: 'ok1.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(1500 * KiB, 1) },
      { name: 'big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(3 * MiB, 2) },
    ]);
    await until(async () => (await page.locator('li.upload-row[data-state="error"]').count()) === 2, 20_000);
    expect(await page.getAttribute(row('ok1.bin'), 'data-code')).toBe('LIMIT_FILE_SIZE');
    expect(await closedCleanly(running, dir.path)).toEqual({ files: [], listed: 0 });
  });
}, 60_000);

test('resumable mode: a file over MAX_FILE_SIZE shows the status and the server\'s message on its row', async () => {
  await withPage({ MAX_FILE_SIZE: '1MiB' }, {}, async ({ running, page }) => {
    await page.goto(running.url);
    await page.check('#resumable');
    await page.setInputFiles('#file-input', [{ name: 'tus-big.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(2 * MiB, 1) }]);
    await page.locator(`${row('tus-big.bin')}[data-state="error"]`).waitFor({ timeout: 20_000 });
    // (the resumable endpoint answers errors as text: no code to show, the status and the message)
    expect(await page.getAttribute(row('tus-big.bin'), 'data-code')).toBe('HTTP_413');
    expect(await page.textContent(row('tus-big.bin'))).toContain('HTTP 413 File too large');
  });
}, 60_000);

test('empty files: a 0-byte file is stored and listed in both modes', async () => {
  await withPage({}, {}, async ({ running, page }) => {
    await page.goto(running.url);
    await page.setInputFiles('#file-input', [{ name: 'empty-multipart.txt', mimeType: 'text/plain', buffer: Buffer.alloc(0) }]);
    await page.locator(`${row('empty-multipart.txt')}[data-state="done"]`).waitFor({ timeout: 20_000 });
    await page.check('#resumable');
    await page.setInputFiles('#file-input', [{ name: 'empty-tus.txt', mimeType: 'text/plain', buffer: Buffer.alloc(0) }]);
    await page.locator(`${row('empty-tus.txt')}:not([data-state="uploading"])`).waitFor({ timeout: 20_000 });
    expect(await page.getAttribute(row('empty-tus.txt'), 'data-state')).toBe('done');
    await until(async () => (await page.locator('li.stored-row').count()) === 2, 10_000);
  });
}, 60_000);
