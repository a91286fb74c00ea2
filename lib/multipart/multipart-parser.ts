import type { IncomingHttpHeaders } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { Busboy, type BusboyHeaders, type BusboyInstance } from '@fastify/busboy';
import { basename, DEFAULT_PARAM_CHARSET, paramDecoder, parseDisposition, type Disposition, type ParamDecoder } from './content-disposition';
import type { SpoolErrorCode } from '../core/errors';
import type { ResolvedLimits } from './options';

export interface FileStreamInfo {
  filename: string | undefined;
  encoding: string;
  mimeType: string;
}

/** What the parser reports, already normalised: one error at most, `onDone` only after a clean parse. */
export interface ParserEvents {
  onField(name: string | undefined, value: string, valueTruncated: boolean): void;
  /** Bytes of a text field arrived (busboy holds them until the field ends): lets the core count them. */
  onFieldBytes?(bytes: number): void;
  onFile(name: string | undefined, stream: Readable & { truncated?: boolean }, info: FileStreamInfo): void;
  onLimit(code: Extract<SpoolErrorCode, 'LIMIT_PART_COUNT' | 'LIMIT_FILE_COUNT' | 'LIMIT_FIELD_COUNT'>): void;
  onError(err: Error): void;
  onDone(): void;
}

/** Max bytes of one part's header block; a longer one is malformed rather than silently cut. */
const HEADER_SIZE = 16 * 1024;
/** RFC 2046: a boundary is 1 to 70 characters. */
const MAX_BOUNDARY = 70;
const BOUNDARY_PARAM = /;\s*boundary\s*=\s*(?:"([^"]*)"|([^;\s]*))/i;

export interface ParserOptions {
  limits: ResolvedLimits;
  preservePath: boolean;
  /** Charset of parameters without their own (`filename="…"`), multer's `defParamCharset`. @default 'utf8' */
  defParamCharset?: string;
}

/**
 * Wraps @fastify/busboy (measured faster than busboy: native Buffer#indexOf boundary search, see bench/)
 * and makes it strict where it is lenient: a part whose headers are missing, folded, cut off or not
 * `form-data`, or whose name or filename holds a line break, is an error here, not a silently skipped
 * part; its `finish` after an error is swallowed. Names and filenames come from our own reading of the
 * Content-Disposition (`filename*` wins, multer's `defParamCharset`), not from busboy's.
 */
export function createMultipartParser(
  requestHeaders: IncomingHttpHeaders,
  options: ParserOptions,
  events: ParserEvents,
): Writable {
  const { limits } = options;
  const decode = paramDecoder(options.defParamCharset ?? DEFAULT_PARAM_CHARSET);
  if (!decode) throw new TypeError(`Unknown defParamCharset ${options.defParamCharset}`);
  const boundary = BOUNDARY_PARAM.exec(String(requestHeaders['content-type']));
  const boundaryLength = (boundary?.[1] ?? boundary?.[2] ?? '').length;
  if (boundaryLength > MAX_BOUNDARY) throw new Error(`Boundary longer than ${MAX_BOUNDARY} characters`);
  const parser = new Busboy({
    headers: requestHeaders as BusboyHeaders,
    preservePath: options.preservePath,
    limits: {
      fileSize: limits.fileSize,
      files: limits.files,
      fields: limits.fields,
      fieldSize: limits.fieldSize,
      parts: limits.parts,
      headerPairs: limits.headerPairs,
      // Twice our limit: the parser truncates silently past its own, we measure and refuse past ours.
      headerSize: HEADER_SIZE * 2,
    },
  });
  let failed = false;
  const fail = (err: Error) => {
    if (failed) return;
    failed = true;
    events.onError(err);
  };
  const parts = checkPartHeaders(parser, { maxPairs: limits.headerPairs, decode, onFieldBytes: events.onFieldBytes }, fail);
  // busboy emits 'file' right after the part's header and 'field' before the next part's header, so the
  // disposition read last is the one of the part being reported.
  parser
    .on('field', (_name: string, value: string, _nameTruncated: boolean, valueTruncated: boolean) => {
      if (!failed) events.onField(parts.current()?.name, value, valueTruncated);
    })
    .on('file', (_name: string, stream: Readable, _filename: string | undefined, encoding: string, mimeType: string) => {
      const part = parts.current();
      const filename = part?.filename === undefined || options.preservePath ? part?.filename : basename(part.filename);
      events.onFile(part?.name, stream, { filename, encoding, mimeType });
    })
    .on('partsLimit', () => events.onLimit('LIMIT_PART_COUNT'))
    .on('filesLimit', () => events.onLimit('LIMIT_FILE_COUNT'))
    .on('fieldsLimit', () => events.onLimit('LIMIT_FIELD_COUNT'))
    .on('error', (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))))
    .on('finish', () => {
      if (parts.awaitingHeaders() > 0) fail(new Error('Malformed part header: part ended inside its headers'));
      if (!failed) events.onDone();
    });
  return parser;
}

