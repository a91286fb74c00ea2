import type { IncomingMessage } from 'node:http';
import { whenAborted } from './abort';
import type { IncomingFile } from './engine';
import type { FileFilter } from '../multipart/options';

/**
 * Runs a fileFilter in either style and resolves with its verdict; the first answer wins.
 * - multer's callback: `callback(null, true | false)` or `callback(err)`;
 * - a returned boolean, or a promise of one; a thrown error or rejection fails the request;
 * - a filter that takes no callback and returns (or resolves) nothing accepts the file — the natural
 *   `async (req, file) => { if (bad) throw … }`. One that takes a callback is waited for until it calls it.
 * Every wait ends: when `signal` aborts (the request failed or hit its deadline) the promise rejects.
 */
export function runFileFilter(filter: FileFilter, req: IncomingMessage, file: IncomingFile, signal: AbortSignal): Promise<boolean> {
  const usesCallback = filter.length >= 3;
  return new Promise<boolean>((resolve, reject) => {
    const stop = whenAborted(signal, reject);
    const accept = (verdict: boolean) => {
      stop();
      resolve(verdict);
    };
    const refuse = (err: unknown) => {
      stop();
      reject(err);
    };
    let result: ReturnType<FileFilter>;
    try {
      result = filter(req, file, (err, verdict) => (err ? refuse(err) : accept(verdict === true)));
    } catch (err) {
      return refuse(err);
    }
    if (typeof result === 'boolean') return accept(result);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<boolean | void>).then((verdict) => {
        if (typeof verdict === 'boolean') accept(verdict);
        else if (!usesCallback) accept(true);
      }, refuse);
      return;
    }
    if (!usesCallback) accept(true);
  });
}
