import type { ResumableUpload } from './upload-store';

/** The key, in a partial upload's `extra`, naming the final uploads declared on it (space-separated ids). */
const LINK = 'finals';

export type FinalUpload = ResumableUpload & { readonly concat: { readonly kind: 'final'; readonly parts: readonly string[] } };

/**
 * A tus final upload not assembled yet (`concatenation-unfinished`: declared while some of its partial
 * uploads were unfinished). Its own state names its partials (`concat.parts`) and it has no offset until
 * it is assembled — when its last partial completes, or at the next HEAD on it.
 */
export function isPendingFinal(upload: ResumableUpload): upload is FinalUpload {
  return upload.concat?.kind === 'final' && !upload.complete;
}

/** The final uploads a partial's persisted state says wait on it. */
export function linkedFinals(partial: ResumableUpload): string[] {
  return partial.extra[LINK]?.split(' ').filter((id) => id !== '') ?? [];
}

/** `extra` with `finalId` added to the final uploads waiting on the partial. */
export function withLink(extra: Readonly<Record<string, string>>, finalId: string): Record<string, string> {
  const ids = new Set(extra[LINK]?.split(' ').filter((id) => id !== ''));
  ids.add(finalId);
  return { ...extra, [LINK]: [...ids].join(' ') };
}

/**
 * The final upload's length as far as its partials tell it: a complete partial counts its offset, an
 * unfinished one its declared length; undefined while a partial's length is deferred.
 */
export function lengthOfParts(parts: readonly ResumableUpload[]): number | undefined {
  let sum = 0;
  for (const part of parts) {
    const length = part.complete ? part.offset : part.length;
    if (length === undefined) return undefined;
    sum += length;
  }
  return sum;
}

/**
 * Which pending final uploads wait on which partial uploads, in this process. The persisted link is each
 * partial's `extra.finals` (written under the partial's lock, so that a restart still finds the finals a
 * partial completes); this index also covers the time before that write, and finals whose link could
 * not be written. Entries go when the final is assembled or removed.
 */
export class PendingFinals {
  readonly #byPartial = new Map<string, Set<string>>();
  readonly #parts = new Map<string, readonly string[]>();

  add(finalId: string, parts: readonly string[]): void {
    if (this.#parts.has(finalId)) return;
    this.#parts.set(finalId, parts);
    for (const part of parts) {
      let finals = this.#byPartial.get(part);
      if (!finals) this.#byPartial.set(part, (finals = new Set()));
      finals.add(finalId);
    }
  }

  /** Whether `finalId` is known here as pending. */
  has(finalId: string): boolean {
    return this.#parts.has(finalId);
  }

  forget(finalId: string): void {
    const parts = this.#parts.get(finalId);
    if (!parts) return;
    this.#parts.delete(finalId);
    for (const part of parts) {
      const finals = this.#byPartial.get(part);
      finals?.delete(finalId);
      if (finals?.size === 0) this.#byPartial.delete(part);
    }
  }

  /** The pending finals known here to wait on `partialId`. */
  of(partialId: string): string[] {
    return [...(this.#byPartial.get(partialId) ?? [])];
  }
}
