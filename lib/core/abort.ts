/**
 * Runs `onAbort` once when `signal` aborts — at once if it already has (a listener added after the fact
 * would never fire). Returns the function that removes the listener; call it when the work is done.
 */
export function whenAborted(signal: AbortSignal, onAbort: (reason: unknown) => void): () => void {
  if (signal.aborted) {
    onAbort(signal.reason);
    return noop;
  }
  const listener = () => onAbort(signal.reason);
  signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

function noop(): void {}
