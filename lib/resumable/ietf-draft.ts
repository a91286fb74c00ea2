import type { IncomingMessage, ServerResponse } from 'node:http';
import { paramDecoder, parseDisposition } from '../multipart/content-disposition';
import { basename } from '../core/client-filename';
import { SpoolError } from '../core/errors';
import { parseDigestField } from './checksum';
import { parseMetadata } from './metadata';
import type { ResumableConfig } from './options';
import { hasBody, integerHeader, stringHeader, type AppendIntent, type CreateIntent, type Protocol } from './protocol';
import type { ResumableUpload } from './upload-store';

/**
 * draft-ietf-httpbis-resumable-upload, by interop version (Upload-Draft-Interop-Version):
 * 3 = draft -00/-01 (Upload-Incomplete), 4 = -02 (Upload-Complete), 5 = -03 (tus-js-client 'ietf-draft-03'),
 * 6 = -04/-05 (application/partial-upload, Upload-Limit, problem types, Upload-Length; tus-js-client
 * 'ietf-draft-05'), 7 = -06…-08 (Upload-Limit `expires` renamed `max-age`), 8 = -09…-15.
 * A request with Upload-Complete and no version header is read as the newest.
 */
export const IETF_VERSIONS = [3, 4, 5, 6, 7, 8] as const;
const NEWEST = 8;
const PROBLEM = 'https://iana.org/assignments/http-problem-types#';
const PARTIAL_UPLOAD = 'application/partial-upload';
const utf8 = paramDecoder('utf8')!;

const invalid = (what: string) => () => new SpoolError('INVALID_UPLOAD_REQUEST', `Invalid ${what}`);

/** The request's interop version; throws UNSUPPORTED_PROTOCOL_VERSION for one we do not speak. */
export function ietfVersion(req: IncomingMessage): number {
  const header = req.headers['upload-draft-interop-version'];
  if (header === undefined) return NEWEST;
  // A Structured Field Integer: digits only ("6.0", "0x6" or "6e0" are not versions).
  const text = String(header).trim();
  const version = /^[0-9]{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(IETF_VERSIONS as readonly number[]).includes(version)) {
    throw new SpoolError('UNSUPPORTED_PROTOCOL_VERSION', `Upload-Draft-Interop-Version ${IETF_VERSIONS.join(', ')} supported`);
  }
  return version;
}

/** Whether a request speaks the IETF draft (as opposed to tus, or neither). */
export function isIetfRequest(req: IncomingMessage): boolean {
  const h = req.headers;
  return h['upload-draft-interop-version'] !== undefined || h['upload-complete'] !== undefined || h['upload-incomplete'] !== undefined;
}

export const ietfDraft: Protocol = {
  name: 'ietf',

  checkVersion(req) {
    ietfVersion(req);
  },

  // tus-js-client's ietf-draft modes (interop 5, 6) take an upload whose offset reached Upload-Length as
  // done — a 0-byte file is created with Upload-Complete: ?0 and nothing follows; a last append cut off
  // after its last byte is not repeated — so for them, as for tus, reaching the length completes it.
  completesAtLength: (req) => answered(req) <= 6,

  create(req): CreateIntent {
    const complete = completeness(req);
    const length = declaredLength(req, 0, complete);
    const metadata = parseMetadata(stringHeader(req, 'upload-metadata'));
    const disposition = stringHeader(req, 'content-disposition');
    if (disposition !== undefined) {
      const parsed = parseDisposition(disposition, utf8);
      if (typeof parsed !== 'string' && parsed.filename !== undefined) metadata.filename = basename(parsed.filename);
    }
    const type = stringHeader(req, 'content-type')?.split(';', 1)[0].trim().toLowerCase();
    if (type && type !== PARTIAL_UPLOAD && type !== 'application/offset+octet-stream' && metadata.filetype === undefined) {
      metadata.filetype = type;
    }
    const repr = stringHeader(req, 'repr-digest');
    if (repr !== undefined) parseDigestField(repr); // malformed → 400 now, not at completion
    return {
      length,
      metadata,
      complete,
      hasBody: hasBody(req),
      checksum: parseDigestField(stringHeader(req, 'content-digest')),
      extra: repr === undefined ? {} : { reprDigest: repr },
    };
  },

  append(req): AppendIntent {
    const type = stringHeader(req, 'content-type')?.split(';', 1)[0].trim().toLowerCase();
    if (ietfVersion(req) >= 6 && type !== undefined && type !== PARTIAL_UPLOAD) {
      throw new SpoolError('UNSUPPORTED_CONTENT_TYPE', `Content-Type must be ${PARTIAL_UPLOAD}`);
    }
    const offset = integerHeader(req, 'upload-offset', invalid('Upload-Offset'));
    if (offset === undefined) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Offset is required');
    const complete = completeness(req);
    return { offset, complete, length: declaredLength(req, offset, complete), checksum: parseDigestField(stringHeader(req, 'content-digest')) };
  },

  // "Server implementations of draft versions of the protocol MUST NOT send a 104 (Upload Resumption
  // Supported) informational response when the interop version indicated by the Upload-Draft-Interop-Version
  // header field in the request is missing or mismatching."
  acceptsInterim: (req) => req.headers['upload-draft-interop-version'] !== undefined,

  // "the server MUST prevent the offset from exceeding the upload length by rejecting the request once the
  // offset exceeds the length, marking the upload resource invalid and rejecting any further interaction
  // with it" (since draft -08, interop 7).
  invalidatesOnOverrun: (req) => answered(req) >= 7,

  interim(req, location, config) {
    return { Location: location, ...versionHeader(req), ...limitHeader(req, config, undefined) };
  },

  // "While the request content is being processed, the server SHOULD send interim responses with a 104
  // status code and the Upload-Offset header field set to the current offset" — on an append without
  // Location ("MUST NOT include the Location header field"); on a creation with the same Location as every
  // other response to it from interop 8 on, without one before (the interop 6 text: "These interim
  // responses MUST NOT include the Location header field").
  progress(req, offset, location) {
    const withLocation = location !== undefined && answered(req) >= 8;
    return { ...versionHeader(req), 'Upload-Offset': String(offset), ...(withLocation ? { Location: location } : {}) };
  },

  created(req, res, upload, location, config) {
    res.statusCode = 201;
    state(req, res, upload, config);
    res.setHeader('Location', location);
    res.end();
  },

  status(req, res, upload, config) {
    res.statusCode = 204;
    state(req, res, upload, config);
    res.setHeader('Cache-Control', 'no-store');
    res.end();
  },

  appended(req, res, upload, config) {
    res.statusCode = 204;
    state(req, res, upload, config);
    res.end();
  },

  removed(req, res) {
    res.statusCode = 204;
    setAll(res, versionHeader(req));
    res.end();
  },

  options(req, res, config) {
    res.statusCode = 204;
    setAll(res, versionHeader(req));
    setAll(res, limitHeader(req, config, undefined));
    res.setHeader('Accept-Patch', PARTIAL_UPLOAD);
    res.end();
  },

  error(req, res, err, config, upload, intent) {
    res.statusCode = err.status === 460 ? 400 : err.status; // 460 is tus's; RFC 9530 has no status of its own
    setAll(res, versionHeader(req));
    if (upload) state(req, res, upload, config);
    else if (res.statusCode === 413) setAll(res, limitHeader(req, config, undefined)); // required with a 413
    const problem: Record<string, unknown> = { title: err.expose ? err.message : 'Internal Server Error', status: res.statusCode, code: err.code };
    if (err.code === 'OFFSET_MISMATCH') {
      problem.type = `${PROBLEM}mismatching-upload-offset`;
      problem['expected-offset'] = upload?.offset;
      problem['provided-offset'] = intent?.offset;
    } else if (err.code === 'UPLOAD_COMPLETED') {
      problem.type = `${PROBLEM}completed-upload`;
    } else if (err.code === 'INCONSISTENT_LENGTH') {
      problem.type = `${PROBLEM}inconsistent-upload-length`;
    }
    res.setHeader('Content-Type', 'application/problem+json');
    res.end(JSON.stringify(problem));
  },
};

