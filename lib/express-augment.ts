import type { UploadedFile } from './core/uploaded-file';

// Types `req.file` / `req.files` in Express apps, as @types/multer does (same shape, our file type).
// An app that still has @types/multer installed gets a duplicate-declaration error unless `skipLibCheck` is on.
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** Set by `upload.single(name)`. */
      file?: UploadedFile;
      /** Set by `upload.array()` / `upload.any()` (array) and `upload.fields()` (object by field name). */
      files?: UploadedFile[] | Record<string, UploadedFile[]>;
    }
  }
}

export {};
