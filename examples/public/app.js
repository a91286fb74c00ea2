// The demo page: plain browser JavaScript, no build step. Every file name shown comes from the user or the
// server, so the DOM is built with textContent only (never innerHTML).
'use strict';

const $ = (selector) => document.querySelector(selector);

/** Creates an element: h('span', { class: 'x', title: 'y' }, 'text', childNode). */
function h(tag, attributes = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  for (const child of children) el.append(child instanceof Node ? child : String(child ?? ''));
  return el;
}

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit++;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function formatSpeed(bytes, ms) {
  return ms > 0 ? `${(bytes / 1e6 / (ms / 1000)).toFixed(1)} MB/s` : '–';
}

function storageBadge(storage) {
  return h('span', { class: `badge ${storage}`, 'data-storage': storage }, storage);
}

function shortHash(sha256) {
  return h('code', { class: 'hash', title: sha256 ?? '' }, sha256 ? `${sha256.slice(0, 16)}…` : '–');
}

// ---- settings ------------------------------------------------------------------------------------

async function loadSettings() {
  try {
    const res = await fetch('/api/config');
    const c = await res.json();
    const round = (bytes) => formatBytes(bytes).replace(/\.0+ /, ' '); // settings are round numbers: "1 MiB"
    $('#settings').textContent =
      `Files up to ${round(c.threshold)} stay in memory; larger ones roll over to ${c.rollover}. ` +
      `Memory budget ${round(c.memoryBudget)} · max ${round(c.maxFileSize)} per file · ` +
      `${c.maxFiles} files per request.`;
  } catch {
    $('#settings').textContent = 'Could not read the server settings.';
  }
}

// ---- uploads -------------------------------------------------------------------------------------

/** One row per chosen file; returns the handles the upload code updates. */
function createUploadRow(file) {
  const fill = h('span', { class: 'fill' });
  const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': 0,
    'aria-label': `Upload progress of ${file.name}` }, fill);
  const percent = h('span', { class: 'percent' }, '0%');
  const result = h('span', { class: 'result' }, h('span', { class: 'muted' }, 'uploading…'));
  const el = h('li', { class: 'row upload-row', 'data-name': file.name, 'data-state': 'uploading' },
    h('span', { class: 'name', title: file.name }, file.name),
    h('span', { class: 'size' }, formatBytes(file.size)),
    h('span', { class: 'progress' }, bar, percent),
    result,
  );
  $('#uploads').append(el);
  $('#uploads-empty').hidden = true;
  return { file, el, bar, fill, percent, result, done: false };
}

function setProgress(row, fraction) {
  const value = Math.max(0, Math.min(100, Math.floor(fraction * 100)));
  if (value <= Number(row.bar.getAttribute('aria-valuenow'))) return; // never goes backwards
  row.bar.setAttribute('aria-valuenow', value);
  row.fill.style.width = `${value}%`;
  row.percent.textContent = `${value}%`;
}

function showStored(row, info, ms) {
  row.done = true;
  row.el.dataset.state = 'done';
  row.el.dataset.storage = info.storage;
  row.el.dataset.sha256 = info.sha256 ?? '';
  row.result.replaceChildren(
    h('span', {}, storageBadge(info.storage)),
    shortHash(info.sha256),
    h('span', { class: 'time' }, formatMs(ms)),
    h('span', { class: 'speed' }, formatSpeed(info.size, ms)),
  );
}

function showError(row, error) {
  row.done = true;
  row.el.dataset.state = 'error';
  row.el.dataset.code = error.code;
  row.result.replaceChildren(
    h('span', { class: 'error', role: 'alert' }, h('strong', {}, error.code), ` ${error.message}`),
  );
}

/**
 * POSTs a form with XMLHttpRequest (fetch has no upload progress). Resolves with the status, the JSON
 * answer and the time from send to answer; a network failure resolves with status 0.
 */
function post(form, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/api/files');
    xhr.responseType = 'json';
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.upload.onload = () => onProgress(1); // the whole body is sent
    const started = performance.now();
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response, ms: performance.now() - started });
    xhr.onerror = () => resolve({ status: 0, body: null, ms: performance.now() - started });
    xhr.send(form);
  });
}

