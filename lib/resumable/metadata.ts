import { isUtf8 } from 'node:buffer';
import { SpoolError } from '../core/errors';

const KEY = /^[\x21-\x2b\x2d-\x7e]+$/; // printable ASCII without space and comma (tus 1.0)
// Padded base64 (RFC 4648 §4), as tus clients send it: whole 4-character groups.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes tus `Upload-Metadata`: `key base64value, key2, …`. Keys are unique ASCII without spaces or commas;
 * a key without a value maps to null; a value is padded base64 of UTF-8 text (metadata is kept as text, so
 * other bytes could not be given back as sent). Anything else is INVALID_UPLOAD_REQUEST (400).
 */
export function parseMetadata(header: string | undefined): Record<string, string | null> {
  const metadata: Record<string, string | null> = Object.create(null);
  if (header === undefined || header.trim() === '') return metadata;
  for (const pair of header.split(',')) {
    const [key, value, extra] = pair.trim().split(/ +/);
    if (!key || !KEY.test(key) || extra !== undefined || key in metadata || (value !== undefined && !BASE64.test(value))) {
      throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Malformed Upload-Metadata');
    }
    if (value === undefined) {
      metadata[key] = null;
      continue;
    }
    const bytes = Buffer.from(value, 'base64');
    if (!isUtf8(bytes)) throw new SpoolError('INVALID_UPLOAD_REQUEST', `Upload-Metadata: the value of ${key} is not UTF-8 text`);
    metadata[key] = bytes.toString('utf8');
  }
  return metadata;
}

/** Encodes metadata back to an `Upload-Metadata` value (HEAD responses). */
export function formatMetadata(metadata: Readonly<Record<string, string | null>>): string {
  return Object.entries(metadata)
    .map(([key, value]) => (value === null ? key : `${key} ${Buffer.from(value, 'utf8').toString('base64')}`))
    .join(',');
}
