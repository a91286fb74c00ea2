import type { IncomingMessage } from 'node:http';
import { whenAborted } from './abort';
import type { IncomingFile } from './engine';
import type { FileFilter } from '../multipart/options';

/**
 * Runs a fileFilter in either style and resolves with its verdict; the first answer wins.
 * - A filter that declares the callback (`(req, file, cb)`, multer's style) answers through it only:
 *   `cb(null, true | false)` or `cb(err)`. What it returns is ignored (a concise arrow returns whatever its
 *   last call returned), except that a thrown error or a rejected promise fails the request.
 * - One that declares `(req, file)` answers by returning: a boolean or a promise of one; nothing (or a
 *   promise of nothing) accepts the file — the natural `async (req, file) => { if (bad) throw … }`.
 * - One that declares no parameters (`() => true`, or a wrapper `(...args) => real(...args)`) may do either:
 *   a returned boolean, or a promise's, is its answer; returning (or resolving) nothing waits for the
 *   callback — the filter behind a wrapper may be multer's, answering later, so nothing is not a yes (a
 *   wrapper that answers yes that way is ended by `requestTimeout`).
 * The style is read from `filter.length`: a callback hidden behind rest or default parameters
 * (`(req, ...rest)`, `cb = noop`) is not seen — declare `cb` plainly.
 * Every wait ends: when `signal` aborts (the request failed or hit its deadline) the promise rejects.
 * `onVerdict` hears the verdict the moment it is given (a `cb(null, false)` called synchronously is heard
 * before the parser's next part), ahead of the promise.
 */
export function runFileFilter(
  filter: FileFilter,
  req: IncomingMessage,
  file: IncomingFile,
  signal: AbortSignal,
  onVerdict?: (accepted: boolean) => void,
): Promise<boolean> {
  const style = filter.length >= 3 ? 'callback' : filter.length === 0 ? 'either' : 'return';
  return new Promise<boolean>((resolve, reject) => {
    const stop = whenAborted(signal, reject);
    let settled = false;
    const accept = (verdict: boolean) => {
      if (settled) return;
      settled = true;
      stop();
      onVerdict?.(verdict);
      resolve(verdict);
    };
    const refuse = (err: unknown) => {
      if (settled) return;
      settled = true;
      stop();
      reject(err);
    };
    let result: ReturnType<FileFilter>;
    try {
      result = filter(req, file, (err, verdict) => (err ? refuse(err) : accept(verdict === true)));
    } catch (err) {
      return refuse(err);
    }
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<boolean | void>).then(answer, refuse);
      return;
    }
    answer(result as boolean | void);

    /** A returned verdict: the whole answer for a `(req, file)` filter; for one without parameters, a boolean. */
    function answer(verdict: boolean | void): void {
      if (style === 'return') accept(verdict !== false);
      else if (style === 'either' && typeof verdict === 'boolean') accept(verdict);
    }
  });
}
