// A deliberately small HTTP/1.1 client on raw `net` sockets, so that the client
// process spends next to no CPU on the two shared cores: request bodies are
// pre-built Buffers handed to the kernel as they are (no copy, no chunking, no
// per-request allocation beyond the head), responses are parsed just enough to
// find their end (Content-Length or chunked) and their JSON body.

import net from 'node:net';

const CRLF2 = Buffer.from('\r\n\r\n');

/** Pre-renders the request head for one body. */
export function requestHead({ port, path = '/upload', contentType, length, keepAlive = true }) {
  return Buffer.from(
    `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: ${contentType}\r\n` +
      `Content-Length: ${length}\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`,
    'latin1',
  );
}

/**
 * One connection; requests on it are sequential (no pipelining).
 * `request()` resolves with { status, headers, body (Buffer), json() } when the
 * whole response has arrived.
 */
export class Connection {
  #socket;
  #ready;
  #pending = null; // { resolve, reject }
  #buf = Buffer.alloc(0);
  #head = null; // parsed head of the response being read
  #closed = false;

  constructor(port, { timeoutMs = 300_000 } = {}) {
    this.#socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    this.#socket.setTimeout(timeoutMs, () => this.#socket.destroy(new Error(`socket idle for ${timeoutMs} ms`)));
    this.#ready = new Promise((resolve, reject) => {
      this.#socket.once('connect', resolve);
      this.#socket.once('error', reject);
    });
    this.#socket.on('data', (chunk) => this.#onData(chunk));
    this.#socket.on('error', (err) => this.#failPending(err));
    this.#socket.on('close', () => {
      this.#closed = true;
      this.#failPending(new Error('connection closed before the response ended'));
    });
  }

  async request(head, body) {
    await this.#ready;
    if (this.#closed) throw new Error('connection closed');
    if (this.#pending) throw new Error('request already in flight on this connection');
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      const s = this.#socket;
      s.cork();
      s.write(head);
      s.write(body);
      s.uncork();
    });
  }

  close() {
    this.#socket.end();
    this.#socket.destroySoon?.();
  }

  destroy() {
    this.#socket.destroy();
  }

  #failPending(err) {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    p.reject(err);
  }

  #onData(chunk) {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      if (!this.#head) {
        const end = this.#buf.indexOf(CRLF2);
        if (end === -1) return;
        this.#head = parseHead(this.#buf.subarray(0, end).toString('latin1'));
        this.#buf = this.#buf.subarray(end + 4);
      }
      const h = this.#head;
      let body;
      if (h.chunked) {
        const r = dechunk(this.#buf);
        if (!r) return;
        body = r.body;
        this.#buf = this.#buf.subarray(r.consumed);
      } else {
        if (this.#buf.length < h.length) return;
        body = this.#buf.subarray(0, h.length);
        this.#buf = this.#buf.subarray(h.length);
      }
      this.#head = null;
      const p = this.#pending;
      this.#pending = null;
      if (!p) {
        this.#socket.destroy(new Error('unsolicited response'));
        return;
      }
      const res = { status: h.status, headers: h.headers, body, json: () => JSON.parse(body.toString('utf8')) };
      if (h.headers.connection === 'close') this.#socket.end();
      p.resolve(res);
      if (!this.#buf.length) return;
    }
  }
}

function parseHead(text) {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  if (!m) throw new Error(`bad status line ${JSON.stringify(lines[0])}`);
  const headers = {};
  for (let i = 1; i < lines.length; i++) {
    const c = lines[i].indexOf(':');
    if (c > 0) headers[lines[i].slice(0, c).trim().toLowerCase()] = lines[i].slice(c + 1).trim();
  }
  const chunked = /\bchunked\b/i.test(headers['transfer-encoding'] ?? '');
  const length = chunked ? 0 : Number(headers['content-length'] ?? 0);
  return { status: Number(m[1]), headers, chunked, length };
}

/** Decodes a complete chunked body at the start of `buf`, or returns null if it is not all there yet. */
function dechunk(buf) {
  const parts = [];
  let off = 0;
  for (;;) {
    const eol = buf.indexOf('\r\n', off, 'latin1');
    if (eol === -1) return null;
    const size = parseInt(buf.subarray(off, eol).toString('latin1'), 16);
    if (Number.isNaN(size)) throw new Error('bad chunk size');
    off = eol + 2;
    if (size === 0) {
      // no trailers expected: the terminating CRLF
      if (buf.length < off + 2) return null;
      return { body: Buffer.concat(parts), consumed: off + 2 };
    }
    if (buf.length < off + size + 2) return null;
    parts.push(buf.subarray(off, off + size));
    off += size + 2;
  }
}

/**
 * Sends `count` requests, `concurrency` at a time, and returns their finish times (ms since `t0`);
 * `onResponse(res, i)` sees each response. `keepAlive`: each of `concurrency` connections sends its next
 * request as soon as the previous response has arrived. Otherwise every request opens its own connection
 * (the head says `Connection: close`; head and body are handed to the socket in one corked write).
 */
export async function runPool({ port, head, body, count, concurrency, t0, onResponse, keepAlive = true }) {
  const finish = new Array(count);
  let next = 0;
  const conns = new Set();
  const open = () => {
    const c = new Connection(port);
    conns.add(c);
    return c;
  };
  const done = (c) => {
    c.close();
    conns.delete(c);
  };
  const send = async (c, i) => {
    const res = await c.request(head, body);
    finish[i] = now() - t0;
    onResponse(res, i);
  };
  const worker = keepAlive
    ? async () => {
        const c = open();
        try {
          for (let i = next++; i < count; i = next++) await send(c, i);
        } finally {
          done(c);
        }
      }
    : async () => {
        for (let i = next++; i < count; i = next++) {
          const c = open();
          try {
            await send(c, i);
          } finally {
            done(c);
          }
        }
      };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  } catch (err) {
    for (const c of conns) c.destroy();
    throw err;
  }
  return finish;
}

export function now() {
  return Number(process.hrtime.bigint()) / 1e6;
}
