import type { IncomingMessage, ServerResponse } from 'node:http';
import { SpoolError } from '../core/errors';
import { parseUploadChecksum, TUS_ALGORITHMS } from './checksum';
import { formatMetadata, parseMetadata } from './metadata';
import type { ResumableConfig } from './options';
import { hasBody, httpDate, integerHeader, stringHeader, type AppendIntent, type CreateIntent, type Protocol } from './protocol';
import type { ResumableUpload } from './upload-store';

const VERSION = '1.0.0';
const EXTENSIONS = 'creation,creation-with-upload,creation-defer-length,termination,expiration,checksum';
const CONCATENATION = ',concatenation,concatenation-unfinished';
const OFFSET_STREAM = /^application\/offset\+octet-stream\s*(?:;|$)/i;

const invalid = (what: string) => () => new SpoolError('INVALID_UPLOAD_REQUEST', `Invalid ${what}`);

/**
 * tus 1.0.0: core, creation (+with-upload, +defer-length), termination, expiration, checksum,
 * concatenation (+unfinished: a final upload may name partial uploads still in progress; it is assembled
 * when the last of them completes, and has no Upload-Offset until then).
 */
export const tus: Protocol = {
  name: 'tus',

  checkVersion(req) {
    if (req.headers['tus-resumable'] !== VERSION) {
      throw new SpoolError('UNSUPPORTED_PROTOCOL_VERSION', `Tus-Resumable must be ${VERSION}`);
    }
  },

  completesAtLength: () => true,

  create(req): CreateIntent {
    const length = integerHeader(req, 'upload-length', invalid('Upload-Length'));
    const deferred = req.headers['upload-defer-length'];
    if (deferred !== undefined && deferred !== '1') throw invalid('Upload-Defer-Length')();
    const concat = parseConcat(stringHeader(req, 'upload-concat'));
    if (concat?.kind === 'final') {
      if (length !== undefined || deferred !== undefined) throw invalid('final upload: it takes no Upload-Length')();
    } else if ((length === undefined) === (deferred === undefined)) {
      throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Give Upload-Length or Upload-Defer-Length: 1');
    }
    const body = hasBody(req);
    if (body) {
      checkContentType(req);
      if (concat?.kind === 'final') throw invalid('final upload: it takes no body')();
    }
    return {
      length,
      metadata: parseMetadata(stringHeader(req, 'upload-metadata')),
      concat,
      hasBody: body,
      checksum: parseUploadChecksum(stringHeader(req, 'upload-checksum')),
      extra: {},
    };
  },

  append(req): AppendIntent {
    checkContentType(req);
    const offset = integerHeader(req, 'upload-offset', invalid('Upload-Offset'));
    if (offset === undefined) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Offset is required');
    return {
      offset,
      length: integerHeader(req, 'upload-length', invalid('Upload-Length')),
      checksum: parseUploadChecksum(stringHeader(req, 'upload-checksum')),
    };
  },

  created(_req, res, upload, location) {
    res.statusCode = 201;
    common(res);
    res.setHeader('Location', location);
    progress(res, upload);
    res.end();
  },

  status(_req, res, upload, _config, locationOf) {
    res.statusCode = 200;
    common(res);
    res.setHeader('Cache-Control', 'no-store');
    // "The response to a HEAD request for a final upload SHOULD NOT contain the Upload-Offset header unless
    // the concatenation has been successfully finished."
    if (!pendingFinal(upload)) res.setHeader('Upload-Offset', String(upload.offset));
    if (upload.length !== undefined) res.setHeader('Upload-Length', String(upload.length));
    else if (upload.concat?.kind !== 'final') res.setHeader('Upload-Defer-Length', '1');
    if (Object.keys(upload.metadata).length > 0) res.setHeader('Upload-Metadata', formatMetadata(upload.metadata));
    if (upload.concat) {
      res.setHeader('Upload-Concat', upload.concat.kind === 'partial' ? 'partial' : `final;${upload.concat.parts.map(locationOf).join(' ')}`);
    }
    if (upload.expiresAt !== undefined) res.setHeader('Upload-Expires', httpDate(upload.expiresAt));
    res.end();
  },

  appended(_req, res, upload) {
    res.statusCode = 204;
    common(res);
    progress(res, upload);
    res.end();
  },

  removed(_req, res) {
    res.statusCode = 204;
    common(res);
    res.end();
  },

  options(_req, res, config: ResumableConfig) {
    res.statusCode = 204;
    common(res);
    res.setHeader('Tus-Version', VERSION);
    res.setHeader('Tus-Extension', config.concatenation ? EXTENSIONS + CONCATENATION : EXTENSIONS);
    if (Number.isFinite(config.fileSize)) res.setHeader('Tus-Max-Size', String(config.fileSize));
    res.setHeader('Tus-Checksum-Algorithm', [...TUS_ALGORITHMS.keys()].join(','));
    res.end();
  },

  error(_req, res, err, _config, upload) {
    res.statusCode = tusStatus(err, upload);
    common(res);
    if (err.code === 'UNSUPPORTED_PROTOCOL_VERSION') res.setHeader('Tus-Version', VERSION);
    if (upload && (err.code === 'OFFSET_MISMATCH' || err.code === 'CHECKSUM_MISMATCH')) res.setHeader('Upload-Offset', String(upload.offset));
    res.setHeader('Content-Type', 'text/plain; charset=utf-8');
    res.end(err.expose ? err.message : 'Internal Server Error');
  },
};