function errorOf(res) {
  if (res.body?.error?.code) return res.body.error;
  if (res.status === 0) {
    return { code: 'NETWORK_ERROR', message: 'The connection closed before the server answered (server down, or a far too large file?)' };
  }
  return { code: `HTTP_${res.status}`, message: 'Unexpected answer from the server' };
}

/** One request per file: they all run at once (the browser queues past its connection limit). */
async function uploadOne(row) {
  const form = new FormData();
  form.append('file', row.file, row.file.name);
  const res = await post(form, (fraction) => setProgress(row, fraction));
  if (res.status === 201) showStored(row, res.body.files[0], res.ms);
  else showError(row, errorOf(res));
  await refreshStored();
}

/** All files in one multipart request: the body holds them in order, so progress splits by offsets. */
async function uploadTogether(rows) {
  const form = new FormData();
  for (const row of rows) form.append('files', row.file, row.file.name);
  const total = rows.reduce((sum, row) => sum + row.file.size, 0);
  const res = await post(form, (fraction) => {
    let offset = 0;
    for (const row of rows) {
      const size = row.file.size;
      setProgress(row, size === 0 ? (fraction * total >= offset ? 1 : 0) : (fraction * total - offset) / size);
      offset += size;
    }
  });
  // A failed request stores nothing: the library removes every file of it, so every row gets the error.
  if (res.status === 201) rows.forEach((row, i) => showStored(row, res.body.files[i], res.ms));
  else rows.forEach((row) => showError(row, errorOf(res)));
  await refreshStored();
}

function addFiles(fileList) {
  const files = [...fileList];
  if (files.length === 0) return;
  if ($('#resumable').checked) {
    for (const file of files) void uploadResumable(file);
    return;
  }
  const rows = files.map(createUploadRow);
  if ($('#one-request').checked) void uploadTogether(rows);
  else for (const row of rows) void uploadOne(row);
}

// ---- resumable uploads (tus-js-client, served from node_modules at /vendor/tus.min.js) -----------

const TUS_ENDPOINT = '/uploads/';
/** Bytes per PATCH; `?chunkSize=262144` in the page URL makes interruptions easy to watch. */
const TUS_CHUNK_SIZE = Number(new URLSearchParams(location.search).get('chunkSize')) || 8 * 1024 * 1024;
/** Retries span about two minutes, so a dropped network or a restarting server is waited out. */
const TUS_RETRY_DELAYS = [0, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 15000, 15000, 20000, 20000];
const FINGERPRINT_PREFIX = 'spool-';

/** What identifies "the same file" across reloads: name, size and modification time. */
function fingerprintOf(file) {
  return `${FINGERPRINT_PREFIX}${JSON.stringify([file.name, file.size, file.lastModified])}`;
}

/** Rows of uploads restored from localStorage after a reload, by fingerprint, waiting for their file. */
const waitingRows = new Map();

function setTusState(row, state, text) {
  row.el.dataset.state = state;
  row.result.replaceChildren(h('span', { class: state === 'error' ? 'error' : 'muted', role: state === 'error' ? 'alert' : null }, text));
}

/** A row with pause/resume buttons; `upload` is attached once the file is known. */
function createTusRow(file, fingerprint) {
  const row = createUploadRow(file);
  row.el.dataset.mode = 'resumable';
  row.el.dataset.fingerprint = fingerprint;
  row.el.querySelector('.name').append(h('span', { class: 'tag' }, 'tus'));
  row.pause = h('button', { type: 'button', class: 'button small pause' }, 'Pause');
  row.resume = h('button', { type: 'button', class: 'button small resume', hidden: '' }, 'Resume');
  row.el.querySelector('.progress').append(h('span', { class: 'tus-controls' }, row.pause, row.resume));
  row.pause.addEventListener('click', () => {
    if (!row.upload) return;
    row.paused = true;
    void row.upload.abort(); // keeps the upload URL: start() goes on from the server's offset
    row.pause.hidden = true;
    row.resume.hidden = false;
    setTusState(row, 'paused', 'paused');
  });
  row.resume.addEventListener('click', () => {
    if (!row.upload) return;
    row.paused = false;
    row.resume.hidden = true;
    row.pause.hidden = false;
    setTusState(row, 'uploading', 'uploading…');
    row.upload.start();
  });
  return row;
}

