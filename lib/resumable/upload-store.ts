import type { Readable } from 'node:stream';
import type { AppRequest, StoredFile } from '../core/engine';
import type { MemoryLease } from '../core/memory-budget';

/**
 * One resumable upload as a store records it. The store owns `offset` (only `append` and `concatenate`
 * move it); everything else is set by the protocol handler through `create` and `update`.
 */
export interface ResumableUpload {
  /** Chosen by the store; URL-safe (`[A-Za-z0-9_-]`, at most 200 characters), unguessable. */
  readonly id: string;
  /**
   * Bytes stored, as the store can guarantee them after a restart: never more than what is really
   * stored (a crash may lose the tail of an append, never report bytes that are not there).
   */
  readonly offset: number;
  /** Total bytes the client declared; undefined while deferred (tus creation-defer-length, IETF drafts). */
  readonly length?: number;
  /** True once the last byte is in and the client declared it complete; no append is accepted after. */
  readonly complete: boolean;
  /** Decoded `Upload-Metadata` (tus) or representation metadata (IETF): `filename`, `filetype`, … */
  readonly metadata: Readonly<Record<string, string | null>>;
  /** Unix ms. */
  readonly createdAt: number;
  /** Unix ms after which `sweep()` removes the upload; undefined for uploads that never expire. */
  readonly expiresAt?: number;
  /** tus concatenation: a partial upload, or a final one made of these partial upload ids (in order). */
  readonly concat?: { readonly kind: 'partial' } | { readonly kind: 'final'; readonly parts: readonly string[] };
  /** Hex sha256 of all the bytes, recorded by the handler when the upload completes. */
  readonly sha256?: string;
  /** Protocol details the handler keeps between requests (e.g. an expected Repr-Digest); opaque to stores. */
  readonly extra: Readonly<Record<string, string>>;
}

/** What the handler gives `create`: everything but the state the store owns. */
export type NewUpload = Omit<ResumableUpload, 'id' | 'offset' | 'complete' | 'sha256'>;

/** What `update` may change. `undefined` values are left as they are, except `expiresAt: null` which clears it. */
export interface UploadChanges {
  readonly length?: number;
  readonly complete?: boolean;
  readonly sha256?: string;
  readonly expiresAt?: number | null;
  readonly extra?: Readonly<Record<string, string>>;
}

/** Everything a store call gets besides the bytes. */
export interface ResumableContext {
  /**
   * Aborted when the request ends early: the client went away, a newer request for the same upload
   * superseded it, or a limit/timeout hit. The stream is destroyed at the same time, so a store that only
   * reads its stream stops without listening to the signal.
   */
  readonly signal: AbortSignal;
  /** The request's share of the memory budget; stores that buffer bytes in memory reserve them here. */
  readonly memory: MemoryLease;
  /** The HTTP request, for naming only (e.g. a key prefix from `req.user`); never read its body. */
  readonly request: AppRequest;
}

export interface AppendContext extends ResumableContext {
  /**
   * True when the handler verifies the request's bytes as a whole (tus Upload-Checksum, RFC 9530
   * Content-Digest): the append is all or nothing. A stream that does not end cleanly (it errors with the
   * mismatch, or the client goes away) must leave the upload exactly as it was: offset unchanged, none of
   * the bytes visible to a later append or read.
   */
  readonly atomic: boolean;
  /**
   * Optional progress reporting during the append (IETF draft 104 interim responses with `Upload-Offset`).
   * Absent when nobody listens, and never given with `atomic`. A store that never calls it is still a
   * correct store: its clients just get no progress before the final response.
   */
  readonly progress?: AppendProgress;
  /**
   * Optional: the upload's renewed expiry (unix ms), which the handler records with `update` right after
   * the append. A store may record it already with the append's last state write — the one that records the
   * new offset — by calling this there (it returns the same value every time, fixed by the first call);
   * the handler's `update` then asks for no change that is not already recorded, and a store that can tell
   * (`s3ResumableStore`) writes nothing for it. Absent when uploads do not expire. Ignoring it is correct.
   */
  readonly expiresAt?: () => number;
}

/**
 * How a store tells the handler, while an append runs, which bytes it has made durable. The offsets a
 * store reports here are sent to the client as acknowledged (the IETF draft: "a guarantee that no
 * retransmission of it will be necessary"), so only report what `get` — after a restart too — will report
 * at least, and what the next append starts from.
 */
export interface AppendProgress {
  /**
   * Whether the handler would like a durable record at `offset` now (its rate: bytes and time since the
   * last one it sent). A store that can record its offset cheaply at any byte (the disk store: one small
   * state file) asks after each write it makes and records when the answer is true; a store that can only
   * record at its own points (S3 parts) need not ask.
   */
  wanted(offset: number): boolean;
  /**
   * `offset` is recorded durably (state written after the bytes it counts). Call it after each such
   * record during `append` — at the handler's request or at the store's own checkpoints — with increasing
   * offsets; calls after `append` settled are ignored.
   */
  persisted(offset: number): void;
}

/** Options of `ResumableStore.get`. */
export interface ResumableGetOptions {
  /** The caller is about to append: the store may answer from what it last read or committed (see `get`). */
  readonly append?: boolean;
}

