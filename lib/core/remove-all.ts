import { SpoolError } from './errors';
/** How many removals run at once: enough to overlap I/O, few enough not to exhaust file descriptors. */
const CONCURRENCY = 16;

/**
 * Removes every item (a loop, not recursion: tens of thousands of files must not overflow the stack,
 * multer CVE-2026-3520). Never rejects; returns the failures so the caller can report them.
 */
export async function removeAll(items: readonly { remove(): Promise<void> }[]): Promise<unknown[]> {
  const failures: unknown[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      try {
        await item.remove();
      } catch (err) {
        failures.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
  return failures;
}

/**
 * removeAll, waiting at most `ms`: past it, resolves with the failures so far plus a STORAGE_FAILED error
 * that says removal has not finished (it goes on in the background).
 */
export async function removeAllWithin(items: readonly { remove(): Promise<void> }[], ms: number): Promise<unknown[]> {
  if (items.length === 0) return [];
  const failures: unknown[] = [];
  const removal = removeAll(items).then((found) => void failures.push(...found));
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, ms, true)));
  const timedOut = await Promise.race([removal.then(() => false), late]);
  clearTimeout(timer);
  if (!timedOut) return failures;
  return [...failures, new SpoolError('STORAGE_FAILED', `Removing the stored files took longer than ${ms} ms; it goes on in the background`)];
}
