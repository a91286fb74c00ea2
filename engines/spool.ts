import type { Readable } from 'node:stream';
import { collectChunks, putBack } from '../lib/core/collect-chunks';
import type { IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/core/engine';
import { sizeOption, type Size, describe } from '../lib/core/sizes';
import { isStorageEngine } from '../lib/core/engine';
import { diskEngine } from './disk';
import { storedInMemory } from './memory';

export interface SpoolEngineOptions {
  /**
   * Files that end within this many bytes stay in memory; larger ones roll over.
   * @default '1MiB'
   */
  threshold?: Size;
  /**
   * Where files that pass the threshold (or do not fit the memory budget) go.
   * @default diskEngine() — temporary files under os.tmpdir()
   */
  rollover?: StorageEngine;
}

export const DEFAULT_THRESHOLD = 1024 * 1024;

/**
 * Memory for small files, `rollover` for large ones. Bytes are buffered in memory until the file ends
 * (it stays there) or passes the threshold or the memory budget (the buffered bytes and the rest of the
 * stream go to the rollover engine, in order, with backpressure).
 */
export function spoolEngine(options: SpoolEngineOptions = {}): StorageEngine {
  const threshold = sizeOption('threshold', options.threshold, DEFAULT_THRESHOLD);
  const rollover = options.rollover ?? diskEngine();
  if (!isStorageEngine(rollover)) {
    throw new TypeError(`Expected \`rollover\` to be a storage engine, got ${describe(rollover)}`);
  }
  return {
    name: 'spool',
    async store(stream: Readable, file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      const collected = await collectChunks(stream, context.memory, threshold);
      if (!collected.overflow) return storedInMemory(collected.chunks, collected.size);

      // Roll over: put what was read back in front of the stream, then hand the stream over whole.
      // The buffered bytes leave the budget now; the rollover engine consumes them first. They are not kept
      // counted until it has read them: an engine that reserves before it reads (S3: a whole part) would
      // then wait on memory only its own reading can free. Until its reservation is granted they are part
      // of the request's uncounted overhead (at most `threshold` bytes per file, see the README).
      context.memory.release(collected.size);
      putBack(stream, collected);
      return rollover.store(stream, file, context);
    },
  };
}
