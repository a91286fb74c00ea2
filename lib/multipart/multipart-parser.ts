import type { IncomingHttpHeaders } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { Dicer } from '@fastify/busboy';
import { DEFAULT_PARAM_CHARSET, headerParam, paramDecoder, parseDisposition, type ParamDecoder } from './content-disposition';
import { ByteList } from '../core/byte-list';
import { basename } from '../core/client-filename';
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
  /** A file part: its bytes as they come (`limits.fileSize` is the core's to apply, see FileTap). */
  onFile(name: string | undefined, stream: Readable, info: FileStreamInfo): void;
  onLimit(code: Extract<SpoolErrorCode, 'LIMIT_PART_COUNT' | 'LIMIT_FILE_COUNT' | 'LIMIT_FIELD_COUNT'>): void;
  onError(err: Error): void;
  onDone(): void;
}

/** Max bytes of one part's header block; a longer one is malformed rather than silently cut. */
const HEADER_SIZE = 16 * 1024;
/** The most lines the parser's own size cap (2 × HEADER_SIZE) can hold: "a:\r\n" is 4 bytes. */
const MAX_HEADER_LINES = (HEADER_SIZE * 2) / 4;
/** RFC 2046: a boundary is 1 to 70 characters. */
const MAX_BOUNDARY = 70;
const FORM_DATA = /^\s*form-data\s*(?:;|$)/i;
/** Text fields without a charset of their own are UTF-8 (busboy's and multer's default). */
const FIELD_CHARSET = 'utf8';
const decodeUtf8 = paramDecoder(FIELD_CHARSET) as ParamDecoder;

export interface ParserOptions {
  limits: ResolvedLimits;
  preservePath: boolean;
  /** Charset of parameters without their own (`filename="…"`), multer's `defParamCharset`. @default 'utf8' */
  defParamCharset?: string;
  /** Charset of text field values whose part declares none, multer's `defCharset`. @default 'utf8' */
  defCharset?: string;
}

type CountLimit = 'LIMIT_PART_COUNT' | 'LIMIT_FILE_COUNT' | 'LIMIT_FIELD_COUNT';
const COUNT_LIMITS: Record<CountLimit, number> = { LIMIT_PART_COUNT: 1, LIMIT_FILE_COUNT: 2, LIMIT_FIELD_COUNT: 4 };

type PartHeader = Record<string, string[] | undefined>;

/**
 * The multipart reader: @fastify/busboy's Dicer (its public boundary and header parser) with our own part
 * layer on top, in place of busboy's. Each file's part stream goes to the core as it is: no second
 * Readable per file, no second hop per chunk, and part headers are read once, by us. The file size limit
 * is the core's (FileTap counts every byte anyway); the counts and the field size are applied here.
 * Stricter than busboy where busboy is lenient: a part whose headers are missing, cut off, too large or not `form-data`, or
 * whose name or filename holds a line break, is an error here, not a silently skipped part. Names and
 * filenames come from our own reading of the Content-Disposition (`filename*` wins, multer's
 * `defParamCharset`). Counts, field truncation and field decoding behave as busboy's (and so multer's) do.
 */
