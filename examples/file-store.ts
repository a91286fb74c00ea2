// The demo's registry of stored files. It lives in process memory only: that is what makes memory-engine
// files downloadable after their request ended, and why the server removes every file when it stops.
import { randomUUID } from 'node:crypto';
import type { UploadedFile } from '../lib';

/** What the API lists for each file (never the bytes or server paths). */
export interface FileInfo {
  id: string;
  originalname: string;
  size: number;
  /** 'memory' | 'disk' | 's3': the engine the spool picked for this file. */
  storage: string;
  sha256: string | undefined;
  mimetype: string;
  createdAt: string;
}

export interface StoredEntry {
  info: FileInfo;
  file: UploadedFile;
}

export class FileStore {
  // A Map iterates in insertion order, so the first memory entry found is the oldest: the one to evict.
  readonly #entries = new Map<string, StoredEntry>();
  #memoryBytes = 0;

  /**
   * @param memoryCap bytes of memory-engine files kept at once. The library's memory budget only covers
   * in-flight requests, so files kept after their response need a bound of their own.
   */
  constructor(readonly memoryCap: number) {}

  /** Bytes held by memory-engine files in the store. */
  get memoryBytes(): number {
    return this.#memoryBytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Whether `files` (one request's) can be stored together (memory files larger than the whole cap cannot). */
  fits(files: readonly UploadedFile[]): boolean {
    return memoryBytesOf(files) <= this.memoryCap;
  }

  /**
   * Registers one request's files. When their memory files do not fit next to the others, the oldest
   * memory files stored before are evicted (their bytes released) — never one of these, which the answer
   * names; the evicted entries are returned for logging.
   */
  addAll(files: readonly UploadedFile[]): { infos: FileInfo[]; evicted: FileInfo[] } {
    const incoming = memoryBytesOf(files);
    if (incoming > this.memoryCap) throw new RangeError(`${incoming} bytes of memory files cannot fit a ${this.memoryCap}-byte store`);
    const evicted: FileInfo[] = [];
    for (const entry of this.#entries.values()) {
      if (this.#memoryBytes + incoming <= this.memoryCap) break;
      if (entry.file.storage !== 'memory') continue;
      this.#forget(entry.info.id);
      void entry.file.remove(); // memory removal only drops references; it cannot fail
      evicted.push(entry.info);
    }
    return { infos: files.map((file) => this.#register(file)), evicted };
  }

  #register(file: UploadedFile): FileInfo {
    if (file.storage === 'memory') this.#memoryBytes += file.size;
    const info: FileInfo = {
      id: randomUUID(),
      originalname: file.originalname,
      size: file.size,
      storage: file.storage,
      sha256: file.sha256,
      mimetype: file.mimetype,
      createdAt: new Date().toISOString(),
    };
    this.#entries.set(info.id, { info, file });
    return info;
  }

  get(id: string): StoredEntry | undefined {
    return this.#entries.get(id);
  }

  /** Newest first, as the page shows them. */
  list(): FileInfo[] {
    return [...this.#entries.values()].map((entry) => entry.info).reverse();
  }

  /**
   * Removes the stored bytes, then forgets the entry. Resolves false for an unknown id. When removal
   * fails the entry stays listed, so the user can retry instead of leaking an unreachable file.
   */
  async delete(id: string): Promise<boolean> {
    const entry = this.#entries.get(id);
    if (!entry) return false;
    await entry.file.remove();
    this.#forget(id);
    return true;
  }

  /** Removes every stored file (shutdown); returns the failures, having tried them all. */
  async clear(): Promise<unknown[]> {
    const ids = [...this.#entries.keys()];
    const results = await Promise.allSettled(ids.map((id) => this.delete(id)));
    return results.flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
  }

  #forget(id: string): void {
    const entry = this.#entries.get(id);
    if (!entry) return;
    this.#entries.delete(id);
    if (entry.file.storage === 'memory') this.#memoryBytes -= entry.file.size;
  }
}

function memoryBytesOf(files: readonly UploadedFile[]): number {
  return files.reduce((sum, file) => sum + (file.storage === 'memory' ? file.size : 0), 0);
}
