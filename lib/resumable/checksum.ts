import { createHash, type Hash } from 'node:crypto';
import { SpoolError } from '../core/errors';

/** A digest the client sent for a request's bytes (tus Upload-Checksum, RFC 9530 Content-Digest). */
export interface Checksum {
  /** Node's name of the algorithm. */
  readonly algorithm: string;
  readonly expected: Buffer;
}

/** tus checksum extension: algorithm names as tus writes them → Node's. */
export const TUS_ALGORITHMS: ReadonlyMap<string, string> = new Map([['sha1', 'sha1'], ['sha256', 'sha256'], ['sha512', 'sha512'], ['md5', 'md5']]);
/** RFC 9530 algorithm keys (the IANA Hash Algorithms for HTTP Digest Fields registry's active ones) → Node's. */
const DIGEST_ALGORITHMS: ReadonlyMap<string, string> = new Map([['sha-256', 'sha256'], ['sha-512', 'sha512']]);

/** `Upload-Checksum: sha1 <base64>`; an algorithm we do not offer is INVALID_UPLOAD_REQUEST (400). */
export function parseUploadChecksum(header: string | undefined): Checksum | undefined {
  if (header === undefined) return undefined;
  const match = /^\s*([a-z0-9-]+) +([A-Za-z0-9+/]+={0,2})\s*$/i.exec(header);
  const algorithm = match && TUS_ALGORITHMS.get(match[1].toLowerCase());
  if (!match || !algorithm) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Unsupported or malformed Upload-Checksum');
  return { algorithm, expected: Buffer.from(match[2], 'base64') };
}

/**
 * RFC 9530 `Content-Digest` / `Repr-Digest` (a structured-field dictionary of byte sequences,
 * `sha-256=:…:, sha-512=:…:`): the strongest algorithm we know; unknown ones are ignored as the RFC allows.
 */
export function parseDigestField(header: string | undefined): Checksum | undefined {
  if (header === undefined) return undefined;
  let best: Checksum | undefined;
  for (const member of header.split(',')) {
    const match = /^\s*([a-z0-9-]+)\s*=\s*:([A-Za-z0-9+/]*={0,2}):\s*$/i.exec(member);
    if (!match) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Malformed digest field');
    const algorithm = DIGEST_ALGORITHMS.get(match[1].toLowerCase());
    if (algorithm && (!best || algorithm === 'sha512')) best = { algorithm, expected: Buffer.from(match[2], 'base64') };
  }
  return best;
}

/** Hashes a request's bytes as they stream and says at the end whether they match. */
export class ChecksumVerifier {
  readonly #checksum: Checksum;
  readonly #hash: Hash;

  constructor(checksum: Checksum) {
    this.#checksum = checksum;
    this.#hash = createHash(checksum.algorithm);
  }

  update(chunk: Buffer): void {
    this.#hash.update(chunk);
  }

  matches(): boolean {
    return this.#hash.digest().equals(this.#checksum.expected);
  }
}
