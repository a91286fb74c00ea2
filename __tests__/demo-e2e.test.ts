// The demo page in a real headless Chromium (Debian's package, installed by jest's global setup when
// missing: __tests__/setup/browser.ts; playwright's own browser download does not work here): upload through
// the file input, watch the progress bars, download, and keep screenshots.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadConfig } from '../examples/config';
import { startDemoServer, type RunningDemo } from '../examples/server';
import { tempDir } from './helpers/app';
import { chromiumMissing, chromiumPath } from './setup/browser';

const REPO = path.resolve(__dirname, '..');
// Screenshots of the last run; outside the repository unless asked for.
const ARTIFACTS = process.env.SPOOL_ARTIFACTS || path.join(os.tmpdir(), 'express-spool-artifacts');
const README_SCREENSHOT = path.join(REPO, 'docs', 'demo.png'); // committed, shown in the README
const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic bytes (xorshift), so the sha256s in the committed screenshot do not change run to run. */
function pattern(size: number, seed: number): Buffer {
  const data = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = x & 0xff;
  }
  return data;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let dir: ReturnType<typeof tempDir>;
let running: RunningDemo | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  dir = tempDir('spool-demo-e2e-');
  const config = loadConfig({ UPLOAD_DIR: dir.path, PORT: '0', MAX_FILE_SIZE: '4MiB' });
  running = await startDemoServer(config, () => undefined);
});

afterAll(async () => {
  await browser?.close();
  await running?.shutdown();
  dir.remove();
});

/** Launches Chromium or fails with what to do: this test must never be skipped for a missing browser. */
async function launch(): Promise<Browser> {
  const missing = chromiumMissing();
  if (missing) throw new Error(missing);
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
    timeout: 30_000,
  });
}

async function waitForState(page: Page, name: string, state: 'done' | 'error'): Promise<void> {
  await page.waitForSelector(`li.upload-row[data-name="${name}"][data-state="${state}"]`, { timeout: 30_000 });
}

test('upload a small and a large file in the page, see where each went, download both byte-exact', async () => {
  browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 }, acceptDownloads: true });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // Chromium logs every error answer; the 413 of the too-large file is the one we ask for.
    if (msg.type() === 'error' && !msg.text().includes('status of 413')) problems.push(`console: ${msg.text()}`);
  });

  await page.goto(running!.url);
  // Locators and attribute selectors only: the test compiles without the DOM typings.
  await page.locator('#settings', { hasText: 'stay in memory' }).waitFor();

  const small = { name: 'notes-small.txt', mimeType: 'text/plain', buffer: pattern(10 * KiB, 1) };
  const large = { name: 'video-large.bin', mimeType: 'application/octet-stream', buffer: pattern(3 * MiB, 2) };
  await page.setInputFiles('#file-input', [small, large]);

  // Both progress bars reach 100%, then both rows say where the bytes went.
  for (const file of [small, large]) {
    await page.locator(`li.upload-row[data-name="${file.name}"] [role=progressbar][aria-valuenow="100"]`).waitFor({ timeout: 30_000 });
  }
  await waitForState(page, small.name, 'done');
  await waitForState(page, large.name, 'done');
  const rows = [];
  for (const row of await page.locator('li.upload-row').all()) {
    rows.push({
      name: await row.getAttribute('data-name'),
      storage: await row.locator('.badge').textContent(),
      sha256: await row.getAttribute('data-sha256'),
      percent: await row.locator('.percent').textContent(),
      speed: await row.locator('.speed').textContent(),
    });
  }
  expect(rows).toEqual([
    { name: small.name, storage: 'memory', sha256: sha256(small.buffer), percent: '100%', speed: expect.stringMatching(/MB\/s$/) },
    { name: large.name, storage: 'disk', sha256: sha256(large.buffer), percent: '100%', speed: expect.stringMatching(/MB\/s$/) },
  ]);

  // A file over MAX_FILE_SIZE shows the server's code and message on its own row.
  await page.setInputFiles('#file-input', [{ name: 'too-large.iso', mimeType: 'application/octet-stream', buffer: pattern(5 * MiB, 3) }]);
  await waitForState(page, 'too-large.iso', 'error');
  expect(await page.textContent('li.upload-row[data-name="too-large.iso"] .error')).toBe('LIMIT_FILE_SIZE File too large');

  for (const file of [small, large]) await page.locator(`li.stored-row[data-name="${file.name}"]`).waitFor();
  expect(await page.locator('li.stored-row').count()).toBe(2);
  mkdirSync(ARTIFACTS, { recursive: true });
  mkdirSync(path.dirname(README_SCREENSHOT), { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, 'demo-e2e.png') });
  // The README image stops below the content instead of showing the viewport's empty bottom.
  const content = await page.locator('main').boundingBox();
  const height = Math.min(800, Math.ceil((content?.y ?? 0) + (content?.height ?? 800) + 8));
  // The committed README image is refreshed on demand (UPDATE_SCREENSHOT=1), so test runs leave git clean.
  const readmeShot = process.env.UPDATE_SCREENSHOT === '1' ? README_SCREENSHOT : path.join(ARTIFACTS, 'demo.png');
  await page.screenshot({ path: readmeShot, clip: { x: 0, y: 0, width: 1200, height } });

  // Download each through its button and compare the bytes.
  for (const file of [small, large]) {
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click(`li.stored-row[data-name="${file.name}"] a.download`),
    ]);
    expect(download.suggestedFilename()).toBe(file.name);
    const saved = readFileSync(await download.path());
    expect(saved.length).toBe(file.buffer.length);
    expect(saved.equals(file.buffer)).toBe(true);
  }

  // Delete one through the page: the list and the upload directory follow.
  await page.click(`li.stored-row[data-name="${large.name}"] button.delete`);
  await page.locator(`li.stored-row[data-name="${large.name}"]`).waitFor({ state: 'detached' });
  expect(await page.locator('li.stored-row').count()).toBe(1);
  expect(dir.files()).toEqual([]);

  expect(problems).toEqual([]);
}, 120_000);
