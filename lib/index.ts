import './express-augment';
import { spool as createSpool, type Spool } from './multipart/spool';
import type { SpoolOptions } from './multipart/options';
import * as dropIn from './multipart/drop-in-statics';

/** The multipart middleware: `spool(options)` (README, "Usage"). */
export function spool(options?: SpoolOptions): Spool {
  return createSpool(options);
}
/**
 * multer's statics and type names on `spool`, so that `import { spool as multer } from 'express-spool'` is the
 * whole migration for apps that use them too (`multer.MulterError`, `multer.diskStorage(…)`, `multer.Options`).
 */
export namespace spool {
  export const MulterError = dropIn.MulterError;
  export type MulterError = dropIn.MulterError;
  export const diskStorage = dropIn.diskStorage;
  export const memoryStorage = dropIn.memoryStorage;
  export type Options = SpoolOptions;
  export type FileFilterCallback = import('./multipart/options').FileFilterCallback;
}
export { MulterError } from './multipart/drop-in-statics';
export type { Spool, Middleware } from './multipart/spool';
export { SpoolError, ERROR_CODES, isSpoolError } from './core/errors';
export type { SpoolErrorCode, SpoolErrorOptions } from './core/errors';
export { MemoryBudget, MemoryLease } from './core/memory-budget';
export { UploadedFile } from './core/uploaded-file';
export type { SpoolRequest } from './multipart/upload-request';
export type { SpoolOptions, SpoolLimits, FileFilter, FileFilterCallback } from './multipart/options';
export { DEFAULT_LIMITS } from './multipart/options';
export type { FieldSpec } from './multipart/file-selection';
export type { StorageEngine, StoredFile, IncomingFile, StoreContext, AppRequest } from './core/engine';
export { parseSize } from './core/sizes';
export type { Size } from './core/sizes';
export { memoryEngine } from '../engines/memory';
export type { MemoryDetails } from '../engines/memory';
export { diskEngine } from '../engines/disk';
export type { DiskEngineOptions, DiskDetails, DiskLifetime, DiskNameFunction, DiskCallback } from '../engines/disk';
export { spoolEngine } from '../engines/spool';
export type { SpoolEngineOptions } from '../engines/spool';
export type { S3EngineOptions, S3Details, S3ExtraParams } from '../engines/s3';
export type { ToMulterStorageOptions } from './multer/to-multer-storage';
export type { FromMulterStorageOptions } from './multer/from-multer-storage';
export type { MulterFile, MulterStorageEngine } from './multer/multer-types';
export type { ResumableStore, ResumableUpload, NewUpload, UploadChanges, ResumableContext, AppendContext, AppendProgress, ResumableGetOptions } from './resumable/upload-store';
export type { Resumable } from './resumable/handler';
export type { ResumableOptions, ResumableLimits, ResumableProtocol } from './resumable/options';
export type { RedisLocker, RedisLockerOptions } from '../engines/redis-locker';
export type { UploadLocker, UploadFence } from './resumable/upload-locker';
export type { ResumableDiskOptions, ResumableDiskDetails } from '../engines/resumable-disk';
export type { ResumableS3Options } from '../engines/resumable-s3';

// Features an app may never use (S3, multer interop, resumable uploads) are loaded on their first call, so an
// app that only takes multipart uploads does not carry their code: ~0.5 MB less old-generation heap. On a
// small heap that decides how often V8 runs full GCs during large uploads (bench/README.md, "Large uploads
// and V8's old-generation limit"). Each export keeps the exact type of the function it loads.
function onFirstCall<M, K extends keyof M>(load: () => M, name: K): M[K] {
  return ((...args: unknown[]) => (load()[name] as (...a: unknown[]) => unknown)(...args)) as M[K];
}

/** A storage engine that streams each file to S3 (or an S3-compatible store). See the README, "S3". */
export const s3Engine = onFirstCall(() => require('../engines/s3') as typeof import('../engines/s3'), 's3Engine');
/** Wraps an express-spool engine as a multer storage engine. */
export const toMulterStorage = onFirstCall(
  () => require('./multer/to-multer-storage') as typeof import('./multer/to-multer-storage'),
  'toMulterStorage',
);
/** Wraps a multer storage engine (multer-s3, …) as an express-spool engine. */
export const fromMulterStorage = onFirstCall(
  () => require('./multer/from-multer-storage') as typeof import('./multer/from-multer-storage'),
  'fromMulterStorage',
);
/** Resumable uploads (tus 1.0 and the IETF draft) as an Express router. See the README, "Resumable uploads". */
export const resumable = onFirstCall(() => require('./resumable/handler') as typeof import('./resumable/handler'), 'resumable');
/** Upload locks shared by many instances through Redis. */
export const redisLocker = onFirstCall(() => require('../engines/redis-locker') as typeof import('../engines/redis-locker'), 'redisLocker');
/** A resumable-upload store on the local filesystem. */
export const resumableDiskStore = onFirstCall(
  () => require('../engines/resumable-disk') as typeof import('../engines/resumable-disk'),
  'resumableDiskStore',
);
/** A resumable-upload store on S3 (multipart uploads, no local disk). */
export const s3ResumableStore = onFirstCall(
  () => require('../engines/resumable-s3') as typeof import('../engines/resumable-s3'),
  's3ResumableStore',
);
