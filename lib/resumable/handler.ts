import { createHash, type Hash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AppRequest, IncomingFile } from '../core/engine';
import { basename } from '../core/client-filename';
import { drainRequest } from '../core/drain';
import { SpoolError } from '../core/errors';
import type { MemoryBudget, MemoryLease } from '../core/memory-budget';
import { runFileFilter } from '../core/run-file-filter';
import { UploadedFile } from '../core/uploaded-file';
import { appendBody } from './append';
import { parseDigestField } from './checksum';
import { ietfDraft, isIetfRequest } from './ietf-draft';
import { canSendInterim, sendUploadResumptionSupported } from './interim';
import { InterimProgress } from './interim-progress';
import { isPendingFinal, lengthOfParts, linkedFinals, PendingFinals, withLink, type FinalUpload } from './pending-finals';
import { resolveResumableOptions, type ResumableConfig, type ResumableOptions } from './options';
import type { AppendIntent, CreateIntent, Protocol } from './protocol';
import { tus } from './tus';
import { UploadHashes } from './upload-hashes';
import type { UploadFence, UploadLocker } from './upload-locker';
import type { ResumableStore, ResumableUpload, UploadChanges } from './upload-store';

type Next = (err?: unknown) => void;

/** What `resumable()` returns: a middleware to mount at a path, plus upkeep. */
export interface Resumable {
  (req: IncomingMessage, res: ServerResponse, next: Next): void;
  /** Removes expired uploads (bytes and state) that no request is working on; resolves with how many. */
  sweep(): Promise<number>;
  /**
   * Stops the sweep timer and resolves once every request being handled has settled: an append whose
   * client is gone records what it stored first, and its lock is let go (a store still busy `settleTimeout`
   * after its append was ended is not waited for). Requests still answer (stop the server taking new ones
   * first); call it when the server shuts down, before removing what the store holds.
   */
  close(): Promise<void>;
  readonly store: ResumableStore;
  readonly memoryBudget: MemoryBudget;
}

/** Memory every append holds from the budget for its stream buffers (socket, one chunk in the tap, a write). */
const REQUEST_SHARE = 64 * 1024;
const ID_PATH = /^\/([A-Za-z0-9_-]{1,200})\/?$/;

/**
 * Resumable uploads on one URL space: tus 1.0.0 (with creation, creation-with-upload, creation-defer-length,
 * termination, expiration, checksum and concatenation) and the IETF resumable upload drafts (interop
 * versions 3–8), told apart by their headers. Mount it at a path: `app.use('/files', resumable({ … }))`.
 * @example
 * app.use('/files', resumable({ store: resumableDiskStore({ directory: './uploads' }), onComplete: (file) => … }));
 */
export function resumable(options?: ResumableOptions): Resumable {
  const config = resolveResumableOptions(options);
  const handler = new Handler(config);
  const middleware = ((req, res, next) => handler.handle(req, res, next)) as Resumable;
  let timer: NodeJS.Timeout | undefined;
  if (config.sweepInterval > 0) {
    timer = setInterval(() => void handler.sweep().catch(() => undefined), config.sweepInterval);
    timer.unref();
  }
  return Object.assign(middleware, {
    sweep: () => handler.sweep(),
    close: () => {
      clearInterval(timer);
      return handler.settled();
    },
    store: config.store,
    memoryBudget: config.budget,
  });
}

class Handler {
  readonly #config: ResumableConfig;
  readonly #store: ResumableStore;
  readonly #locks: UploadLocker;
  readonly #hashes = new UploadHashes();
  readonly #finals = new PendingFinals();
  /** The requests being handled, until their work (and its error answer) is over. */
  readonly #running = new Set<Promise<void>>();

  constructor(config: ResumableConfig) {
    this.#config = config;
    this.#store = config.store;
    this.#locks = config.locker;
  }

