/**
 * toS3Error, fed with real failures: answers from the real S3 server (missing bucket, bad signature),
 * a closed port, a reset connection, a socket that goes quiet, and HTTP servers that answer 503 / 504 / 500
 * the way S3 and gateways in front of it do.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { SpoolError } from '../lib';
import { toS3Error } from '../engines/s3-errors';
import { s3TestClient, useTestBucket } from './setup/s3-env';

let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the request to fail, it succeeded');
}

/** A client for `endpoint` that tries once and gives up on a silent socket after 300 ms. */
function clientFor(endpoint: string): S3Client {
  return s3TestClient({ endpoint, maxAttempts: 1, requestHandler: { socketTimeout: 300 } as never });
}

/** A throw-away server on a free port; `fn` gets its URL. */
async function withServer<T>(server: net.Server, fn: (url: string) => Promise<T>): Promise<T> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    return await fn(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    (server as http.Server).closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
}

/** An HTTP server answering every request with `status` and, when given, an S3 error document. */
function answering(status: number, code?: string): http.Server {
  return http.createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/xml' });
    res.end(code ? `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>try later</Message></Error>` : 'gateway says no');
  });
}

function expectMapped(mapped: SpoolError, code: string, status: number, cause: unknown) {
  expect(mapped).toBeInstanceOf(SpoolError);
  expect({ code: mapped.code, status: mapped.status }).toEqual({ code, status });
  expect(mapped.cause).toBe(cause);
}

describe('toS3Error with real S3 failures', () => {
  test('NoSuchBucket from the S3 server → STORAGE_FAILED 502, named in the message', async () => {
    const err = await failureOf(client.send(new GetObjectCommand({ Bucket: `${bucket}-missing`, Key: 'x' })));
    const mapped = toS3Error(err);
    expectMapped(mapped, 'STORAGE_FAILED', 502, err);
    expect(mapped.message).toMatch(/^S3 NoSuchBucket: /);
  });

  test('a wrong secret (SignatureDoesNotMatch, 403) → STORAGE_FAILED 502', async () => {
    const bad = s3TestClient({ secretAccessKey: 'wrong' });
    try {
      const err = await failureOf(bad.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'x' })));
      expect((err as Error).name).toBe('SignatureDoesNotMatch');
      expectMapped(toS3Error(err), 'STORAGE_FAILED', 502, err);
    } finally {
      bad.destroy();
    }
  });

  test('a missing key on HEAD (404 without a body) → STORAGE_FAILED 502', async () => {
    const err = await failureOf(client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'nope' })));
    expectMapped(toS3Error(err), 'STORAGE_FAILED', 502, err);
  });

  test('a closed port (ECONNREFUSED) → STORAGE_UNAVAILABLE 503', async () => {
    const port = await withServer(net.createServer(), async (url) => Number(new URL(url).port)); // free, now closed
    const closed = clientFor(`http://127.0.0.1:${port}`);
    try {
      const err = await failureOf(closed.send(new HeadObjectCommand({ Bucket: bucket, Key: 'x' })));
      // In a plain process the error keeps code ECONNREFUSED; under jest (another realm) the SDK wraps it and
      // only the message and $metadata survive, so the mapping must not depend on the code.
      expect((err as Error).message).toMatch(/ECONNREFUSED/);
      expectMapped(toS3Error(err), 'STORAGE_UNAVAILABLE', 503, err);
    } finally {
      closed.destroy();
    }
  });

  test('a connection reset before any answer → STORAGE_UNAVAILABLE 503', async () => {
    await withServer(net.createServer((socket) => socket.destroy()), async (url) => {
      const resetting = clientFor(url);
      try {
        const err = await failureOf(resetting.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'x' })));
        expectMapped(toS3Error(err), 'STORAGE_UNAVAILABLE', 503, err);
      } finally {
        resetting.destroy();
      }
    });
  });

  test('a store that accepts the connection and never answers (socket timeout) → STORAGE_UNAVAILABLE 503', async () => {
    await withServer(http.createServer(() => undefined), async (url) => {
      const silent = clientFor(url);
      try {
        const err = await failureOf(silent.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'x' })));
        expect((err as Error).name).toBe('TimeoutError');
        expectMapped(toS3Error(err), 'STORAGE_UNAVAILABLE', 503, err);
      } finally {
        silent.destroy();
      }
    });
  });

  test.each([
    [503, 'SlowDown', 'STORAGE_UNAVAILABLE', 503],
    [503, 'ServiceUnavailable', 'STORAGE_UNAVAILABLE', 503],
    [504, undefined, 'STORAGE_UNAVAILABLE', 503], // a gateway in front of the store, no S3 error document
    [500, 'InternalError', 'STORAGE_FAILED', 502],
  ])('an HTTP %i answer (%s) → %s %i', async (status, code, expected, expectedStatus) => {
    await withServer(answering(status, code), async (url) => {
      const answered = clientFor(url);
      try {
        const err = await failureOf(answered.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'x' })));
        expect((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode).toBe(status);
        if (code) expect((err as Error).name).toBe(code);
        expectMapped(toS3Error(err), expected, expectedStatus, err);
      } finally {
        answered.destroy();
      }
    });
  });

  test('an error that is not the SDK\'s (a bug, a bad configuration) → STORAGE_FAILED 500, not an outage', () => {
    const bug = new TypeError('Cannot read properties of undefined');
    expectMapped(toS3Error(bug), 'STORAGE_FAILED', 500, bug);
    expect(toS3Error('a string').message).toBe('S3 Error: a string');
  });

  test('a SpoolError passes through unchanged', () => {
    const limit = new SpoolError('LIMIT_FILE_SIZE');
    expect(toS3Error(limit)).toBe(limit);
  });
});
