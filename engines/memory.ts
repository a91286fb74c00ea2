import { Readable } from 'node:stream';
import { ChunkList, collectChunks } from '../lib/collect-chunks';
import type { IncomingFile, StorageEngine, StoreContext, StoredFile } from '../lib/engine';
import { SpoolError } from '../lib/errors';

/** Details a memory-stored file carries (multer's `buffer`). */
export interface MemoryDetails {
  /** The file's bytes. Joined from the received chunks on first read for large files. */
  readonly buffer: Buffer;
}

/**
 * Keeps each file's bytes in memory, counted against the spool's memory budget.
 * When the budget is exhausted the upload fails with `MEMORY_BUDGET_EXCEEDED` (503) instead of growing.
 */
export function memoryEngine(): StorageEngine {
  return {
    name: 'memory',
    async store(stream: Readable, _file: IncomingFile, context: StoreContext): Promise<StoredFile> {
      const collected = await collectChunks(stream, context.memory, Infinity);
      if (collected.overflow) {
        context.memory.release(collected.size);
        throw new SpoolError('MEMORY_BUDGET_EXCEEDED');
      }
      return storedInMemory(collected.chunks, collected.size);
    },
  };
}

/** Wraps chunks already held (and reserved on the budget) as a stored file. */
export function storedInMemory(chunks: Buffer[], size: number): StoredFile {
  const list = new ChunkList(chunks, size);
  const details: MemoryDetails = {
    get buffer() {
      return list.buffer;
    },
  };
  return {
    storage: 'memory',
    details,
    stream: () => Readable.from(list.chunks(), { objectMode: false }),
    remove: async () => list.clear(),
  };
}
