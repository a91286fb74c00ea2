import type { UploadedFile } from '../core/uploaded-file';
import { countOption, describe } from '../core/sizes';

/** One entry of `upload.fields([...])`. */
export interface FieldSpec {
  name: string;
  /** @default Infinity */
  maxCount?: number;
}

type Mode = 'single' | 'array' | 'fields' | 'any' | 'none';

/**
 * Which file fields a route accepts and how they land on `req` — multer's five helpers.
 * `accept` counts files per field; a file it refuses fails the request with LIMIT_UNEXPECTED_FILE.
 */
export class FileSelection {
  readonly mode: Mode;
  readonly #maxCounts: Map<string, number>;

  private constructor(mode: Mode, maxCounts: Map<string, number>) {
    this.mode = mode;
    this.#maxCounts = maxCounts;
  }

  static single(name: string): FileSelection {
    return new FileSelection('single', new Map([[fieldName(name), 1]]));
  }

  static array(name: string, maxCount?: number): FileSelection {
    return new FileSelection('array', new Map([[fieldName(name), countOption('maxCount', maxCount, Infinity)]]));
  }

  static fields(specs: readonly FieldSpec[]): FileSelection {
    if (!Array.isArray(specs)) throw new TypeError(`Expected \`fields\` to be an array, got ${describe(specs)}`);
    const counts = new Map<string, number>();
    for (const spec of specs) counts.set(fieldName(spec?.name), countOption('maxCount', spec.maxCount, Infinity));
    return new FileSelection('fields', counts);
  }

  static any(): FileSelection {
    return new FileSelection('any', new Map());
  }

  static none(): FileSelection {
    return new FileSelection('none', new Map());
  }

  /**
   * Creates the per-request counter: `take` says whether one more file of `fieldname` is allowed (and
   * counts it); `giveBack` uncounts one the fileFilter skipped — as with multer, skipped files do not
   * count towards `maxCount`.
   */
  counter(): FileCounter {
    if (this.mode === 'any') return ALLOW_ALL;
    if (this.mode === 'none') return ALLOW_NONE;
    if (this.mode !== 'fields') {
      // One field (single, array): a number, not a copy of the map, for every request.
      const [[name, max]] = this.#maxCounts;
      let left = max;
      return {
        take: (fieldname) => fieldname === name && left-- >= 1,
        giveBack: (fieldname) => {
          if (fieldname === name) left++;
        },
      };
    }
    let left: Map<string, number> | undefined; // copied when the first file arrives
    return {
      take: (fieldname) => {
        left ??= new Map(this.#maxCounts);
        const remaining = left.get(fieldname);
        if (remaining === undefined || remaining < 1) return false;
        left.set(fieldname, remaining - 1);
        return true;
      },
      giveBack: (fieldname) => {
        const remaining = left?.get(fieldname);
        if (remaining !== undefined) left!.set(fieldname, remaining + 1);
      },
    };
  }

  /** Puts the stored files on the request the way multer does (req.file or req.files). */
  assign(req: { file?: UploadedFile; files?: unknown }, files: UploadedFile[]): void {
    switch (this.mode) {
      case 'single':
        req.file = files[0];
        break;
      case 'array':
      case 'any':
        req.files = files;
        break;
      case 'fields': {
        const byField: Record<string, UploadedFile[]> = Object.create(null);
        for (const name of this.#maxCounts.keys()) byField[name] = [];
        for (const file of files) byField[file.fieldname].push(file);
        // multer lists only fields that received files
        for (const name of this.#maxCounts.keys()) if (byField[name].length === 0) delete byField[name];
        req.files = byField;
        break;
      }
      case 'none':
        break;
    }
  }
}

/** Counts the files a request may have per field (see `FileSelection.counter`). */
export interface FileCounter {
  take(fieldname: string): boolean;
  giveBack(fieldname: string): void;
}

const ALLOW_ALL: FileCounter = { take: () => true, giveBack: () => undefined };
const ALLOW_NONE: FileCounter = { take: () => false, giveBack: () => undefined };

function fieldName(name: unknown): string {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`Expected field \`name\` to be a non-empty string, got ${describe(name)}`);
  }
  return name;
}