const FORM_DATA = /^\s*form-data\s*(?:;|$)/i;

interface PartWatch {
  /** Parts whose header block has not been read yet. */
  awaitingHeaders(): number;
  /** The Content-Disposition of the part whose header was read last (undefined if it was bad). */
  current(): Disposition | undefined;
}

/** The multipart parser inside @fastify/busboy: an internal, so the exact version is pinned in package.json. */
function innerParser(parser: BusboyInstance): NodeJS.EventEmitter {
  const dicer = (parser as unknown as { _parser?: { parser?: NodeJS.EventEmitter } })._parser?.parser;
  if (typeof dicer?.on !== 'function') {
    throw new Error('express-spool: unsupported @fastify/busboy version (no multipart parser found); install the version express-spool pins');
  }
  return dicer;
}

/**
 * The strictness layer: watches the inner Dicer's parts (an internal of @fastify/busboy 3.x, pinned in
 * package.json, checked by {@link assertParserSupported} when a middleware is created) and fails on a part
 * whose header block is bad. Its 'header' listener runs before busboy's, which emits 'file' from its own.
 */
function checkPartHeaders(
  parser: BusboyInstance,
  { maxPairs, decode, onFieldBytes }: { maxPairs: number; decode: ParamDecoder; onFieldBytes?: (bytes: number) => void },
  fail: (err: Error) => void,
): PartWatch {
  const dicer = innerParser(parser);
  let awaiting = 0;
  let current: Disposition | undefined;
  dicer.on('part', (part: Readable) => {
    // A part cut off inside its headers never gets 'header': `awaiting` stays up and 'finish' fails.
    awaiting++;
    part.prependListener('header', (header: Record<string, string[]>) => { // once per part: no once-wrapper
      awaiting--;
      current = undefined;
      const disposition = header['content-disposition']?.[0];
      if (disposition === undefined || !FORM_DATA.test(disposition)) {
        return fail(new Error('Malformed part header: no form-data Content-Disposition'));
      }
      const parsed = parseDisposition(disposition, decode);
      if (typeof parsed === 'string') return fail(new Error(`Malformed part header: ${parsed}`));
      current = parsed;
      if (onFieldBytes && parsed.filename === undefined) part.on('data', (chunk: Buffer) => onFieldBytes(chunk.length));
      let pairs = 0;
      let bytes = 0;
      for (const name in header) {
        for (const value of header[name]) {
          pairs++;
          bytes += name.length + value.length + 4; // "name: value\r\n"
        }
      }
      if (pairs >= maxPairs) return fail(new Error(`Part header has ${maxPairs} or more lines (limits.headerPairs)`));
      if (bytes > HEADER_SIZE) fail(new Error(`Part header larger than ${HEADER_SIZE} bytes`));
    });
  });
  return { awaitingHeaders: () => awaiting, current: () => current };
}

const SELF_TEST_BOUNDARY = 'express-spool-self-test';
let supported: boolean | undefined;

/**
 * Fails loudly, when a middleware is created rather than on its first request, if the installed
 * @fastify/busboy no longer has the internals the strictness layer hooks: one tiny body is parsed and the
 * hook must see the part's header before busboy reports the file.
 */
export function assertParserSupported(): void {
  if (supported) return;
  const B = SELF_TEST_BOUNDARY;
  const parser = new Busboy({ headers: { 'content-type': `multipart/form-data; boundary=${B}` } as BusboyHeaders });
  const seen: string[] = [];
  let problem: Error | undefined;
  const watch = checkPartHeaders(parser, { maxPairs: 10, decode: (raw) => raw }, (err) => (problem = err));
  parser.on('file', (_name: string, stream: Readable) => {
    seen.push(`file:${watch.current()?.filename}`);
    stream.resume();
  });
  parser.on('error', (err: Error) => (problem = err));
  parser.write(Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="f"; filename="a"; filename*=utf-8''b\r\n\r\nx\r\n--${B}--\r\n`));
  if (problem || seen.join() !== 'file:b') {
    throw new Error(`express-spool: unsupported @fastify/busboy version (self-test saw ${problem?.message ?? (seen.join() || 'no file')})`);
  }
  supported = true;
}