export function createMultipartParser(
  requestHeaders: IncomingHttpHeaders,
  options: ParserOptions,
  events: ParserEvents,
): Writable {
  const { limits, preservePath } = options;
  const paramCharset = paramDecoder(options.defParamCharset ?? DEFAULT_PARAM_CHARSET);
  if (!paramCharset) throw new TypeError(`Unknown defParamCharset ${options.defParamCharset}`);
  const decode: ParamDecoder = paramCharset;
  const defaultCharset = options.defCharset ?? FIELD_CHARSET;
  const parser = new Dicer({
    boundary: boundaryOf(requestHeaders['content-type']),
    // Every line its size cap lets through is parsed, so that the header block's size is measured whole
    // (below); lines past limits.headerPairs are ignored, as busboy (and so multer) ignores them: only
    // Content-Disposition and Content-Type are read.
    maxHeaderPairs: Math.max(limits.headerPairs, MAX_HEADER_LINES),
    // Twice our limit: the parser cuts silently past its own, we measure and refuse past ours.
    maxHeaderSize: HEADER_SIZE * 2,
  } as Dicer.Config);

  let failed = false;
  let finished = false;
  let parts = 0;
  let files = 0;
  let fields = 0;
  /** Parts whose header block has not been read yet: one cut off inside its headers fails the parse. */
  let awaitingHeaders = 0;
  /** The text field being read (one at a time: parts come in order) and what it has so far. */
  let field: Readable | undefined;
  let fieldName: string | undefined;
  let fieldValue = new ByteList();
  let fieldBytes = 0;
  let fieldCharset = FIELD_CHARSET;

  const fail = (err: Error): void => {
    if (failed) return;
    failed = true;
    events.onError(err);
  };
  const failPart = (part: Readable, reason: string): void => {
    fail(new Error(`Malformed part header: ${reason}`));
    part.resume();
  };
  const onPartError = (err: Error): void => fail(err);

  function onFieldData(this: Readable, chunk: Buffer): void {
    if (this !== field) return;
    if (fieldBytes + chunk.length > limits.fieldSize) {
      // Cut at the limit and reported now, not at the field's end: a client may keep sending it for as
      // long as it likes.
      const take = limits.fieldSize - fieldBytes;
      fieldValue.push(chunk.subarray(0, take));
      events.onFieldBytes?.(take);
      reportField(true);
      return;
    }
    fieldBytes += chunk.length;
    fieldValue.push(chunk);
    events.onFieldBytes?.(chunk.length);
  }

  /** Reports the field being read; at its own 'end', or earlier when the next part begins (see 'part'). */
  function endField(this: Readable): void {
    if (this !== field) return;
    reportField(false);
  }

  /** Reports the field being read with what it has so far, and stops reading it. */
  function reportField(truncated: boolean): void {
    field = undefined;
    const chunks = fieldValue.take();
    if (failed) return;
    const raw = chunks.length === 1 ? chunks[0].toString('latin1') : Buffer.concat(chunks).toString('latin1');
    const decodeValue = fieldCharset === FIELD_CHARSET ? decodeUtf8 : (paramDecoder(fieldCharset) ?? keepRaw);
    events.onField(fieldName, raw.length === 0 ? '' : decodeValue(raw), truncated);
  }

  /**
   * Reports the field being read, if any, once its part has ended: its last bytes may still sit in its
   * stream's buffer (its 'data' and 'end' events come a tick later), so they are read out first.
   */
  function flushField(): void {
    const open = field;
    if (open === undefined) return;
    while (open.read() !== null);
    endField.call(open);
  }

  function onHeader(this: Readable, header: PartHeader): void {
    awaitingHeaders--;
    if (failed) return void this.resume();
    const rawDisposition = header['content-disposition']?.[0];
    if (rawDisposition === undefined || !FORM_DATA.test(rawDisposition)) {
      return failPart(this, 'no form-data Content-Disposition');
    }
    const disposition = parseDisposition(rawDisposition, decode);
    if (typeof disposition === 'string') return failPart(this, disposition);
    let bytes = 0;
    for (const name in header) {
      for (const value of header[name] as string[]) bytes += name.length + value.length + 4; // "name: value\r\n"
    }
    if (bytes > HEADER_SIZE) return failPart(this, `larger than ${HEADER_SIZE} bytes`);

    const contentType = header['content-type']?.[0];
    const type = mediaType(contentType);
    // busboy's (and so multer's) rule: a non-empty filename, or bytes typed as such, make a file.
    if (disposition.filename || type === 'application/octet-stream') {
      if (files === limits.files) return skipOverLimit(this, 'LIMIT_FILE_COUNT');
      files++;
      const { filename } = disposition;
      events.onFile(disposition.name, this, {
        filename: filename === undefined || preservePath ? filename : basename(filename),
        encoding: header['content-transfer-encoding']?.[0].toLowerCase() ?? '7bit',
        mimeType: type,
      });
      return;
    }
    if (fields === limits.fields) return skipOverLimit(this, 'LIMIT_FIELD_COUNT');
    fields++;
    field = this;
    fieldName = disposition.name;
    fieldBytes = 0;
    fieldValue = new ByteList();
    fieldCharset = charsetOf(contentType, defaultCharset);
    this.on('data', onFieldData).on('end', endField);
  }

  /** The count limits reported so far (each once, as busboy does): bits of COUNT_LIMITS. */
  let limitsHit = 0;
  function skipOverLimit(part: Readable, code: CountLimit): void {
    part.resume();
    if (limitsHit & COUNT_LIMITS[code]) return;
    limitsHit |= COUNT_LIMITS[code];
    events.onLimit(code);
  }

  parser
    .on('part', (part: Readable) => {
      // Reported before the next part, as busboy does: a fileFilter sees it in req.body.
      flushField();
      part.on('error', onPartError);
      if (failed) return void part.resume();
      if (++parts > limits.parts) return skipOverLimit(part, 'LIMIT_PART_COUNT');
      // A part cut off inside its headers never gets 'header': `awaitingHeaders` stays up and 'finish' fails.
      awaitingHeaders++;
      part.on('header', onHeader); // once per part: no once-wrapper needed
    })
    .on('error', (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))))
    .on('finish', () => {
      if (finished) return;
      finished = true;
      // Dicer may finish before the last field's 'end' (it does not wait for a part whose last bytes came
      // before its closing boundary): the field is reported first.
      flushField();
      if (awaitingHeaders > 0) fail(new Error('Malformed part header: part ended inside its headers'));
      if (!failed) events.onDone();
    });
  return parser;
}

