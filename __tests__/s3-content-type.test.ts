/**
 * Objects are not stored with the client's Content-Type unless the app opts in: an HTML or SVG upload
 * served from the bucket (or a CDN in front of it) would otherwise run script on that origin.
 */
import { HeadObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { s3Engine, spool, type S3EngineOptions } from '../lib';
import { close, echoApp, listen } from './helpers/app';
import { postMultipart, randomData } from './helpers/multipart';
import { listOpenMultipartUploads, useTestBucket } from './setup/s3-env';

const PART = 5 * 1024 * 1024;
let client: S3Client;
let bucket: string;
useTestBucket((c, b) => ((client = c), (bucket = b)));

/** Uploads one file declared as `type` and returns the stored object's headers and the file the app saw. */
async function store(options: Partial<S3EngineOptions>, type: string, size = 1000) {
  const upload = spool({ storage: s3Engine({ client, bucket, prefix: 'ct/', partSize: PART, ...options }) });
  const server = await listen(echoApp(upload.any()));
  try {
    const res = await postMultipart(server, '/upload', [{ name: 'f', filename: 'x.html', type, data: randomData(size) }]);
    if (res.status !== 200) return { res };
    const file = res.json.files[0];
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: file.key }));
    return { res, file, head };
  } finally {
    await close(server);
  }
}

describe('S3 Content-Type', () => {
  test.each([
    ['text/html', 1000],
    ['image/svg+xml', 1000],
    ['text/html', PART + 1],
  ])('default ("safe"): a %s upload of %i bytes is stored as application/octet-stream, attachment', async (type, size) => {
    const { file, head } = await store({}, type, size);
    expect(file.mimetype).toBe(type); // the app still sees what the client claimed
    expect(head!.ContentType).toBe('application/octet-stream');
    expect(head!.ContentDisposition).toBe('attachment');
  });

  test.each([1000, PART + 1])('contentType "client": a text/html upload of %i bytes keeps text/html', async (size) => {
    const { head } = await store({ contentType: 'client' }, 'text/html', size);
    expect(head!.ContentType).toBe('text/html');
    expect(head!.ContentDisposition).toBeUndefined();
  });

  test('contentType(file, req): an allow-list keeps inert types and neutralises the rest', async () => {
    const inert = new Set(['image/png', 'image/jpeg', 'application/pdf']);
    const contentType = (file: { mimetype: string }) => (inert.has(file.mimetype) ? file.mimetype : 'application/octet-stream');
    expect((await store({ contentType }, 'image/png')).head!.ContentType).toBe('image/png');
    expect((await store({ contentType }, 'text/html')).head!.ContentType).toBe('application/octet-stream');
  });

  test('params.ContentType and params.ContentDisposition win over the default', async () => {
    const { head } = await store({ params: { ContentType: 'text/plain; charset=utf-8', ContentDisposition: 'inline' } }, 'text/html');
    expect(head!.ContentType).toBe('text/plain; charset=utf-8');
    expect(head!.ContentDisposition).toBe('inline');
  });

  test('a contentType function that returns no type fails the upload (500 STORAGE_FAILED), nothing is stored', async () => {
    const { res } = await store({ contentType: () => '', prefix: 'ct-fail/' }, 'text/html', PART + 1);
    expect(res.status).toBe(500);
    expect(res.json.error.code).toBe('STORAGE_FAILED');
    expect(await listOpenMultipartUploads(client, bucket)).toEqual([]);
    expect((await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'ct-fail/' }))).Contents ?? []).toEqual([]);
  });

  test('contentType is validated when the engine is created', () => {
    expect(() => s3Engine({ client, bucket, contentType: 'sniff' as never })).toThrow(
      new TypeError("Expected `contentType` to be 'safe', 'client' or a function, got \"sniff\""),
    );
  });
});
