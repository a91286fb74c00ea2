// One resumable-upload target (bench/lib/servers/resumable.mjs) in its own process, forked by
// bench/lib/resumable.mjs: the same IPC as bench/server.mjs, so the client's Server handle works unchanged.
//
//   node bench/lib/servers/resumable-main.mjs <spool-tus-disk|spool-tus-s3|tus-file|tus-s3|ceiling-tus|ceiling-tus-s3> <directory>
//
// IPC: { cmd: 'verify', on } | { cmd: 'cpu' } | { cmd: 'cleanup' } | { cmd: 'exit' } as in bench/server.mjs,
// plus { cmd: 'completed' }: answers { completed: [{ size, storage, sha256?, stored? }] }, the uploads
// completed since the last call.

import { mkdirSync } from 'node:fs';
import { state } from './common.mjs';
import resumableTarget from './resumable.mjs';

const RESUMABLE_TARGETS = ['spool-tus-disk', 'tus-file', 'ceiling-tus', 'spool-tus-s3', 'tus-s3', 'ceiling-tus-s3'];

const [target, directory] = process.argv.slice(2);
if (!RESUMABLE_TARGETS.includes(target) || !directory) {
  process.stderr.write(`usage: node bench/lib/servers/resumable-main.mjs <${RESUMABLE_TARGETS.join('|')}> <directory>\n`);
  process.exit(2);
}
mkdirSync(directory, { recursive: true });

const { server, cleanup, takeCompleted } = await resumableTarget({ kind: target, directory });
server.keepAliveTimeout = 60_000;
server.requestTimeout = 0;
server.headersTimeout = 60_000;

process.on('message', async (m) => {
  const ack = (extra) => process.send({ ack: m.id, ...extra });
  try {
    if (m?.cmd === 'verify') {
      state.verify = !!m.on;
      ack();
    } else if (m?.cmd === 'cpu') {
      const u = process.cpuUsage();
      ack({ cpuMicros: u.user + u.system, userMicros: u.user, systemMicros: u.system });
    } else if (m?.cmd === 'completed') {
      ack({ completed: takeCompleted() });
    } else if (m?.cmd === 'cleanup') {
      await cleanup();
      ack();
    } else if (m?.cmd === 'exit') {
      server.close();
      server.closeAllConnections?.();
      setImmediate(() => process.exit(0)); // process.exit() lets --cpu-prof write its profile
    }
  } catch (err) {
    ack({ error: String(err?.stack ?? err) });
  }
});
process.on('disconnect', () => process.exit(0));

server.listen(0, '127.0.0.1', () => process.send({ ready: true, port: server.address().port, pid: process.pid }));