function keepRaw(raw: string): string {
  return raw;
}

/** The boundary parameter of the request's Content-Type (quoted or not). */
function boundaryOf(contentType: string | string[] | undefined): string {
  const boundary = headerParam(String(contentType), 'boundary');
  if (!boundary) throw new Error('Multipart: Boundary not found');
  if (boundary.length > MAX_BOUNDARY) throw new Error(`Boundary longer than ${MAX_BOUNDARY} characters`);
  return boundary;
}

/** A part's media type, lower-cased, without parameters; `text/plain` when it has none (busboy's default). */
function mediaType(contentType: string | undefined): string {
  if (contentType === undefined) return 'text/plain';
  const semicolon = contentType.indexOf(';');
  const type = (semicolon === -1 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
  return type === '' ? 'text/plain' : type;
}

function charsetOf(contentType: string | undefined, fallback: string): string {
  if (contentType === undefined) return fallback;
  return headerParam(contentType, 'charset')?.toLowerCase() || fallback;
}

const SELF_TEST_BOUNDARY = 'express-spool-self-test';
let supported: boolean | undefined;

/**
 * Fails loudly, when a middleware is created rather than on its first request, if the installed
 * @fastify/busboy's Dicer no longer works the way this reader relies on (parts in order, each part's
 * headers before its bytes, a file's bytes readable from its part stream): one tiny body is parsed and checked.
 */
export function assertParserSupported(): void {
  if (supported) return;
  if (typeof Dicer !== 'function') throw new Error('express-spool: unsupported @fastify/busboy version (no Dicer export)');
  const B = SELF_TEST_BOUNDARY;
  const limits = { fileSize: 10, files: 1, fields: 1, fieldSize: 10, fieldNameSize: 10, parts: 2, headerPairs: 10 };
  const seen: string[] = [];
  let problem: Error | undefined;
  let file: Readable | undefined;
  const parser = createMultipartParser({ 'content-type': `multipart/form-data; boundary=${B}` }, { limits, preservePath: false }, {
    onField: (name, value) => seen.push(`field:${name}=${value}`),
    onFile: (name, stream, info) => {
      file = stream;
      seen.push(`file:${name}:${info.filename}`);
    },
    onLimit: (code) => seen.push(code),
    onError: (err) => (problem = err),
    onDone: () => {},
  });
  // The file's bytes come in a second write, after its headers: they must be in its stream by then.
  parser.write(
    Buffer.from(
      `--${B}\r\nContent-Disposition: form-data; name="t"\r\n\r\nv\r\n` +
        `--${B}\r\nContent-Disposition: form-data; name="f"; filename="a"; filename*=utf-8''b\r\n\r\n`,
    ),
  );
  parser.write(Buffer.from(`xyzw\r\n--${B}--\r\n`));
  seen.push(`bytes:${file?.read()}`);
  if (problem || seen.join() !== 'field:t=v,file:f:b,bytes:xyzw') {
    throw new Error(`express-spool: unsupported @fastify/busboy version (self-test saw ${problem?.message ?? (seen.join() || 'nothing')})`);
  }
  supported = true;
}