/** The status tus gives a code where it differs from the code's own (460 and 412 are tus's already). */
function tusStatus(err: SpoolError, upload: ResumableUpload | undefined): number {
  // tus: "The Server MUST respond with 403 Forbidden to PATCH requests against a final upload URL".
  if (err.code === 'UPLOAD_COMPLETED' && upload?.concat?.kind === 'final') return 403;
  return err.status;
}

function common(res: ServerResponse): void {
  res.setHeader('Tus-Resumable', VERSION);
}

function pendingFinal(upload: ResumableUpload): boolean {
  return upload.concat?.kind === 'final' && !upload.complete;
}

function progress(res: ServerResponse, upload: ResumableUpload): void {
  if (!pendingFinal(upload)) res.setHeader('Upload-Offset', String(upload.offset));
  if (upload.expiresAt !== undefined) res.setHeader('Upload-Expires', httpDate(upload.expiresAt));
}

function checkContentType(req: IncomingMessage): void {
  const type = req.headers['content-type'];
  if (typeof type !== 'string' || !OFFSET_STREAM.test(type)) {
    throw new SpoolError('UNSUPPORTED_CONTENT_TYPE', 'Content-Type must be application/offset+octet-stream');
  }
}

/** `Upload-Concat: partial` or `final;<url> <url> …` (absolute URLs or paths; the last segment is the id). */
function parseConcat(header: string | undefined): CreateIntent['concat'] {
  if (header === undefined) return undefined;
  const value = header.trim();
  if (value === 'partial') return { kind: 'partial' };
  const match = /^final;(.+)$/.exec(value);
  if (!match) throw invalid('Upload-Concat')();
  const parts = match[1].trim().split(/ +/).map((url) => {
    const path = url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '').split(/[?#]/, 1)[0];
    try {
      return decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
    } catch {
      throw invalid('Upload-Concat: a malformed percent-encoding')(); // (URIError)
    }
  });
  if (parts.some((id) => id === '')) throw invalid('Upload-Concat')();
  // No client splits a file into the same part twice; naming one partial many times would make one small
  // request write that partial's bytes as often (up to limits.fileSize).
  if (new Set(parts).size !== parts.length) throw new SpoolError('INVALID_UPLOAD_REQUEST', 'Upload-Concat: a partial upload is named more than once');
  return { kind: 'final', parts };
}
