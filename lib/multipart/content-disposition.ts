import { TextDecoder } from 'node:util';
import { describe } from '../core/sizes';

/** Turns the raw bytes of a header parameter (held as a latin1 string, one char per byte) into text. */
export type ParamDecoder = (raw: string) => string;

/** Default charset of parameters without their own (`filename="…"`): browsers send UTF-8 bytes. */
export const DEFAULT_PARAM_CHARSET = 'utf8';

const UTF8 = new Set(['utf8', 'utf-8']);
// busboy's aliases for its latin1 decoder (multer's default `defParamCharset` is 'latin1').
const LATIN1 = new Set([
  'latin1', 'ascii', 'us-ascii', 'iso-8859-1', 'iso8859-1', 'iso88591', 'iso_8859-1', 'windows-1252',
  'iso_8859-1:1987', 'cp1252', 'x-cp1252',
]);
const UTF16LE = new Set(['utf16le', 'utf-16le', 'ucs2', 'ucs-2']);
const NON_ASCII = /[^\x00-\x7f]/;

/** A decoder for `charset` (busboy's names, or any label TextDecoder knows); undefined when unknown. */
export function paramDecoder(charset: string): ParamDecoder | undefined {
  const name = charset.toLowerCase();
  if (UTF8.has(name)) return (raw) => (NON_ASCII.test(raw) ? Buffer.from(raw, 'latin1').toString('utf8') : raw);
  if (LATIN1.has(name)) return (raw) => raw;
  if (UTF16LE.has(name)) return (raw) => Buffer.from(raw, 'latin1').toString('utf16le');
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(name);
  } catch {
    return undefined;
  }
  return (raw) => decoder.decode(Buffer.from(raw, 'latin1'));
}

/** Validates the `defParamCharset` option. */
export function charsetOption(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || paramDecoder(value) === undefined) {
    throw new TypeError(`Expected \`${name}\` to be a charset such as 'utf8' or 'latin1', got ${describe(value)}`);
  }
  return value;
}

export interface Disposition {
  /** The disposition type, lower-cased (`form-data`). */
  type: string;
  name?: string;
  filename?: string;
}

const LINE_BREAK = /[\r\n]/;
const PERCENT = /%([0-9a-f]{2})/gi;

/**
 * Parses a part's Content-Disposition. The extended form wins over the plain one whatever their order
 * (`filename*` over `filename`, RFC 6266 §4.3; `name*` over `name`), the first of two equal names wins
 * (busboy's rule). Returns a reason string when the header is malformed or a name holds a line break:
 * the parser would otherwise skip such a part silently or cut its name short.
 */
export function parseDisposition(header: string, decode: ParamDecoder): Disposition | string {
  const semicolon = header.indexOf(';');
  const type = (semicolon === -1 ? header : header.slice(0, semicolon)).trim().toLowerCase();
  // Only four parameters matter; plain locals instead of a map (this runs once per part).
  let name: string | undefined;
  let nameExt: string | undefined;
  let filename: string | undefined;
  let filenameExt: string | undefined;
  let i = semicolon === -1 ? header.length : semicolon + 1;
  while (i < header.length) {
    const equals = header.indexOf('=', i);
    const next = header.indexOf(';', i);
    if (equals === -1 || (next !== -1 && next < equals)) {
      // A bare token or an empty parameter (`; ;`): nothing we read.
      i = next === -1 ? header.length : next + 1;
      continue;
    }
    const key = header.slice(i, equals).trim().toLowerCase();
    let value: string;
    i = equals + 1;
    while (header[i] === ' ' || header[i] === '\t') i++;
    if (key.endsWith('*')) {
      const end = header.indexOf(';', i);
      const extended = decodeExtended(header.slice(i, end === -1 ? header.length : end).trim());
      if (extended === undefined) return `bad extended parameter ${key}`;
      value = extended;
      i = end === -1 ? header.length : end + 1;
    } else if (header[i] === '"') {
      const quoted = readQuoted(header, i + 1);
      if (quoted === undefined) return `unterminated quoted ${key}`;
      value = decode(quoted.value);
      // Anything between the closing quote and the next ';' is ignored, as busboy does.
      const end = header.indexOf(';', quoted.end);
      i = end === -1 ? header.length : end + 1;
    } else {
      const end = header.indexOf(';', i);
      value = decode(header.slice(i, end === -1 ? header.length : end).trim());
      i = end === -1 ? header.length : end + 1;
    }
    // The first of two equal names wins.
    if (key === 'name') name ??= value;
    else if (key === 'filename') filename ??= value;
    else if (key === 'name*') nameExt ??= value;
    else if (key === 'filename*') filenameExt ??= value;
  }
  name = nameExt ?? name;
  filename = filenameExt ?? filename;
  if (name !== undefined && LINE_BREAK.test(name)) return 'line break in the field name';
  if (filename !== undefined && LINE_BREAK.test(filename)) return 'line break in the filename';
  return { type, name, filename };
}

/**
 * The value of parameter `key` (lower case) in a header such as a Content-Type (`type/sub; key=value`),
 * quoted-strings read as such: a `;` or `key=` inside another parameter's quotes is not a parameter.
 * undefined when absent or unreadable.
 */
export function headerParam(header: string, key: string): string | undefined {
  let i = header.indexOf(';');
  if (i === -1) return undefined;
  i++;
  while (i < header.length) {
    const equals = header.indexOf('=', i);
    const next = header.indexOf(';', i);
    if (equals === -1) return undefined;
    if (next !== -1 && next < equals) {
      i = next + 1;
      continue;
    }
    const name = header.slice(i, equals).trim().toLowerCase();
    i = equals + 1;
    while (header[i] === ' ' || header[i] === '\t') i++;
    let value: string;
    if (header[i] === '"') {
      const quoted = readQuoted(header, i + 1);
      if (quoted === undefined) return undefined;
      value = quoted.value;
      const end = header.indexOf(';', quoted.end);
      i = end === -1 ? header.length : end + 1;
    } else {
      const end = header.indexOf(';', i);
      // A token ends at whitespace; what follows it up to the next ';' is ignored.
      value = header.slice(i, end === -1 ? header.length : end).trim().split(/[ \t]/, 1)[0];
      i = end === -1 ? header.length : end + 1;
    }
    if (name === key) return value;
  }
  return undefined;
}

/** A quoted-string from `start` (after the opening quote): `\"` and `\\` unescape, other backslashes stay (Windows paths). */
function readQuoted(header: string, start: number): { value: string; end: number } | undefined {
  let value = '';
  let from = start;
  for (let i = start; i < header.length; i++) {
    const char = header[i];
    if (char === '"') return { value: value + header.slice(from, i), end: i + 1 };
    if (char === '\\' && (header[i + 1] === '"' || header[i + 1] === '\\')) {
      value += header.slice(from, i);
      from = i + 1;
      i++;
    }
  }
  return undefined;
}

/** RFC 8187 `charset'lang'pct-encoded`; undefined when malformed or the charset is unknown. */
function decodeExtended(raw: string): string | undefined {
  const first = raw.indexOf("'");
  const second = first === -1 ? -1 : raw.indexOf("'", first + 1);
  if (second === -1) return undefined;
  const decode = paramDecoder(raw.slice(0, first));
  if (decode === undefined) return undefined;
  return decode(raw.slice(second + 1).replace(PERCENT, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))));
}