  handle(req: IncomingMessage, res: ServerResponse, next: Next): void {
    const method = (req.headers['x-http-method-override'] as string | undefined)?.toUpperCase() ?? req.method ?? 'GET';
    const path = (req.url ?? '/').split('?', 1)[0];
    const id = ID_PATH.exec(path)?.[1];
    if (path !== '/' && path !== '' && id === undefined) return next();
    const protocol = this.#protocolOf(req, method);
    if (!protocol) return next();
    let work: Promise<void>;
    try {
      if (method === 'OPTIONS') {
        protocol.options(req, res, this.#config);
        return;
      }
      protocol.checkVersion(req);
      if (id === undefined) work = method === 'POST' ? this.#create(req, res, protocol) : Promise.reject(notAllowed());
      else if (method === 'HEAD') work = this.#head(req, res, protocol, id);
      else if (method === 'PATCH') work = this.#patch(req, res, protocol, id);
      else if (method === 'DELETE') work = this.#delete(req, res, protocol, id);
      else return next();
    } catch (err) {
      work = Promise.reject(err);
    }
    const settled = work.catch((err: unknown) => this.#fail(req, res, protocol, err));
    this.#running.add(settled);
    void settled.finally(() => this.#running.delete(settled));
  }

  /** Resolves once no request is being handled (requests that come meanwhile are waited for too). */
  async settled(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }

  #protocolOf(req: IncomingMessage, method: string): Protocol | undefined {
    const { protocols } = this.#config;
    if (protocols.has('tus') && (req.headers['tus-resumable'] !== undefined || (method === 'OPTIONS' && !isIetfRequest(req)))) return tus;
    if (protocols.has('ietf') && isIetfRequest(req)) return ietfDraft;
    // Neither protocol's headers: tus answers 412 for its methods (a client that forgot Tus-Resumable). (Not
    // the IETF draft for a bare HEAD or DELETE: with only the draft on, the app's own routes at those paths
    // would be shadowed, and a header-less, CORS-safelisted HEAD could end a running append.)
    if (protocols.has('tus') && ['POST', 'HEAD', 'PATCH', 'DELETE'].includes(method)) return tus;
    return undefined;
  }

  async #create(req: IncomingMessage, res: ServerResponse, protocol: Protocol): Promise<void> {
    const intent = protocol.create(req);
    const { fileSize } = this.#config;
    if (intent.concat && !this.#config.concatenation) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Concat: concatenation is turned off here');
    let length = intent.length;
    let parts: ResumableUpload[] = [];
    // tus concatenation-unfinished: a final upload may name partial uploads still being uploaded.
    let unfinished = false;
    if (intent.concat?.kind === 'final') {
      parts = await this.#partials(intent.concat.parts);
      unfinished = parts.some((part) => !part.complete);
      length = lengthOfParts(parts);
    }
    if (length !== undefined && length > fileSize) throw new SpoolError('LIMIT_FILE_SIZE');
    await this.#filter(req, intent);
    const now = Date.now();
    let upload = await this.#store.create(
      {
        length: unfinished ? undefined : length,
        metadata: intent.metadata,
        createdAt: now,
        // A pending final has no lifetime of its own: it goes when one of its partials goes (sweep, DELETE).
        expiresAt: this.#config.expiration > 0 && !unfinished ? now + this.#config.expiration : undefined,
        concat: intent.concat,
        extra: intent.extra,
      },
      { signal: AbortSignal.timeout(this.#config.lockTimeout), memory: this.#config.budget.lease(), request: req as AppRequest },
    );
    const location = this.#location(req, upload.id);
    const interim = this.#config.interimResponses && protocol.acceptsInterim?.(req) !== false ? protocol.interim?.(req, location, this.#config) : undefined;
    const announced = interim !== undefined && sendUploadResumptionSupported(req, res, interim);
    if (unfinished) {
      upload = await this.#declareFinal(req, upload as FinalUpload);
    } else if (intent.concat?.kind === 'final') {
      upload = await this.#exclusive(upload.id, async (lease) => {
        const offset = await this.#store.concatenate(upload, parts, { signal: AbortSignal.timeout(600_000), memory: lease, request: req as AppRequest });
        return this.#complete(req, { ...upload, offset });
      });
    } else if (intent.hasBody) {
      const append: AppendIntent = { offset: 0, length, complete: intent.complete, checksum: intent.checksum };
      return this.#append(req, res, protocol, upload.id, append, { location, announced });
    } else if (intent.complete === true || (protocol.completesAtLength(req) && length === 0)) {
      upload = await this.#exclusive(upload.id, () => this.#complete(req, upload));
    }
    protocol.created(req, res, upload, location, this.#config);
  }

  async #head(req: IncomingMessage, res: ServerResponse, protocol: Protocol, id: string): Promise<void> {
    // A HEAD ends an append still running on this upload (the client gave up on it): its answer is then current.
    let upload = await this.#exclusive(id, async () => {
      const found = await this.#live(id);
      // Every byte stored but not completed (the completing request died after its last byte, or the
      // server between recording the offset and completing): the client will not send more; complete it.
      return protocol.completesAtLength(req) && reachedLength(found) && found.concat?.kind !== 'final' ? this.#complete(req, found) : found;
    });
    // A pending final upload: assembled now if its partials are all complete (a restart, or another
    // instance, may have missed the moment), removed if one of them is gone; else its state so far.
    if (isPendingFinal(upload)) upload = (await this.#settleFinal(req, upload.id, false)) ?? gone();
    protocol.status(req, res, upload, this.#config, (part) => this.#location(req, part));
  }

  #patch(req: IncomingMessage, res: ServerResponse, protocol: Protocol, id: string): Promise<void> {
    return this.#append(req, res, protocol, id, protocol.append(req));
  }

