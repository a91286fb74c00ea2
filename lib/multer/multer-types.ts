import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';

/** The file object multer hands to a storage engine (and, merged with the engine's info, to the app). */
export interface MulterFile {
  fieldname: string;
  originalname: string;
  encoding: string;
  mimetype: string;
  stream: Readable;
  [info: string]: unknown;
}

/** multer's StorageEngine contract (structural, so @types/multer is not needed). */
export interface MulterStorageEngine {
  _handleFile(req: IncomingMessage, file: MulterFile, callback: (error?: unknown, info?: Record<string, unknown>) => void): void;
  _removeFile(req: IncomingMessage, file: MulterFile, callback: (error: Error | null) => void): void;
}
