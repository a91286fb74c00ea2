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
  const rows = files.map(createUploadRow);
  if ($('#one-request').checked) void uploadTogether(rows);
  else for (const row of rows) void uploadOne(row);
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

$('#clear-uploads').addEventListener('click', () => {
  for (const row of [...$('#uploads').children]) if (row.dataset.state !== 'uploading') row.remove();
  $('#uploads-empty').hidden = $('#uploads').children.length > 0;
});
$('#refresh').addEventListener('click', () => void refreshStored());

void loadSettings();
void refreshStored();
