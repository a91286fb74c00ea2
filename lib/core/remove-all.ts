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