async function uploadResumable(file) {
  const fingerprint = fingerprintOf(file);
  let row = waitingRows.get(fingerprint);
  if (row && !row.done) {
    waitingRows.delete(fingerprint);
    row.file = file;
    row.pause.hidden = false;
    row.resume.hidden = true;
    setTusState(row, 'uploading', 'resuming…');
  } else {
    row = createTusRow(file, fingerprint);
  }
  $('#resume-hint').hidden = waitingRows.size === 0;
  const started = performance.now();
  const upload = new tus.Upload(file, {
    endpoint: TUS_ENDPOINT,
    chunkSize: TUS_CHUNK_SIZE,
    retryDelays: TUS_RETRY_DELAYS,
    // tus-js-client does not retry while the browser says it is offline; we do (4xx other than 409/423/429 are final).
    onShouldRetry: (err) => {
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      const retry = status === 0 || status >= 500 || status === 409 || status === 423 || status === 429;
      if (retry && !row.paused) setTusState(row, 'retrying', navigator.onLine ? 'connection lost, retrying…' : 'offline, retrying…');
      return retry;
    },
    metadata: { filename: file.name, filetype: file.type || 'application/octet-stream' },
    fingerprint: () => Promise.resolve(fingerprint),
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onProgress: (sent, total) => {
      if (row.el.dataset.state === 'retrying') setTusState(row, 'uploading', 'uploading…');
      setProgress(row, total > 0 ? sent / total : 1);
    },
    onSuccess: ({ lastResponse }) => void finishResumable(row, lastResponse?.getHeader('Spool-File-Id'), performance.now() - started),
    onError: (err) => {
      // Final: the retries ran out or the server refused. The URL stays stored, so Resume (or a reload) can go on.
      const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
      // The resumable endpoint answers errors as text (tus has no error body format): status and message.
      const text = (err.originalResponse?.getBody() ?? '').trim().slice(0, 200);
      setTusState(row, 'error', status ? `HTTP ${status}${text ? ` ${text}` : ''}` : 'Network error');
      row.el.dataset.code = status ? `HTTP_${status}` : 'NETWORK_ERROR';
      row.pause.hidden = true;
      row.resume.hidden = !(status === 0 || status >= 500);
      row.paused = true;
    },
  });
  row.upload = upload;
  const previous = await upload.findPreviousUploads();
  if (previous.length > 0) {
    upload.resumeFromPreviousUpload(previous[0]); // HEAD to the stored URL, then PATCHes from its offset
    row.el.dataset.resumed = 'true';
  }
  upload.start();
}


async function finishResumable(row, id, ms) {
  setProgress(row, 1);
  row.pause.remove();
  row.resume.remove();
  const res = await fetch('/api/files').catch(() => null);
  const files = res?.ok ? (await res.json()).files : [];
  // The id comes with the completing PATCH; a retried completion (answer lost) may not carry it.
  const info = files.find((f) => f.id === id) ?? files.find((f) => f.originalname === row.file.name && f.size === row.file.size);
  // Speed counts the bytes this visit sent: a resumed upload started from the server's offset.
  if (info) showStored(row, { ...info, size: Math.max(0, info.size - (row.startOffset ?? 0)) }, ms);
  else setTusState(row, 'done', 'complete');
  row.done = true;
  row.el.dataset.state = 'done';
  await refreshStored();
}

