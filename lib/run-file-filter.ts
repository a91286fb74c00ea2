import type { IncomingMessage } from 'node:http';
import type { IncomingFile } from './engine';
import type { FileFilter } from './options';

/**
 * Runs a fileFilter in either style — multer's callback or a returned boolean/promise — and resolves
 * with its verdict. Whichever answer comes first wins; later ones are ignored.
 */
export function runFileFilter(filter: FileFilter, req: IncomingMessage, file: IncomingFile): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    const result = filter(req, file, (err, accept) => (err ? reject(err) : resolve(accept === true)));
    if (typeof result === 'boolean') resolve(result);
    else if (result && typeof (result as Promise<unknown>).then === 'function') {
      (result as Promise<boolean | void>).then((accept) => {
        if (typeof accept === 'boolean') resolve(accept);
      }, reject);
    }
  });
}
