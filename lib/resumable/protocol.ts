import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SpoolError } from '../core/errors';
import type { Checksum } from './checksum';
import type { ResumableConfig, ResumableProtocol } from './options';
import type { ResumableUpload } from './upload-store';

/** What a creation request asks for, whatever protocol it speaks. */
export interface CreateIntent {
  readonly length?: number;
  readonly metadata: Record<string, string | null>;
  readonly concat?: { readonly kind: 'partial' } | { readonly kind: 'final'; readonly parts: readonly string[] };
  /** IETF: the request's Upload-Complete. tus: undefined (an upload completes when offset reaches length). */
  readonly complete?: boolean;
  readonly hasBody: boolean;
  readonly checksum?: Checksum;
  readonly extra: Record<string, string>;
}

/** What an append (PATCH, or the body of a creation) asks for. */
export interface AppendIntent {
  readonly offset: number;
  readonly length?: number;
  readonly complete?: boolean;
  readonly checksum?: Checksum;
}

/** A protocol front-end: reads its headers into intents, writes the answers. Knows nothing of stores. */
export interface Protocol {
  readonly name: ResumableProtocol;
  /** Throws UNSUPPORTED_PROTOCOL_VERSION when the request's version is not one we speak. */
  checkVersion(req: IncomingMessage): void;
  /**
   * Whether an upload is complete once its offset reaches its declared length (tus; the IETF drafts
   * tus-js-client speaks), as opposed to only when a request says Upload-Complete: ?1 (newer IETF drafts).
   */
  completesAtLength(req: IncomingMessage): boolean;
  create(req: IncomingMessage): CreateIntent;
  append(req: IncomingMessage): AppendIntent;
  /** Whether the request may get 104s at all (IETF: only one naming its interop version); default yes. */
  acceptsInterim?(req: IncomingMessage): boolean;
  /** Whether an append that goes past the upload's length makes the upload invalid (IETF interop ≥ 7). */
  invalidatesOnOverrun?(req: IncomingMessage): boolean;
  /** 104 headers announcing a new upload (IETF); undefined when the protocol has none. */
  interim?(req: IncomingMessage, location: string, config: ResumableConfig): Record<string, string> | undefined;
  /**
   * 104 headers reporting progress (`offset` durably stored) while a request's body streams (IETF);
   * `location` is the creation's, repeated as the draft asks of every interim response of a creation.
   * Undefined when the protocol has none (tus).
   */
  progress?(req: IncomingMessage, offset: number, location: string | undefined): Record<string, string>;
  created(req: IncomingMessage, res: ServerResponse, upload: ResumableUpload, location: string, config: ResumableConfig): void;
  status(req: IncomingMessage, res: ServerResponse, upload: ResumableUpload, config: ResumableConfig, locationOf: (id: string) => string): void;
  appended(req: IncomingMessage, res: ServerResponse, upload: ResumableUpload, config: ResumableConfig): void;
  removed(req: IncomingMessage, res: ServerResponse): void;
  options(req: IncomingMessage, res: ServerResponse, config: ResumableConfig): void;
  error(req: IncomingMessage, res: ServerResponse, err: SpoolError, config: ResumableConfig, upload: ResumableUpload | undefined, intent?: AppendIntent): void;
}

const INTEGER = /^\d{1,15}$/;

/** A non-negative integer header (tus values, structured-field Integers); absent → undefined. */
export function integerHeader(req: IncomingMessage, name: string, error: () => SpoolError): number | undefined {
  const value = req.headers[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !INTEGER.test(value.trim())) throw error();
  return Number(value.trim());
}

export function stringHeader(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** Whether the request carries a body (Content-Length > 0 or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length !== '0';
}

export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}