/** After a reload: rows for the uploads localStorage remembers, with their progress from the server. */
async function restoreResumable() {
  if (typeof tus === 'undefined' || !tus.canStoreURLs) return;
  const storage = tus.defaultOptions.urlStorage;
  const stored = await storage.findAllUploads();
  for (const entry of stored) {
    const fingerprint = entry.urlStorageKey.split('::')[1] ?? '';
    if (!fingerprint.startsWith(FINGERPRINT_PREFIX) || waitingRows.has(fingerprint) || !entry.uploadUrl) continue;
    let offset;
    try {
      const res = await fetch(entry.uploadUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' }, cache: 'no-store' });
      if (res.status === 404 || res.status === 410) {
        await storage.removeUpload(entry.urlStorageKey); // expired or removed on the server
        continue;
      }
      offset = Number(res.headers.get('Upload-Offset'));
    } catch {
      offset = NaN; // server down: show the row anyway
    }
    let name = entry.metadata?.filename;
    let size = entry.size;
    try {
      [name, size] = JSON.parse(fingerprint.slice(FINGERPRINT_PREFIX.length));
    } catch {
      // an entry of another fingerprint format: keep the metadata's name
    }
    const row = createTusRow({ name: name ?? '(unknown)', size }, fingerprint);
    row.pause.hidden = true;
    row.resume.hidden = true;
    if (offset >= 0 && size > 0) setProgress(row, offset / size);
    row.startOffset = offset >= 0 ? offset : 0;
    setTusState(row, 'interrupted', 'choose the file again to resume');
    waitingRows.set(fingerprint, row);
  }
  $('#resume-hint').hidden = waitingRows.size === 0;
  if (waitingRows.size > 0) $('#resumable').checked = true;
}

// ---- stored files --------------------------------------------------------------------------------

function storedRow(info) {
  const remove = h('button', { type: 'button', class: 'button small danger delete' }, 'Delete');
  remove.addEventListener('click', async () => {
    remove.disabled = true;
    const res = await fetch(`/api/files/${encodeURIComponent(info.id)}`, { method: 'DELETE' });
    if (!res.ok && res.status !== 404) {
      const body = await res.json().catch(() => null);
      alertRow(row, body?.error ?? { code: `HTTP_${res.status}`, message: 'Delete failed' });
      remove.disabled = false;
      return;
    }
    await refreshStored();
  });
  const row = h('li', { class: 'row stored-row', 'data-id': info.id, 'data-name': info.originalname },
    h('span', { class: 'name', title: info.originalname }, info.originalname || '(no name)'),
    h('span', { class: 'size' }, formatBytes(info.size)),
    h('span', {}, storageBadge(info.storage)),
    shortHash(info.sha256),
    h('span', { class: 'muted', title: info.createdAt }, new Date(info.createdAt).toLocaleTimeString()),
    h('span', { class: 'actions' },
      h('a', { class: 'button small download', href: `/api/files/${encodeURIComponent(info.id)}`, download: '' }, 'Download'),
      remove,
    ),
  );
  return row;
}

function alertRow(row, error) {
  row.querySelector('.error')?.remove();
  row.append(h('span', { class: 'error wide', role: 'alert' }, h('strong', {}, error.code), ` ${error.message}`));
}

let refreshing = Promise.resolve();

/** Reloads the list; calls made while one runs are chained so the last answer wins. */
function refreshStored() {
  refreshing = refreshing.then(async () => {
    try {
      const res = await fetch('/api/files');
      const { files } = await res.json();
      $('#stored').replaceChildren(...files.map(storedRow));
      $('#stored-empty').hidden = files.length > 0;
      const bytes = files.reduce((sum, f) => sum + f.size, 0);
      $('#stored-summary').textContent = files.length ? `${files.length} · ${formatBytes(bytes)}` : '';
    } catch {
      $('#stored-summary').textContent = '(could not load the list)';
    }
  });
  return refreshing;
}

// ---- wiring --------------------------------------------------------------------------------------

const input = $('#file-input');
input.addEventListener('change', () => {
  addFiles(input.files);
  input.value = ''; // choosing the same files again must upload them again
});

const drop = $('#drop');
for (const type of ['dragenter', 'dragover']) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
}
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  addFiles(event.dataTransfer.files);
});
// A file dropped beside the zone would otherwise make the browser navigate away to it.
window.addEventListener('dragover', (event) => event.preventDefault());
window.addEventListener('drop', (event) => event.preventDefault());

const resumableBox = $('#resumable');
resumableBox.checked = localStorage.getItem('spool-demo-resumable') === '1';
resumableBox.addEventListener('change', () => localStorage.setItem('spool-demo-resumable', resumableBox.checked ? '1' : '0'));

$('#clear-uploads').addEventListener('click', () => {
  const running = new Set(['uploading', 'retrying', 'paused', 'interrupted']);
  for (const row of [...$('#uploads').children]) if (!running.has(row.dataset.state)) row.remove();
  $('#uploads-empty').hidden = $('#uploads').children.length > 0;
});
$('#refresh').addEventListener('click', () => void refreshStored());

void loadSettings();
void refreshStored();
void restoreResumable();
