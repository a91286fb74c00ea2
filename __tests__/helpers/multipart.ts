import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Part =
  | { name: string; value: string }
  | { name: string; filename: string; type?: string; data: Buffer | PatternSource };

/** A deterministic large payload generated on the fly: the test never holds it whole. */
export interface PatternSource {
  size: number;
  seed: number;
}

export const BOUNDARY = '----SpoolTestBoundary7MA4YWxkTrZu0gW';

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Chunks of a pattern source (64 KiB each), reproducible from its seed. */
export function* patternChunks(source: PatternSource, chunkSize = 64 * 1024): Generator<Buffer> {
  const block = Buffer.alloc(chunkSize);
  for (let i = 0; i < chunkSize; i++) block[i] = (i * 31 + source.seed * 7) & 0xff;
  let left = source.size;
  let n = 0;
  while (left > 0) {
    const len = Math.min(chunkSize, left);
    const chunk = Buffer.from(block.subarray(0, len));
    if (len >= 4) chunk.writeUInt32BE(n >>> 0, 0); // every chunk differs, so misordering shows in the hash
    n++;
    yield chunk;
    left -= len;
  }
}

export function patternSha256(source: PatternSource): string {
  const hash = createHash('sha256');
  for (const chunk of patternChunks(source)) hash.update(chunk);
  return hash.digest('hex');
}

export function randomData(size: number): Buffer {
  return randomBytes(size);
}

function partHeader(part: Part, boundary: string): string {
  if ('value' in part) {
    return `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"\r\n\r\n`;
  }
  return (
    `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"; filename="${part.filename}"\r\n` +
    `Content-Type: ${part.type ?? 'application/octet-stream'}\r\n\r\n`
  );
}

/** The body as a sequence of chunks (large file parts generated lazily). */
export function* multipartChunks(parts: Part[], boundary = BOUNDARY): Generator<Buffer> {
  for (const part of parts) {
    yield Buffer.from(partHeader(part, boundary));
    if ('value' in part) yield Buffer.from(part.value);
    else if (Buffer.isBuffer(part.data)) yield part.data;
    else yield* patternChunks(part.data);
    yield Buffer.from('\r\n');
  }
  yield Buffer.from(`--${boundary}--\r\n`);
}

export function multipartBody(parts: Part[], boundary = BOUNDARY): Buffer {
  return Buffer.concat([...multipartChunks(parts, boundary)]);
}

export function multipartLength(parts: Part[], boundary = BOUNDARY): number {
  let total = 0;
  for (const part of parts) {
    total += Buffer.byteLength(partHeader(part, boundary)) + 2;
    if ('value' in part) total += Buffer.byteLength(part.value);
    else total += Buffer.isBuffer(part.data) ? part.data.length : part.data.size;
  }
  return total + Buffer.byteLength(`--${boundary}--\r\n`);
}

export interface RawResponse {
  status: number;
  body: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  headers: http.IncomingHttpHeaders;
}

/** Sends chunks to a listening server with real backpressure; resolves with the response. */
export function postChunks(
  server: http.Server,
  path: string,
  chunks: Iterable<Buffer>,
  headers: Record<string, string | number>,
): Promise<RawResponse> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers }, (res) => {
      const body: Buffer[] = [];
      res.on('data', (c: Buffer) => body.push(c));
      res.on('end', () => {
        const text = Buffer.concat(body).toString();
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, body: text, json, headers: res.headers });
      });
    });
    req.on('error', reject);
    const iterator = chunks[Symbol.iterator]();
    const pump = () => {
      for (;;) {
        const { value, done } = iterator.next();
        if (done) return void req.end();
        if (!req.write(value)) return void req.once('drain', pump);
      }
    };
    pump();
  });
}

export function postMultipart(server: http.Server, path: string, parts: Part[], boundary = BOUNDARY) {
  return postChunks(server, path, multipartChunks(parts, boundary), {
    'content-type': `multipart/form-data; boundary=${boundary}`,
    'content-length': multipartLength(parts, boundary),
  });
}

/** A seeded pseudo-random generator in [0, 1), so that a failing random cut can be replayed. */
export function seededRandom(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

/** Cuts `buf` into pieces at the given offsets (any order, duplicates and out-of-range ones ignored). */
export function cutAt(buf: Buffer, offsets: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const at of [...[...new Set(offsets)].sort((a, b) => a - b), buf.length]) {
    if (at > from && at <= buf.length) {
      pieces.push(buf.subarray(from, at));
      from = at;
    }
  }
  return pieces;
}

/** Deterministic bytes (every value 0..255, no accidental boundary), the same for the same seed. */
export function seededBytes(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let state = seed * 2654435761 + 1;
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    out[i] = state >>> 24;
  }
  return out;
}

/** `data` as HTTP/1.1 chunked encoding, one byte per chunk (no terminating chunk). */
export function oneByteChunks(data: Buffer): Buffer {
  const out = Buffer.alloc(data.length * 6);
  for (let i = 0; i < data.length; i++) {
    out.write('1\r\n', i * 6, 'latin1');
    out[i * 6 + 3] = data[i];
    out.write('\r\n', i * 6 + 4, 'latin1');
  }
  return out;
}
