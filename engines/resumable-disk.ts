import { randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { StoredFile } from '../lib/core/engine';
import { streamIntoKeeping } from '../lib/core/chunk-sink';
import { SpoolError } from '../lib/core/errors';
import { describe } from '../lib/core/sizes';
import type { AppendContext, NewUpload, ResumableStore, ResumableUpload, UploadChanges } from '../lib/resumable/upload-store';
import { BatchedFileWriter } from './batched-file-writer';
import { Checkpoints } from './checkpoints';
import { ownPrivateDirectory } from './private-directory';

export interface ResumableDiskOptions {
  /**
   * Where uploads live: `<id>` holds the bytes, `<id>.json` the state (written to a temporary file and
   * renamed, so a crash leaves the old or the new state). Point a new store at the same directory after a
   * restart and every upload resumes where it stopped. Created on first use. The directory may hold other
   * files (an app's multipart uploads, say): the store only ever removes files it names and has a state
   * or a removal marker for.
   * @default a directory named `express-spool-resumable` under `os.tmpdir()`, private to this user (0700,
   * files 0600; a symlink or another user's directory there fails the request: set `directory`)
   */
  directory?: string;
}

/** Details of a completed upload on disk (multer's diskStorage fields). */
export interface ResumableDiskDetails {
  readonly destination: string;
  readonly filename: string;
  readonly path: string;
}

/**
 * The ids this store makes (16 random bytes, base64url): any other name in the directory is not one of its
 * uploads, whatever files sit beside it (`<name>.json` included).
 */
const ID = /^[A-Za-z0-9_-]{22}$/;
const STATE = '.json';
/** A state being written: `<id>.json.<12 hex>.tmp`, renamed over the state once complete. */
const TEMP_STATE = /^[A-Za-z0-9_-]{22}\.json\.[0-9a-f]{12}\.tmp$/;
/**
 * A removal under way: the state renamed to `<id>.removed`, then the bytes removed, then this. What a crash
 * leaves of a removal is always named by one, so the sweep never has to guess which files are the store's.
 */
const REMOVED = '.removed';
/**
 * An append records its offset at least this often, and takes in at most RECORD_LEAD more while a state write
 * is under way: a crash (kill -9, power) loses at most CHECKPOINT + RECORD_LEAD of it.
 */
const CHECKPOINT = 8 * 1024 * 1024;
const RECORD_LEAD = 1024 * 1024;
/**
 * Bytes per write while the memory budget has room (two batches reserved per append), and otherwise.
 * 128 KiB, not the multipart engine's 512: the kernel sizes each new page-cache folio from the write, and
 * with 16 appends at once on the benchmark's VM larger writes made the copy into new folios swing to 2.4–5.0
 * s/GB of kernel time (512 KiB in 11 of 15 A/B runs, 256 KiB in most runs after the benchmark's other
 * workloads), while 128 KiB stayed at 1.2–1.5 in 12 of 13 runs (bench/README.md, "Session 16").
 */
const LARGE_BATCH = 128 * 1024;
/** Two of these are the 64 KiB the append's share of the budget stands for (with the socket's buffers). */
const SMALL_BATCHES = 32 * 1024;
/** Bytes gathered for a batch are written once the client has sent nothing more for this long (ms). */
const IDLE_FLUSH = 10;
/** Leftovers of a crash (temporary state files, interrupted removals) older than this are removed by `list()`. */
const ORPHAN_AGE = 60_000;

/**
 * A resumable store on the local disk. Offsets are what was written (no fsync: a power cut may lose the
 * page cache, a process crash loses nothing written); bytes past the recorded offset — the tail of an
 * append that crashed before recording it, a discarded atomic append — are cut off by the next append.
 */
export function resumableDiskStore(options: ResumableDiskOptions = {}): ResumableStore {
  for (const key of Object.keys(options)) {
    if (key !== 'directory') throw new TypeError(`Unknown resumableDiskStore option \`${key}\``);
  }
  if (options.directory !== undefined && (typeof options.directory !== 'string' || options.directory === '')) {
    throw new TypeError(`Expected \`directory\` to be a non-empty string, got ${describe(options.directory)}`);
  }
  const shared = options.directory === undefined;
  return new DiskStore(resolve(options.directory ?? join(tmpdir(), 'express-spool-resumable')), shared);
}

/** Opening a data file for writing never follows a symlink planted at its name. */
const WRITE = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;

class DiskStore implements ResumableStore {
  readonly name = 'disk';
  readonly #directory: string;
  /** The default directory, in the shared tmp: it must be this user's own, checked before each write. */
  readonly #shared: boolean;
  /** Mode of the files created: readable by this user only in the shared tmp. */
  readonly #mode: number;

  constructor(directory: string, shared: boolean) {
    this.#directory = directory;
    this.#shared = shared;
    this.#mode = shared ? 0o600 : 0o666;
  }

  /** Before writing: the directory exists, and in the shared tmp it is a real, private one of this user's. */
  async #ready(): Promise<void> {
    if (!this.#shared) return void (await mkdir(this.#directory, { recursive: true }));
    const option = "resumableDiskStore's `directory`";
    await ownPrivateDirectory(this.#directory, option);
    await mkdir(this.#directory, { recursive: true, mode: 0o700 });
    await ownPrivateDirectory(this.#directory, option); // (made just now, or by someone else meanwhile)
  }

  async create(upload: NewUpload): Promise<ResumableUpload> {
    await this.#ready();
    // The data file is created by the first append: an upload that never receives a byte is one file.
    const created: ResumableUpload = { ...upload, id: randomBytes(16).toString('base64url'), offset: 0, complete: false };
    await this.#save(created);
    return created;
  }

  async get(id: string): Promise<ResumableUpload | undefined> {
    const state = await this.#load(id);
    if (!state) return undefined;
    // Never report bytes that are not there (a state file restored from elsewhere, a truncated data file).
    const size = await this.#size(id);
    return size < state.offset ? { ...state, offset: size } : state;
  }

  async update(id: string, changes: UploadChanges): Promise<ResumableUpload> {
    const state = await this.get(id);
    if (!state) throw new SpoolError('UPLOAD_NOT_FOUND');
    const next: { -readonly [K in keyof ResumableUpload]: ResumableUpload[K] } = { ...state };
    if (changes.length !== undefined) next.length = changes.length;
    if (changes.complete !== undefined) next.complete = changes.complete;
    if (changes.sha256 !== undefined) next.sha256 = changes.sha256;
    if (changes.extra !== undefined) next.extra = changes.extra;
    if (changes.expiresAt === null) delete next.expiresAt;
    else if (changes.expiresAt !== undefined) next.expiresAt = changes.expiresAt;
    // A completed upload is a file the app may open by path, even when it has no byte.
    if (next.complete && !state.complete) {
      await this.#ready();
      await (await open(this.#data(id), WRITE, this.#mode)).close();
    }
    await this.#save(next);
    return next;
  }

  async append(upload: ResumableUpload, stream: Readable, context: AppendContext): Promise<number> {
    const start = upload.offset;
    let handle: FileHandle;
    try {
      await this.#ready();
      handle = await open(this.#data(upload.id), WRITE, this.#mode);
    } catch (err) {
      stream.destroy();
      throw err;
    }
    try {
      await handle.truncate(start); // drop whatever lies past the recorded offset
    } catch (err) {
      stream.destroy();
      await handle.close();
      throw err;
    }
    // Two large batches while the memory budget has room for them (an optional speed-up), small ones otherwise.
    const memory = context.memory;
    const reserved = typeof memory?.tryReserveSpare === 'function' && memory.tryReserveSpare(2 * LARGE_BATCH);
    const batchBytes = reserved ? LARGE_BATCH : SMALL_BATCHES;
    const progress = context.atomic ? undefined : context.progress;
    // The state names only bytes already written, so what it reports is what a restart resumes from: a
    // checkpoint at most every CHECKPOINT bytes, and whenever the handler wants a progress point (IETF 104).
    // Batches end wherever the client's bytes did (eager, below): a checkpoint is asked for once a batch
    // ends within one batch of the mark, so two of them are never more than CHECKPOINT apart.
    const checkpoints = new Checkpoints(start, CHECKPOINT - batchBytes, (offset) => this.#record(upload.id, offset), progress, (err) => stream.destroy(err));
    // The chunks are copied into batches, one writev each (bench/README.md "Profile"); the writer closes the file.
    // Eager batches, as the multipart disk engine's: with many appends at once, full batches cost more
    // kernel time per GB (bench/README.md, "Session 13: eager batches for resumable appends").
    /** A progress point being made durable: the body waits until its bytes are written and recorded. */
    let progressPoint: { at: number; done: () => void } | undefined;
    const writer = new BatchedFileWriter(handle, batchBytes, undefined, {
      position: start,
      eager: true,
      written: context.atomic
        ? undefined
        : (bytes) => {
            const at = start + bytes;
            const point = progressPoint;
            // Once the body has ended, the append's last record comes as soon as these writes are done.
            if (point === undefined || at < point.at) return stream.readableEnded ? undefined : checkpoints.written(at);
            progressPoint = undefined;
            checkpoints.record(at).then(point.done, point.done); // (a failure stops the append on its own)
          },
    });
    // A client that pauses does not leave its bytes waiting in memory: they are written meanwhile.
    const idle = setTimeout(() => writer.flush(), IDLE_FLUSH).unref();
    let accepted = start;
    try {
      // Whatever the stream handed over is written, also when it errors, so an interrupted append keeps
      // exactly the bytes received (an atomic one keeps none).
      const interrupted = await streamIntoKeeping(stream, writer, {
        chunk: (chunk) => {
          idle.refresh();
          accepted += chunk.length;
          // A slow state write does not let the bytes on disk run far past the last recorded offset.
          if (checkpoints.recording && accepted - checkpoints.asked >= RECORD_LEAD) return checkpoints.settled();
          // A progress point (IETF 104) the handler wants at what the batch holds: written now, recorded, sent,
          // and only then the next bytes (as the rate asks, however fast the client sends).
          if (!progress || progressPoint || checkpoints.recording || !progress.wanted(accepted)) return;
          const reached = new Promise<void>((done) => (progressPoint = { at: accepted, done }));
          writer.flush();
          return reached;
        },
        discard: context.atomic,
      });
      clearTimeout(idle);
      await checkpoints.settled();
      if (interrupted && context.atomic) {
        // (A data file removed meanwhile, with its upload, has nothing to cut; nor is a symlink there followed.)
        await cutBack(this.#data(upload.id), start);
        return start;
      }
      const position = start + writer.bytesWritten;
      await checkpoints.record(position);
      return position;
    } catch (err) {
      stream.destroy();
      await checkpoints.settled().catch(() => undefined);
      throw err; // the state keeps the last recorded offset; the next append cuts the rest off
    } finally {
      clearTimeout(idle);
      if (reserved) memory.release(2 * LARGE_BATCH);
    }
  }

  async concatenate(target: ResumableUpload, parts: readonly ResumableUpload[]): Promise<number> {
    await this.#ready();
    const handle = await open(this.#data(target.id), WRITE | constants.O_TRUNC, this.#mode);
    let position = 0;
    try {
      for (const part of parts) {
        for await (const chunk of this.read(part)) {
          await writeAll(handle, [chunk as Buffer], position);
          position += (chunk as Buffer).length;
        }
      }
    } catch (err) {
      await handle.truncate(0);
      throw err;
    } finally {
      await handle.close();
    }
    await this.#record(target.id, position);
    return position;
  }

  read(upload: ResumableUpload): Readable {
    if (upload.offset === 0) return Readable.from([]);
    return createReadStream(this.#data(upload.id), { start: 0, end: upload.offset - 1 });
  }

  file(upload: ResumableUpload): StoredFile {
    const details: ResumableDiskDetails = { destination: this.#directory, filename: upload.id, path: this.#data(upload.id) };
    return {
      storage: 'disk',
      details,
      stream: () => this.read(upload),
      remove: () => this.remove(upload.id),
    };
  }

  async remove(id: string): Promise<void> {
    if (!ID.test(id)) return;
    // The state becomes the removal's marker first: from then on the upload does not exist, and whatever a
    // crash leaves of it is named by the marker. No state and no marker: nothing here is this store's.
    try {
      await rename(this.#state(id), this.#marker(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (!(await isFile(this.#marker(id)))) return;
    }
    await rm(this.#data(id), { force: true });
    await rm(this.#marker(id), { force: true });
  }

  /**
   * Every upload whose state can be read, after removing what crashes left behind: temporary state files
   * and interrupted removals, older than a minute (a younger temporary file may be a write under way; a
   * marker keeps its state's age, so one of a removal under way may be swept too, which only repeats it).
   * Best effort: an entry that cannot be read or removed is skipped, not a reason to stop the listing. A
   * state that cannot be read (say, emptied by a power cut: states are not fsynced) is left alone: it may be
   * a completed upload that belongs to the app.
   */
  async *list(): AsyncIterable<ResumableUpload> {
    let names: string[];
    try {
      names = await readdir(this.#directory);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    const states: string[] = [];
    for (const name of names) {
      if (name.endsWith(STATE)) {
        states.push(name.slice(0, -STATE.length));
      } else if (TEMP_STATE.test(name)) {
        if (await isOldFile(join(this.#directory, name))) await rm(join(this.#directory, name), { force: true }).catch(() => undefined);
      } else if (name.endsWith(REMOVED)) {
        const id = name.slice(0, -REMOVED.length);
        if (ID.test(id) && (await isOldFile(this.#marker(id)))) await this.remove(id).catch(() => undefined);
      }
    }
    for (const id of states) {
      const upload = await this.get(id).catch(() => undefined);
      if (upload) yield upload;
    }
  }

  async #record(id: string, offset: number): Promise<void> {
    const state = await this.#load(id);
    if (!state) throw new SpoolError('UPLOAD_NOT_FOUND', 'The upload was removed while bytes were appended');
    await this.#save({ ...state, offset });
  }

  async #load(id: string): Promise<ResumableUpload | undefined> {
    if (!ID.test(id)) return undefined;
    let text: string;
    try {
      text = await readFile(this.#state(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    let state: Partial<ResumableUpload> | null;
    try {
      state = JSON.parse(text) as Partial<ResumableUpload> | null;
    } catch {
      throw new SpoolError('STORAGE_FAILED', `The state of upload ${id} cannot be read (${this.#state(id)})`);
    }
    // Some other JSON file in a shared directory (a client may name any id): not an upload of this store's.
    if (state?.id !== id || typeof state.offset !== 'number' || typeof state.complete !== 'boolean') return undefined;
    return state as ResumableUpload;
  }

  async #size(id: string): Promise<number> {
    try {
      return (await stat(this.#data(id))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
  }

  /** Write a temporary file and rename it over the state: readers see the old or the new state. */
  async #save(upload: ResumableUpload): Promise<void> {
    const temporary = `${this.#state(upload.id)}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(temporary, JSON.stringify(upload), { mode: this.#mode, flag: 'wx' });
      await rename(temporary, this.#state(upload.id));
    } catch (err) {
      await rm(temporary, { force: true });
      throw err;
    }
  }

  #data(id: string): string {
    return join(this.#directory, id);
  }

  #state(id: string): string {
    return join(this.#directory, id + STATE);
  }

  #marker(id: string): string {
    return join(this.#directory, id + REMOVED);
  }
}

/** Truncates the data file at `path` to `length`, unless it is gone; never through a symlink. */
async function cutBack(path: string, length: number): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_WRONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await handle.truncate(length);
  } finally {
    await handle.close();
  }
}

async function isFile(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isFile() === true;
}

/** A regular file (not a directory, not a link) last changed more than ORPHAN_AGE ago. */
async function isOldFile(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined);
  return info !== undefined && info.isFile() && Date.now() - info.mtimeMs > ORPHAN_AGE;
}

/** Writes `buffers` at `position`, continuing after short writes. */
async function writeAll(handle: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  for (;;) {
    const { bytesWritten } = await handle.writev(buffers, position);
    position += bytesWritten;
    let rest = bytesWritten;
    let i = 0;
    while (i < buffers.length && rest >= buffers[i].length) rest -= buffers[i++].length;
    if (i === buffers.length) return;
    buffers = buffers.slice(i);
    buffers[0] = buffers[0].subarray(rest);
  }
}
