// `ceiling-disk`: raw node:http, the whole request body piped into one file. The limit for receiving to
// disk on this machine. The write stream gets a 1 MiB buffer, like express-spool's disk engine.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { MiB, fail, sendJson, sha256File, state } from './common.mjs';

export default function ceilingDisk({ directory }) {
  return http.createServer(async (req, res) => {
    const path = join(directory, randomUUID());
    try {
      const out = createWriteStream(path, { flags: 'wx', highWaterMark: MiB });
      await pipeline(req, out);
      const stored = state.verify ? await sha256File(path) : undefined;
      sendJson(res, 200, { files: [{ size: out.bytesWritten, storage: 'disk', stored }] });
    } catch (err) {
      fail(res, err);
    }
  });
}