  async #delete(req: IncomingMessage, res: ServerResponse, protocol: Protocol, id: string): Promise<void> {
    const waiting = await this.#exclusive(id, async () => {
      const found = await this.#live(id);
      // Handed to onComplete: with terminateCompleted off, those bytes are the app's alone.
      if (!this.#config.terminateCompleted && found.complete && found.concat?.kind !== 'partial') {
        throw new SpoolError('UPLOAD_COMPLETED', 'The upload is complete and belongs to the application: DELETE does not remove it');
      }
      await this.#store.remove(id);
      this.#hashes.forget(id);
      this.#finals.forget(id);
      return found.concat?.kind === 'partial' ? new Set([...this.#finals.of(id), ...linkedFinals(found)]) : new Set<string>();
    });
    // A terminated partial fails the final uploads still waiting on it: they are removed.
    for (const finalId of waiting) await this.#dropFinal(finalId);
    protocol.removed(req, res);
  }

  /**
   * One append under the upload's lock: checks, streams the body, completes, answers. `creation`: the
   * append is a creation's body; `announced`, its location went out in a 104 (the client can resume it).
   */
  async #append(
    req: IncomingMessage,
    res: ServerResponse,
    protocol: Protocol,
    id: string,
    intent: AppendIntent,
    creation?: { location: string; announced: boolean },
  ): Promise<void> {
    const created = creation?.location;
    let current: ResumableUpload | undefined;
    let appending: InterimProgress | undefined | false = false; // while appendBody runs: its progress 104s, if any
    let failure: SpoolError | undefined;
    let ended: SpoolError | undefined;
    let supersede: ((reason: SpoolError) => void) | undefined;
    /** The store's append, still running after settleTimeout: the lock and the memory are kept until it settles. */
    let lingering: Promise<unknown> | undefined;
    /** Aborted when the request is ended before its append starts: a wait for memory ends with it. */
    const ending = new AbortController();
    const end = (reason: SpoolError) => {
      ended ??= reason;
      ending.abort(reason);
      supersede?.(reason);
    };
    const release = await this.#locks.acquire(id, end, this.#config.lockTimeout);
    const lease = this.#config.budget.lease();
    // Read as for an append (a store may answer from what it last saw: see ResumableStore.get).
    let remembered = false;
    try {
      let upload: ResumableUpload;
      [upload, remembered] = await this.#appendable(id, intent);
      current = upload;
      // (A remembered state passed these checks already.)
      const problem = remembered ? undefined : appendProblem(upload, intent);
      if (problem) throw problem;
      const tooLong = bodyPastLength(req, upload, intent);
      if (tooLong) {
        // Refused before a byte is read, whatever the body's cut into reads: nothing stored, and a creation
        // whose location the client never learned leaves nothing behind.
        if (creation && !creation.announced) await this.#store.remove(id);
        throw tooLong;
      }
      if (intent.length !== undefined && upload.length === undefined) {
        if (intent.length > this.#config.fileSize) throw new SpoolError('LIMIT_FILE_SIZE');
        upload = current = await this.#store.update(id, { length: intent.length });
      }
      await this.#admit(lease, res, ending.signal);
      if (ended) throw ended; // a newer request came while this one was getting ready
      // The renewed expiry, fixed the first time it is asked for: by the store when it records it with the
      // append's last state write (then the update below has nothing left to write), else after the append.
      let expiresAt: number | undefined;
      const expiry = this.#config.expiration > 0 ? () => (expiresAt ??= Date.now() + this.#config.expiration) : undefined;
      const progress = (appending = this.#progress(req, res, protocol, upload.offset, created));
      const outcome = await appendBody(req, res, upload, intent, {
        config: this.#config,
        hashes: this.#hashes,
        lease,
        supersede: (end) => (supersede = end),
        progress,
        expiresAt: expiry,
        lingering: (storing) => (lingering = storing),
      });
      appending = false;
      upload = current = outcome.upload;
      failure = outcome.failure;
      if (creation && !creation.announced && failure && (upload.offset === 0 || failure.code === 'INCONSISTENT_LENGTH')) {
        // A creation whose body died before its first byte, or carried more than its length, leaves nothing
        // behind — unless a 104 gave the client its location: it may resume there (then it stays until it expires).
        await this.#store.remove(id);
        this.#hashes.forget(id);
        throw failure;
      }
      const changes: { -readonly [K in keyof UploadChanges]: UploadChanges[K] } = {};
      if (expiry) changes.expiresAt = expiry();
      // Complete when the request said so and arrived whole, or (tus, older drafts) when the length is
      // reached — even by a request cut off after its last byte: its client will not send it again.
      // (Not by a request that carried more bytes than the length: under tus and interop ≤ 6 the bytes stored
      // before the surplus came stay, and a HEAD completes the upload, as one whose completing request was cut off.)
      const overran = failure?.code === 'INCONSISTENT_LENGTH';
      if (overran && protocol.invalidatesOnOverrun?.(req)) {
        // The draft's rule: an upload whose offset would pass its length is invalid from then on.
        await this.#store.remove(id);
        this.#hashes.forget(id);
        current = undefined;
        throw failure;
      }
      const finished = (intent.complete === true && failure === undefined) || (!overran && protocol.completesAtLength(req) && reachedLength(upload));
      if (finished && upload.length !== undefined && upload.length !== upload.offset) {
        throw new SpoolError('INCONSISTENT_LENGTH', 'Upload-Complete: ?1 before Upload-Length bytes');
      }
      if (finished && upload.length === undefined) changes.length = upload.offset;
      // Nothing to change (no expiry, no length): the append's own record stands.
      if (Object.keys(changes).length > 0) upload = current = await this.#store.update(id, changes);
      // (Stored complete before onComplete runs: an answer that onComplete's rejection makes says so too.)
      if (finished) upload = current = await this.#complete(req, upload, (done) => (current = done));
      if (failure && !finished) throw failure;
      if (created !== undefined) protocol.created(req, res, upload, created, this.#config);
      else protocol.appended(req, res, upload, this.#config);
    } catch (err) {
      // The store failed during the append: it may have recorded bytes (and a 104 acknowledged them) first.
      // (A store still busy with the append past settleTimeout is not asked: the 104s' word stands.)
      if (appending !== false && current) current = await this.#durable(current, appending, lingering === undefined);
      // An append on a remembered state that the store refused: if a fresh read finds the upload gone,
      // that is the answer, as a request that read it first would have had.
      if (remembered) [err, current] = await this.#explain(id, intent, err, current);
      this.#fail(req, res, protocol, err, current, intent);
    } finally {
      const letGo = () => {
        lease.close();
        release();
      };
      if (lingering) void lingering.then(() => (creation && !creation.announced ? this.#removeIfEmpty(id) : undefined)).then(letGo);
      else letGo();
    }
  }

  /**
   * A creation answered before its store settled (settleTimeout): once it has, an upload no byte reached,
   * whose location its client never learned, goes — as when the store settles in time. Never rejects.
   */
  async #removeIfEmpty(id: string): Promise<void> {
    try {
      const upload = await this.#store.get(id);
      if (upload && upload.offset === 0) {
        await this.#store.remove(id);
        this.#hashes.forget(id);
      }
    } catch {
      // left to the sweep, as an expired upload
    }
  }

  /**
   * The upload after an append the store failed in: its state as recorded now (the bytes stored before the
   * failure count), never behind an offset a progress 104 acknowledged — nor behind the state before.
   */
  async #durable(before: ResumableUpload, progress: InterimProgress | undefined, ask = true): Promise<ResumableUpload> {
    let upload = before;
    try {
      const now = ask ? await this.#store.get(before.id) : undefined;
      if (now && now.offset >= before.offset) upload = now;
    } catch {
      // The store cannot say: what the 104s acknowledged still holds.
    }
    const acknowledged = progress?.offset ?? 0;
    return acknowledged > upload.offset ? { ...upload, offset: acknowledged } : upload;
  }

  /** Progress 104s for an append starting at `start` (IETF draft, a client that can take interims), or none. */
  #progress(req: IncomingMessage, res: ServerResponse, protocol: Protocol, start: number, location: string | undefined): InterimProgress | undefined {
    const rate = this.#config.interimProgress;
    if (!rate || !this.#config.interimResponses || !protocol.progress || protocol.acceptsInterim?.(req) === false || !canSendInterim(req, res)) return undefined;
    return new InterimProgress(req, res, start, rate, (offset) => protocol.progress!(req, offset, location));
  }

  /**
   * The upload an append goes on from: what `get(id, { append })` answers when it passes every check (a
   * store may answer from memory; its append then refuses if that was not the latest state) — `remembered`
   * — else a fresh read, for the caller to check: a refusal, an offset or an expiry the request is
   * answered with comes from storage.
   */
  async #appendable(id: string, intent: AppendIntent): Promise<[upload: ResumableUpload, remembered: boolean]> {
    const known = await this.#store.get(id, { append: true });
    const deferred = intent.length !== undefined && known?.length === undefined;
    if (known && !expired(known) && !deferred && appendProblem(known, intent) === undefined) return [known, true];
    return [await this.#live(id), false];
  }

  /**
   * After an append on a remembered state was refused: when a fresh read finds the upload gone (or
   * expired), or a storage failure turns out to be an upload completed meanwhile, that is the answer, as
   * it would have been had the request read it first. Another request's commit that came first stays a
   * refusal (423), as for a request whose read another request overtook.
   */
  async #explain(id: string, intent: AppendIntent, err: unknown, current: ResumableUpload | undefined): Promise<[unknown, ResumableUpload | undefined]> {
    const code = (err as SpoolError | null)?.code;
    if (code !== 'UPLOAD_LOCKED' && code !== 'STORAGE_FAILED') return [err, current];
    try {
      const upload = await this.#live(id);
      // S3 refused a part of an upload completed meanwhile: not a storage failure, but what a read would have
      // said. (Not an offset alone: this very append may have moved it before it failed.)
      const problem = code === 'STORAGE_FAILED' && upload.complete ? appendProblem(upload, intent) : undefined;
      return problem ? [problem, upload] : [err, current];
    } catch (fresh) {
      const gone = (fresh as SpoolError | null)?.code === 'UPLOAD_NOT_FOUND' || (fresh as SpoolError | null)?.code === 'UPLOAD_EXPIRED';
      return gone ? [fresh, undefined] : [err, current];
    }
  }

  /**
   * Marks an upload complete: its sha256, the Repr-Digest check, then the app's onComplete — or, for a
   * partial upload, the pending final uploads it was the last unfinished partial of are assembled.
   */
  async #complete(req: IncomingMessage, upload: ResumableUpload, stored?: (done: ResumableUpload) => void): Promise<ResumableUpload> {
    const done = await this.#finish(upload);
    stored?.(done);
    if (done.concat?.kind === 'partial') await this.#partialDone(req, done);
    else await this.#notify(req, done);
    return done;
  }

  /** The store part of completing: sha256, Repr-Digest, `complete` (and the length, if it was deferred). */
  async #finish(upload: ResumableUpload): Promise<ResumableUpload> {
    const { sha256: wanted } = this.#config;
    const repr = upload.extra.reprDigest === undefined ? undefined : parseDigestField(upload.extra.reprDigest);
    const sha256 = wanted || repr ? await this.#hashes.digest(upload.id, upload.offset, () => this.#store.read(upload)) : undefined;
    if (repr && sha256) {
      const actual = repr.algorithm === 'sha256' ? Buffer.from(sha256, 'hex') : await digestOf(createHash(repr.algorithm), this.#store.read(upload));
      if (!actual.equals(repr.expected)) {
        await this.#store.remove(upload.id);
        throw new SpoolError('CHECKSUM_MISMATCH', 'Repr-Digest does not match the uploaded bytes; the upload was removed');
      }
    }
    const partial = upload.concat?.kind === 'partial';
    const length = upload.length === undefined ? upload.offset : undefined;
    return this.#store.update(upload.id, { complete: true, sha256, length, expiresAt: partial ? undefined : null });
  }

  /** The app's onComplete for a completed upload (never for partial uploads). */
  async #notify(req: IncomingMessage, done: ResumableUpload): Promise<void> {
    const { onComplete } = this.#config;
    if (done.concat?.kind !== 'partial' && onComplete) {
      await onComplete(new UploadedFile(incomingFile(done.metadata), done.offset, done.sha256, this.#store.file(done)), req as AppRequest);
    }
  }

  /**
   * A final upload created while some of its partials were unfinished: links it to each partial (so the
   * partial's completion, here or after a restart, finds it), then settles it — a partial may have
   * completed meanwhile. Resolves with the final as it stands (pending, or assembled).
   */
  async #declareFinal(req: IncomingMessage, final: FinalUpload): Promise<ResumableUpload> {
    this.#finals.add(final.id, final.concat.parts);
    for (const partId of new Set(final.concat.parts)) await this.#link(req, partId, final.id);
    return (await this.#settleFinal(req, final.id, false)) ?? gone();
  }

  /**
   * Records in the partial's state that `finalId` waits on it, holding the partial's lock — but never by
   * ending a request that holds it (an append in progress): while one does (here, or on another instance
   * when the locker can tell, `redisLocker()`), the write is retried in the background until the partial
   * is free; meanwhile the in-memory index links them in this process. A link written that way, after the
   * declaration settled the final, then settles it again if the partial is complete by now: the request
   * that completed it (on another instance) knew of neither the final nor the link.
   */
  async #link(req: IncomingMessage, partId: string, finalId: string, retry = LINK_RETRY, deferred = false): Promise<void> {
    const later = () => {
      // Assembled or removed meanwhile: nothing to link any more.
      if (this.#finals.has(finalId)) {
        void delay(retry)
          .then(() => this.#link(req, partId, finalId, Math.min(retry * 2, LINK_RETRY_MAX), true))
          .catch(() => undefined); // an onComplete rejection: nobody to answer; the final stays complete
      }
    };
    if (this.#locks.has(partId)) return later();
    let complete = false;
    const work = async () => {
      const part = await this.#store.get(partId);
      if (!part || part.concat?.kind !== 'partial') return;
      complete = part.complete;
      if (!linkedFinals(part).includes(finalId)) await this.#store.update(partId, { extra: withLink(part.extra, finalId) });
    };
    try {
      const polite = (this.#locks as Partial<UploadFence>).exclusive;
      if (typeof polite !== 'function') await this.#exclusive(partId, work); // in-process lock: free, as has() said
      else if (!(await polite.call(this.#locks, partId, work, 0))) return later(); // held on another instance
    } catch {
      // Not persisted: this process still links them, and a HEAD on the final settles it after a restart.
      return;
    }
    // Settled as a HEAD on the final would: assembled once (onComplete once) if all its partials are complete.
    if (deferred && complete) await this.#settleFinal(req, finalId, true);
  }

  /** After a partial completed: settles every pending final that waits on it (assembles the ready ones). */
  async #partialDone(req: IncomingMessage, partial: ResumableUpload): Promise<void> {
    let finals = new Set([...this.#finals.of(partial.id), ...linkedFinals(partial)]);
    if (finals.size === 0) {
      // None known here: the partial's state as stored now may still name one (declared on another instance).
      const stored = await this.#store.get(partial.id).catch(() => undefined);
      if (stored) finals = new Set(linkedFinals(stored));
    }
    for (const finalId of finals) {
      await this.#settleFinal(req, finalId, true);
    }
  }

  /**
   * Under the final's lock: a pending final whose partials are all complete is concatenated and completed
   * (onComplete once, with `req`); one whose partial is gone (terminated, expired) is removed
   * (UPLOAD_NOT_FOUND); otherwise it stays pending and is returned with the length its partials give so
   * far. `quiet` (a partial's completion settling it on the side): failures before onComplete — a store
   * error, the final busy with another request — leave it pending for its next HEAD, and resolve undefined.
   */
  async #settleFinal(req: IncomingMessage, id: string, quiet: boolean): Promise<ResumableUpload | undefined> {
    let notifying = false;
    try {
      return await this.#exclusive(id, async (lease) => {
        const final = await this.#store.get(id);
        if (!final || !isPendingFinal(final)) {
          this.#finals.forget(id);
          return final;
        }
        const parts: ResumableUpload[] = [];
        for (const partId of final.concat.parts) {
          const part = await this.#store.get(partId);
          if (!part || part.concat?.kind !== 'partial' || expired(part)) {
            await this.#removeFinal(id);
            throw new SpoolError('UPLOAD_NOT_FOUND', 'A partial upload of this final upload was terminated or expired; the final upload was removed');
          }
          parts.push(part);
        }
        const length = lengthOfParts(parts);
        if (parts.some((part) => !part.complete)) return { ...final, length };
        if (length! > this.#config.fileSize) {
          await this.#removeFinal(id);
          throw new SpoolError('LIMIT_FILE_SIZE', 'The partial uploads together exceed the size limit; the final upload was removed');
        }
        const offset = await this.#store.concatenate(final, parts, { signal: AbortSignal.timeout(600_000), memory: lease, request: req as AppRequest });
        const done = await this.#finish({ ...final, offset, length: undefined }); // recorded as the offset
        this.#finals.forget(id);
        notifying = true;
        await this.#notify(req, done);
        return done;
      });
    } catch (err) {
      if (quiet && !notifying) return undefined;
      throw err;
    }
  }

  /** Removes a final upload that is still pending (a partial of it was terminated); errors are left for its next HEAD. */
  async #dropFinal(id: string): Promise<void> {
    try {
      await this.#exclusive(id, async () => {
        const final = await this.#store.get(id);
        if (final && isPendingFinal(final)) await this.#removeFinal(id);
        else this.#finals.forget(id);
      });
    } catch {
      // The next HEAD on it finds the partial gone and removes it; so does sweep().
    }
  }

  async #removeFinal(id: string): Promise<void> {
    await this.#store.remove(id);
    this.#forgetFinal(id);
  }

  /** What this process keeps of a final upload that is gone. */
  #forgetFinal(id: string): void {
    this.#hashes.forget(id);
    this.#finals.forget(id);
  }

  async #filter(req: IncomingMessage, intent: CreateIntent): Promise<void> {
    const filter = this.#config.fileFilter;
    if (!filter || intent.concat?.kind === 'partial') return;
    const file = incomingFile(intent.metadata);
    if (!(await runFileFilter(filter, req, file, AbortSignal.timeout(this.#config.admissionTimeout)))) throw new SpoolError('FILE_REJECTED');
  }

  /** The partial uploads a final names: existing, unexpired partial uploads of this server (complete or not). */
  async #partials(ids: readonly string[]): Promise<ResumableUpload[]> {
    const parts: ResumableUpload[] = [];
    for (const id of ids) {
      const part = await this.#store.get(id);
      if (!part || part.concat?.kind !== 'partial' || expired(part)) {
        throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Concat: final needs partial uploads of this server');
      }
      parts.push(part);
    }
    return parts;
  }

  /** The upload, or UPLOAD_NOT_FOUND; an expired one is UPLOAD_EXPIRED (410) until swept. */
  async #live(id: string): Promise<ResumableUpload> {
    const upload = await this.#store.get(id);
    if (!upload) throw new SpoolError('UPLOAD_NOT_FOUND');
    if (expired(upload)) throw new SpoolError('UPLOAD_EXPIRED');
    return upload;
  }

  /** Runs `work` holding the upload's lock (ending any append in progress) and a memory lease. */
  async #exclusive<T>(id: string, work: (lease: MemoryLease) => Promise<T>): Promise<T> {
    const release = await this.#locks.acquire(id, () => undefined, this.#config.lockTimeout);
    const lease = this.#config.budget.lease();
    try {
      return await work(lease);
    } finally {
      lease.close();
      release();
    }
  }

  /**
   * The request's memory share, waiting (first come, first served) at most `admissionTimeout` — and no
   * longer than the request itself: a newer request for the upload (`ended`) or the client going away ends
   * the wait, and with it the lock this request holds.
   */
  async #admit(lease: MemoryLease, res: ServerResponse, ended: AbortSignal): Promise<void> {
    if (lease.tryReserve(REQUEST_SHARE)) return lease.keep(REQUEST_SHARE);
    const gone = new AbortController();
    const onClose = () => gone.abort(new SpoolError('CLIENT_ABORTED'));
    res.once('close', onClose);
    if (res.destroyed) onClose();
    const timeout = AbortSignal.timeout(this.#config.admissionTimeout);
    try {
      await lease.reserve(REQUEST_SHARE, AbortSignal.any([ended, gone.signal, timeout]));
      lease.keep(REQUEST_SHARE);
    } catch {
      if (ended.aborted) throw ended.reason;
      if (gone.signal.aborted) throw gone.signal.reason;
      throw new SpoolError('MEMORY_BUDGET_EXCEEDED', 'No memory for another upload right now; retry later');
    } finally {
      res.off('close', onClose);
    }
  }

  async sweep(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    const finals: FinalUpload[] = [];
    for await (const upload of this.#store.list()) {
      const pending = isPendingFinal(upload);
      if (pending) this.#finals.add(upload.id, upload.concat.parts); // also learns finals declared on other instances
      if (upload.expiresAt === undefined || upload.expiresAt > now || this.#locks.has(upload.id)) {
        if (pending) finals.push(upload);
        continue;
      }
      const outcome = await this.#removeUnder(upload.id, (fresh) => !fresh || expired(fresh, now));
      if (outcome === 'unreachable') return removed; // the lock cannot be asked now (Redis away): the next sweep goes on
      if (outcome === 'kept') continue;
      this.#hashes.forget(upload.id);
      removed++;
    }
    // A pending final goes with its partials: one terminated, expired or swept fails it.
    for (const final of finals) {
      if (this.#locks.has(final.id)) continue;
      for (const partId of final.concat.parts) {
        const part = await this.#store.get(partId);
        if (part && part.concat?.kind === 'partial' && !expired(part, now)) continue;
        const outcome = await this.#removeUnder(final.id, (fresh) => !fresh || isPendingFinal(fresh));
        if (outcome === 'unreachable') return removed;
        if (outcome === 'removed') {
          this.#forgetFinal(final.id);
          removed++;
        }
        break;
      }
    }
    return removed;
  }

  /**
   * Removes an upload the sweep's listing marked for removal, if a fresh read under its lock still does
   * (`due`; undefined when the store no longer finds it: whatever the listing saw of it goes): a request may
   * have renewed, completed or assembled it since the listing (on another instance, or here between the
   * listing and now), and a completed upload belongs to the app. 'kept' when it stays (also when the store
   * itself refuses the removal as busy); 'unreachable' when its lock cannot be asked for (Redis away).
   */
  async #removeUnder(id: string, due: (fresh: ResumableUpload | undefined) => boolean): Promise<'removed' | 'kept' | 'unreachable'> {
    const work = async (): Promise<'removed' | 'kept'> => {
      if (!due(await this.#store.get(id))) return 'kept';
      try {
        await this.#store.remove(id);
      } catch (err) {
        if (err instanceof SpoolError && err.code === 'UPLOAD_LOCKED') return 'kept'; // busy: the next sweep looks again
        throw err;
      }
      return 'removed';
    };
    const locks = this.#locks as UploadLocker & Partial<UploadFence>;
    try {
      if (typeof locks.exclusive !== 'function') return await this.#exclusive(id, work); // in-process lock: free, as has() said
      return (await locks.exclusive(id, work, 0))?.value ?? 'kept'; // undefined: held on another instance
    } catch (err) {
      // (work() answers a busy store itself: an UPLOAD_LOCKED here is the lock that could not be asked for.)
      if (err instanceof SpoolError && err.code === 'UPLOAD_LOCKED') return 'unreachable';
      throw err;
    }
  }

  #location(req: IncomingMessage, id: string): string {
    const base = (req as { baseUrl?: string }).baseUrl ?? '';
    return `${base}/${id}`;
  }

  #fail(req: IncomingMessage, res: ServerResponse, protocol: Protocol, err: unknown, upload?: ResumableUpload, intent?: AppendIntent): void {
    const error = err instanceof SpoolError ? err : new SpoolError('STORAGE_FAILED', err instanceof Error ? err.message : String(err), { cause: err });
    if (res.headersSent || res.destroyed) return;
    if (error.code === 'MEMORY_BUDGET_EXCEEDED') res.setHeader('Retry-After', '5');
    const answer = () => {
      if (res.headersSent || res.destroyed) return;
      try {
        protocol.error(req, res, error, this.#config, upload, intent);
      } catch {
        res.destroy(); // an answer that cannot be written must not leave the client waiting
      }
    };
    if (req.complete || req.destroyed) return answer();
    // The rest of the body is not wanted: read it first (for a while), then answer and close, so a client
    // still sending sees the answer rather than a reset.
    res.setHeader('Connection', 'close');
    drainRequest(req, DRAIN_TIMEOUT, answer);
  }
}

/** How long (ms) the rest of an unwanted body is read before the error answer goes out anyway. */
const DRAIN_TIMEOUT = 2000;

/** How long a final upload's link waits for its partial's lock to be free before trying again (doubling up to the max). */
const LINK_RETRY = 250;
const LINK_RETRY_MAX = 5000;

/**
 * The file as the app's fileFilter and onComplete see it, from the upload's metadata. The client's filename
 * is cut to its last path segment, as multipart's `originalname` is by default: it is the client's word,
 * and `../../x` must not read as a path (the metadata itself keeps what the client sent).
 */
function incomingFile(metadata: Readonly<Record<string, string | null>>): IncomingFile {
  return {
    fieldname: metadata.fieldname ?? 'file',
    originalname: basename(metadata.filename ?? ''),
    encoding: 'binary',
    mimetype: metadata.filetype ?? 'application/octet-stream',
  };
}

function expired(upload: ResumableUpload, now = Date.now()): boolean {
  return upload.expiresAt !== undefined && upload.expiresAt <= now;
}

function gone(): never {
  throw new SpoolError('UPLOAD_NOT_FOUND');
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function reachedLength(upload: ResumableUpload): boolean {
  return !upload.complete && upload.length !== undefined && upload.offset === upload.length;
}

function notAllowed(): SpoolError {
  return new SpoolError('INVALID_UPLOAD_REQUEST', 'Create uploads with POST on the collection; use HEAD, PATCH or DELETE on an upload');
}

async function digestOf(hash: Hash, stream: NodeJS.ReadableStream): Promise<Buffer> {
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest();
}

/** Why `intent` cannot append to `upload`, or undefined. */
/** A body whose Content-Length goes past the upload's length (declared before or by this request). */
function bodyPastLength(req: IncomingMessage, upload: ResumableUpload, intent: AppendIntent): SpoolError | undefined {
  const length = upload.length ?? intent.length;
  const header = req.headers['content-length'];
  if (length === undefined || header === undefined || req.headers['transfer-encoding'] !== undefined) return undefined;
  const body = Number(header);
  if (!Number.isSafeInteger(body) || upload.offset + body <= length) return undefined;
  return new SpoolError('INCONSISTENT_LENGTH', `The body (${body} bytes) goes past Upload-Length (${length}) from offset ${upload.offset}`);
}

function appendProblem(upload: ResumableUpload, intent: AppendIntent): SpoolError | undefined {
  if (upload.concat?.kind === 'final') return new SpoolError('UPLOAD_COMPLETED', 'A final upload cannot be appended to');
  if (intent.offset !== upload.offset) return new SpoolError('OFFSET_MISMATCH', `Upload-Offset is ${upload.offset}, not ${intent.offset}`);
  if (upload.complete) return new SpoolError('UPLOAD_COMPLETED');
  if (intent.length !== undefined && upload.length !== undefined && intent.length !== upload.length) return new SpoolError('INCONSISTENT_LENGTH');
  if (intent.length !== undefined && intent.length < upload.offset) return new SpoolError('INCONSISTENT_LENGTH');
  return undefined;
}
