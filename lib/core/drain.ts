import type { IncomingMessage } from 'node:http';

/**
 * Reads (and drops) the rest of a request body that will not be used, until it ends, the client goes away
 * or `timeout` ms pass, then calls `done` once. Answering while a client still sends makes the server close
 * the connection under it: the client then sees a reset (EPIPE, ECONNRESET) instead of the answer.
 */
export function drainRequest(req: IncomingMessage, timeout: number, done: () => void): void {
  if (req.complete || req.destroyed) return done();
  let called = false;
  const finish = () => {
    if (called) return;
    called = true;
    clearTimeout(timer);
    req.off('end', finish).off('close', finish);
    done();
  };
  const timer = setTimeout(finish, timeout);
  req.once('end', finish).once('close', finish);
  req.resume();
}
