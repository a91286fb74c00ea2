// The demo page in a real headless Chromium (Debian's package, installed by jest's global setup when
// missing: __tests__/setup/browser.ts; playwright's own browser download does not work here): upload through
// the file input, watch the progress bars, download, and keep screenshots.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
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

/** Polls `check` every 5 ms until it holds (fast: the uploads below are cut while they run). */
async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${check}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('resumable mode: a 16 MiB tus upload in 128 KiB chunks survives a network cut and a page reload, byte-exact', async () => {
  browser ??= await launch();
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    // Requests that fail while offline (or are aborted by Pause) are what this test provokes.
    if (msg.type() === 'error' && !/ERR_INTERNET_DISCONNECTED|net::ERR_/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  const patches: { offset: number; failed?: string }[] = [];
  page.on('request', (req) => {
    if (req.method() === 'PATCH' && req.url().includes('/uploads/')) patches.push({ offset: Number(req.headers()['upload-offset']) });
  });
  let failed = 0;
  page.on('requestfailed', (req) => {
    if (req.url().includes('/uploads/')) failed++;
  });

  // Files on disk (not buffers), so lastModified — part of the resume fingerprint — stays the same across the reload.
  const files = tempDir('spool-demo-e2e-files-');
  // A server of its own: the first test's MAX_FILE_SIZE (4 MiB) is too small for these files.
  const uploadDir = tempDir('spool-demo-e2e-resumable-');
  const demo = await startDemoServer(loadConfig({ UPLOAD_DIR: uploadDir.path, PORT: '0', MAX_FILE_SIZE: '64MiB' }), () => undefined);
  try {
    const cut = { name: 'resumable-cut.bin', buffer: pattern(16 * MiB, 7) };
    const paused = { name: 'resumable-reload.bin', buffer: pattern(8 * MiB, 8) };
    for (const file of [cut, paused]) writeFileSync(path.join(files.path, file.name), file.buffer);
    const row = (name: string) => `li.upload-row[data-name="${name}"]`;
    const progressOf = async (name: string) => Number(await page.getAttribute(`${row(name)} [role=progressbar]`, 'aria-valuenow'));

    await page.goto(`${demo.url}/?chunkSize=${128 * KiB}`);
    await page.locator('#settings', { hasText: 'stay in memory' }).waitFor();
    await page.check('#resumable');

    // 1. The network goes away after a few chunks: the row says it is retrying, then finishes once it is back.
    await page.setInputFiles('#file-input', path.join(files.path, cut.name));
    await until(async () => patches.length >= 8, 30_000);
    await context.setOffline(true);
    await page.locator(`${row(cut.name)}[data-state="retrying"]`).waitFor({ timeout: 30_000 });
    const atCut = await progressOf(cut.name);
    expect(atCut).toBeLessThan(100);
    await page.waitForTimeout(3000);
    expect(await progressOf(cut.name)).toBe(atCut); // nothing moves while offline
    expect(await page.getAttribute(row(cut.name), 'data-state')).toBe('retrying');
    await context.setOffline(false);
    await page.locator(`${row(cut.name)}[data-state="done"]`).waitFor({ timeout: 90_000 });
    expect(failed).toBeGreaterThan(0);
    expect(await page.getAttribute(row(cut.name), 'data-sha256')).toBe(sha256(cut.buffer));
    expect(await progressOf(cut.name)).toBe(100);

    // 2. Pause half-way, reload: the row comes back with the server's progress; choosing the file again
    //    resumes from that offset (the first PATCH after the reload does not start at 0).
    await page.setInputFiles('#file-input', path.join(files.path, paused.name));
    await until(async () => (await progressOf(paused.name)) >= 20, 30_000);
    await page.click(`${row(paused.name)} button.pause`);
    await page.locator(`${row(paused.name)}[data-state="paused"]`).waitFor();
    const beforeReload = await progressOf(paused.name);
    expect(beforeReload).toBeLessThan(100);
    await page.reload();
    await page.locator(`${row(paused.name)}[data-state="interrupted"]`).waitFor({ timeout: 30_000 });
    await page.locator('#resume-hint').waitFor();
    const restored = await progressOf(paused.name);
    // The server's offset, about what the page showed (the paused request may have stored a little more,
    // or lost what was still in socket buffers when it was aborted).
    expect(restored).toBeGreaterThanOrEqual(Math.max(1, beforeReload - 3));
    expect(restored).toBeLessThan(100);
    expect(await page.isChecked('#resumable')).toBe(true);
    patches.length = 0;
    await page.setInputFiles('#file-input', path.join(files.path, paused.name));
    await page.locator(`${row(paused.name)}[data-state="done"]`).waitFor({ timeout: 90_000 });
    expect(await page.getAttribute(row(paused.name), 'data-resumed')).toBe('true');
    expect(patches[0].offset).toBeGreaterThan(0);
    expect(await page.locator('li.upload-row').count()).toBe(1); // the restored row, not a second one
    expect(await page.getAttribute(row(paused.name), 'data-sha256')).toBe(sha256(paused.buffer));

    // Both are stored files like the multipart ones: listed with their sha256, downloadable byte-exact.
    const listed = (await (await page.request.get(`${demo.url}/api/files`)).json()) as { files: { originalname: string; sha256: string; size: number }[] };
    for (const file of [cut, paused]) {
      expect(listed.files).toContainEqual(expect.objectContaining({ originalname: file.name, size: file.buffer.length, sha256: sha256(file.buffer) }));
      await page.locator(`li.stored-row[data-name="${file.name}"]`).waitFor();
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'demo-e2e-resumable.png') });
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(`li.stored-row[data-name="${cut.name}"] a.download`)]);
    expect(readFileSync(await download.path()).equals(cut.buffer)).toBe(true);
    // Nothing is left for tus-js-client to resume: both uploads removed their fingerprints on success.
    expect(await page.evaluate('Object.keys(localStorage).filter((key) => key.startsWith("tus::")).length')).toBe(0);
  } finally {
    await context.close();
    await demo.shutdown();
    files.remove();
  }
  // Shutdown removed the stored files, the resumable ones included.
  expect(readdirSync(path.join(uploadDir.path, 'resumable'))).toEqual([]);
  uploadDir.remove();
  expect(problems).toEqual([]);
}, 240_000);
