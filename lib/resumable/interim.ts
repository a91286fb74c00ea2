import type { IncomingMessage, ServerResponse } from 'node:http';

type RawResponse = ServerResponse & { _writeRaw?: (data: string, encoding: BufferEncoding) => boolean };
type Http2Response = ServerResponse & { stream?: { additionalHeaders?: (headers: Record<string, string | number>) => void } };

const SAFE_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Whether `res` can still carry interim responses: HTTP/1.1 (through `_writeRaw`) or HTTP/2 (through
 * `stream.additionalHeaders()`), and its final response has not started. HTTP/1.0 clients cannot take 1xx.
 */
export function canSendInterim(req: IncomingMessage, res: ServerResponse): boolean {
  if (res.headersSent || res.writableEnded || res.destroyed) return false;
  if (req.httpVersionMajor === 2) return typeof (res as Http2Response).stream?.additionalHeaders === 'function';
  return req.httpVersionMajor === 1 && req.httpVersionMinor >= 1 && typeof (res as RawResponse)._writeRaw === 'function';
}

/**
 * Sends `104 Upload Resumption Supported` before the final response. Node has public APIs for 100, 102
 * and 103 only; each of them writes its interim head with `OutgoingMessage#_writeRaw`, which queues it in
 * order with the rest of the response — the same path is used here (HTTP/1.1). HTTP/2 responses use the
 * public `stream.additionalHeaders()`. HTTP/1.0 clients cannot take 1xx responses and get none.
 * Returns whether it was sent.
 */
export function sendUploadResumptionSupported(req: IncomingMessage, res: ServerResponse, headers: Record<string, string>): boolean {
  if (!canSendInterim(req, res)) return false;
  for (const value of Object.values(headers)) if (!SAFE_VALUE.test(value)) return false;
  if (req.httpVersionMajor === 2) {
    (res as Http2Response).stream!.additionalHeaders!({ ':status': 104, ...headers });
    return true;
  }
  let head = 'HTTP/1.1 104 Upload Resumption Supported\r\n';
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  (res as RawResponse)._writeRaw!(`${head}\r\n`, 'latin1');
  return true;
}
