/**
 * Review 22b: `markParsedOnly` trusts that a body chunk whose ArrayBuffer it sees whole came from node:http's
 * parser (a fresh copy per read). A request object built in process — an inject/light-my-request style test
 * harness, a serverless adapter fed a stream, `form-data` piped into a Readable — emits the caller's own
 * buffers as body chunks. A file Buffer appended to a form is emitted as one chunk, whole: the disk engine
 * claimed it, wrote it and detached it: the caller's buffer went empty. (Found by that review; fixed: only a
 * request node:http's parser is reading is marked, and an empty (detached) chunk is never whole.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import { diskEngine, spool, type UploadedFile } from '../lib/index';
import { tempDir } from './helpers/app';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function fakeResponse() {
  const res = new EventEmitter() as EventEmitter & { headersSent: boolean; setHeader: () => void };
  res.headersSent = false;
  res.setHeader = () => undefined;
  return res;
}

test('a request built in process (as form-data builds one): the app\'s own file buffer is not emptied, the stored bytes are right', async () => {
  const dir = tempDir('rev22b-inproc-');
  try {
    const mine = randomBytes(256 * 1024); // its own ArrayBuffer (larger than the pool)
    const expected = sha(mine);
    // What form-data does: the parts' heads as strings, the file as the caller's own Buffer, one chunk.
    const boundary = 'rev22b-form';
    const head = Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
    );
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const req = Object.assign(new PassThrough(), {
      method: 'POST',
      url: '/upload',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.length + mine.length + tail.length) },
    });
    const upload = spool({ storage: diskEngine({ directory: dir.path, lifetime: 'persistent' }) }).single('file');
    const done = new Promise<unknown>((resolve) => upload(req as never, fakeResponse() as never, resolve));
    req.write(head);
    req.write(mine);
    req.end(tail);
    const err = await done;
    expect(err).toBeUndefined();
    const file = (req as unknown as { file: UploadedFile }).file;
    expect(sha(readFileSync(file.path!))).toBe(expected);
    // The caller still holds its buffer: it must be as it was.
    expect(mine.length).toBe(256 * 1024);
    expect(sha(mine)).toBe(expected);
  } finally {
    dir.remove();
  }
});

test('a request built in process that streams one reused block many times: every byte reaches the disk', async () => {
  const dir = tempDir('rev22b-inproc-');
  try {
    const boundary = 'rev22b-boundary';
    const block = Buffer.alloc(64 * 1024, 'z'); // a fill block written 16 times (a generator, a load test)
    const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    const size = 16 * block.length;
    const req = Object.assign(new PassThrough(), {
      method: 'POST',
      url: '/upload',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': String(head.length + size + tail.length) },
    });
    const upload = spool({ storage: diskEngine({ directory: dir.path, lifetime: 'persistent' }) }).single('file');
    const done = new Promise<unknown>((resolve) => upload(req as never, fakeResponse() as never, resolve));
    (async () => {
      req.write(head);
      for (let i = 0; i < 16; i++) {
        if (!req.write(block)) await new Promise((r) => req.once('drain', r));
        await new Promise((r) => setImmediate(r));
      }
      req.end(tail);
    })();
    const err = await done;
    expect(err).toBeUndefined();
    const file = (req as unknown as { file: UploadedFile }).file;
    expect(file.size).toBe(size);
    const onDisk = readFileSync(file.path!);
    expect(onDisk.length).toBe(size);
    expect(sha(onDisk)).toBe(sha(Buffer.alloc(size, 'z')));
  } finally {
    dir.remove();
  }
});