/** Upload-Complete (interop ≥ 4) or the inverted Upload-Incomplete (interop 3); required on creation and append. */
function completeness(req: IncomingMessage): boolean {
  const old = ietfVersion(req) <= 3;
  const value = req.headers[old ? 'upload-incomplete' : 'upload-complete'];
  if (value !== '?1' && value !== '?0') {
    throw new SpoolError('INVALID_UPLOAD_REQUEST', `${old ? 'Upload-Incomplete' : 'Upload-Complete'} must be ?0 or ?1`);
  }
  return (value === '?1') !== old;
}

/** Upload-Length, and with Upload-Complete: ?1 the offset + Content-Length; both present must agree. */
function declaredLength(req: IncomingMessage, offset: number, complete: boolean): number | undefined {
  const declared = integerHeader(req, 'upload-length', invalid('Upload-Length'));
  const contentLength = integerHeader(req, 'content-length', invalid('Content-Length'));
  const implied = complete && contentLength !== undefined ? offset + contentLength : undefined;
  if (declared !== undefined && implied !== undefined && declared !== implied) throw new SpoolError('INCONSISTENT_LENGTH');
  return declared ?? implied;
}

function state(req: IncomingMessage, res: ServerResponse, upload: ResumableUpload, config: ResumableConfig | undefined): void {
  setAll(res, versionHeader(req));
  const version = answered(req);
  res.setHeader('Upload-Offset', String(upload.offset));
  if (version <= 3) res.setHeader('Upload-Incomplete', upload.complete ? '?0' : '?1');
  else res.setHeader('Upload-Complete', upload.complete ? '?1' : '?0');
  if (upload.length !== undefined && version >= 6) res.setHeader('Upload-Length', String(upload.length));
  if (upload.complete && upload.sha256) res.setHeader('Repr-Digest', `sha-256=:${Buffer.from(upload.sha256, 'hex').toString('base64')}:`);
  if (config) setAll(res, limitHeader(req, config, upload));
}

/** The version answered: the request's, or the newest when the request's is one we do not speak (the 412). */
function answered(req: IncomingMessage): number {
  try {
    return ietfVersion(req);
  } catch {
    return NEWEST;
  }
}

function versionHeader(req: IncomingMessage): Record<string, string> {
  return { 'Upload-Draft-Interop-Version': String(answered(req)) };
}

/** Upload-Limit (interop ≥ 6): max-size, max-append-size, and the remaining lifetime in seconds. */
function limitHeader(req: IncomingMessage, config: ResumableConfig, upload: ResumableUpload | undefined): Record<string, string> {
  const version = answered(req);
  if (version < 6) return {};
  const limits: string[] = [];
  if (Number.isFinite(config.fileSize)) limits.push(`max-size=${config.fileSize}`);
  if (Number.isFinite(config.appendSize)) limits.push(`max-append-size=${config.appendSize}`);
  const expiresAt = upload ? upload.expiresAt : config.expiration > 0 ? Date.now() + config.expiration : undefined;
  if (expiresAt !== undefined) limits.push(`${version >= 7 ? 'max-age' : 'expires'}=${Math.max(0, Math.floor((expiresAt - Date.now()) / 1000))}`);
  return limits.length > 0 ? { 'Upload-Limit': limits.join(', ') } : {};
}

function setAll(res: ServerResponse, headers: Record<string, string>): void {
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
}
