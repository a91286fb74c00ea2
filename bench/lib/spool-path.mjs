// express-spool's own parsing path, without the network, shaped as a parser for
// bench/parser-micro.mjs: the real middleware (built library) runs on a fake
// IncomingMessage (a Readable fed with push(), like node's HTTP parser feeds a
// request) and a fake ServerResponse; its storage engine hands every file
// stream to the harness, which reads it to the end (counting or hashing), i.e.
// the engine discards. So the measured path is:
//   request Readable -> pipe -> @fastify/busboy (+ express-spool's strictness
//   layer) -> FileTap (count, sha256 unless off) -> engine -> consumer
// plus UploadRequest's bookkeeping, UploadedFile creation and next().

import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { spool } = require('../../dist/lib/index.js');

/** A Readable standing in for http.IncomingMessage (same default highWaterMark). */
class FakeRequest extends Readable {
  constructor(headers, onRead) {
    super();
    this.headers = headers;
    this.method = 'POST';
    this.url = '/upload';
    this.complete = false;
    this.onRead = onRead;
  }

  _read() {
    this.onRead();
  }
}

/** Just what the middleware touches on a response. */
class FakeResponse extends EventEmitter {
  headersSent = false;
  setHeader() {}
}

/**
 * Returns a parser factory `(headers) => parser` for runParserMicro.
 * @param {{ sha256: boolean }} options  express-spool's `sha256` option
 */
export function spoolPathAdapter({ sha256 }) {
  let adapter; // the parser object of the run in progress (one at a time)
  const forwardEngine = {
    name: 'bench-forward',
    store(stream, file) {
      return new Promise((resolve, reject) => {
        stream.once('end', () =>
          resolve({
            storage: 'null',
            size: 0,
            details: {},
            stream: () => Readable.from([]),
            remove: async () => {},
          }),
        );
        stream.once('error', reject);
        // The harness attaches its 'data' consumer here (count or sha256), which is the "discard".
        adapter.emit('file', file.fieldname, stream, {
          filename: file.originalname,
          encoding: file.encoding,
          mimeType: file.mimetype,
        });
      });
    },
  };
  const upload = spool({
    storage: forwardEngine,
    sha256,
    limits: { fileSize: Infinity, files: Infinity, parts: Infinity },
  }).any();

  return function makeParser(headers) {
    const parser = new EventEmitter();
    adapter = parser;
    let needDrain = false;
    const req = new FakeRequest({ ...headers }, () => {
      if (needDrain) {
        needDrain = false;
        parser.emit('drain');
      }
    });
    const res = new FakeResponse();
    parser.write = (chunk) => {
      const ok = req.push(chunk);
      if (!ok) needDrain = true;
      return ok;
    };
    parser.end = () => {
      req.complete = true;
      req.push(null);
    };
    parser.lastFiles = null;
    upload(req, res, (err) => {
      if (err) return parser.emit('error', err);
      for (const [name, value] of Object.entries(req.body)) parser.emit('field', name, value, {});
      parser.lastFiles = req.files;
      res.emit('close'); // the response ends: the middleware releases its lease
      parser.emit('finish');
    });
    return parser;
  };
}