/**
 * The contract between the resumable handler (tus 1.0 and the IETF resumable upload drafts) and where
 * the bytes go. The handler owns the protocol, the limits, the per-upload lock (one append at a time per
 * upload in this process), hashing, expiry policy and the `onComplete` hook; a store owns bytes and state.
 *
 * Rules every store follows:
 * - State survives a restart: a new store over the same place (directory, bucket + prefix) answers `get`
 *   with the state the last completed call left, and `offset` never exceeds the bytes really stored.
 * - State writes are atomic (write a temporary + rename, or a single PUT): a crash leaves the old or the
 *   new state, never a torn one.
 * - Calls for one upload are never concurrent (the handler serialises them), but calls for different
 *   uploads are.
 * - Errors: reject with the underlying error (or a SpoolError such as STORAGE_FULL); the handler maps it.
 *
 * What an S3 store does (`s3ResumableStore()`, README "Resumable uploads on S3" and "Running many instances"):
 * - `create`: persists the state (the fields of {@link ResumableUpload}; later the UploadId, the parts so
 *   far, the tail) as a small JSON object beside the data, `<key>.state.<n>`, each change the next number
 *   written create-only (one PUT = atomic; of two writers on the same state exactly one commits). The
 *   multipart upload is created with the first part.
 * - `append`: S3 parts must be ≥ 5 MiB except the last. Buffer the stream into part-sized chunks, holding
 *   the buffer's bytes on `context.memory` (`reserve` waits, bounded by `context.signal`; release when the
 *   part is sent), UploadPart each full one, and when the stream ends — cleanly or not — persist the
 *   short tail (< 5 MiB) as its own object (`<key>.tail.<random>`, PUT) so the next append, possibly after
 *   a restart, starts by prepending it. `offset` = bytes in completed parts + bytes in the persisted tail;
 *   bytes still in memory when the store fails to persist them are not counted. With `atomic`, send
 *   nothing as a part until the stream has ended cleanly (or upload parts and drop them on failure: a
 *   part number can be overwritten) and restore the previous tail. With `context.progress`, call
 *   `progress.persisted(offset)` after each state PUT that records a part (the offset it records): that is
 *   what lets the handler send IETF 104 progress (without it, the client learns the offset at the end).
 *   With `context.expiresAt`, the last state write of the append carries the new expiry too.
 * - `update` with `complete: true`: UploadPartCopy the tail as the last part, CompleteMultipartUpload,
 *   delete the tail object. A 0-byte upload is a plain empty PutObject.
 * - `concatenate`: UploadPartCopy from each complete partial (or a copy + tail when a partial is < 5 MiB).
 * - `read`/`file`: GetObject of the completed object; `remove`: AbortMultipartUpload or DeleteObject, plus
 *   the state and tail objects, tolerating what is already gone; `list`: ListObjectsV2 over the state
 *   objects.
 */
export interface ResumableStore {
  /** Short name used in errors and as the uploaded file's `storage`. */
  readonly name: string;

  /** Records a new, empty upload and returns it with the id the store chose. */
  create(upload: NewUpload, context: ResumableContext): Promise<ResumableUpload>;

  /**
   * The upload's current state, or undefined when there is none (never created, removed, swept). With
   * `options.append` the caller is about to append to it: a store may then answer from the state it last
   * read or committed itself, without asking its storage, provided its `append` refuses (rejects) when that
   * state was no longer the latest. The caller reads again, without the option, before it answers with
   * anything the read told it (an offset mismatch, an expiry) and after such a refusal.
   */
  get(id: string, options?: ResumableGetOptions): Promise<ResumableUpload | undefined>;

  /** Changes the handler-owned fields and persists them atomically; resolves with the new state. */
  update(id: string, changes: UploadChanges): Promise<ResumableUpload>;

  /**
   * Appends `stream` at `upload.offset` and resolves with the new offset once it is recorded (a `get`
   * after a restart reports it). An interrupted append is a shorter append: when the stream errors or
   * `context.signal` aborts mid-way, the bytes already stored are kept and the promise still resolves
   * with the offset they reached — unless `context.atomic`, when the offset stays where it was. The
   * store decides what it persists and when (a store may hold bytes in memory and count them only once
   * they are persisted). Rejects only when the store itself fails; the state is then what `get` reports.
   */
  append(upload: ResumableUpload, stream: Readable, context: AppendContext): Promise<number>;

  /**
   * Fills the empty `target` with the bytes of `parts` in order (all complete), resolving with the new
   * offset (their total). On failure `target` stays empty.
   */
  concatenate(target: ResumableUpload, parts: readonly ResumableUpload[], context: ResumableContext): Promise<number>;

  /** A fresh Readable of the bytes stored so far (the whole upload once complete). */
  read(upload: ResumableUpload): Readable;

  /** The completed upload as the multipart core's engines describe a file (storage, details, stream, remove). */
  file(upload: ResumableUpload): StoredFile;

  /** Removes the upload's bytes and state. Must tolerate an upload that is already (partly) gone. */
  remove(id: string): Promise<void>;

  /** Every upload the store holds (for `sweep()`); uploads removed meanwhile may or may not appear. */
  list(): AsyncIterable<ResumableUpload>;
}

export function isResumableStore(value: unknown): value is ResumableStore {
  const store = value as ResumableStore | null;
  return typeof store === 'object' && store !== null && typeof store.append === 'function' && typeof store.get === 'function';
}
