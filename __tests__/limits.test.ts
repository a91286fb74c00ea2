import request from 'supertest';
import { spool, diskEngine, type SpoolOptions } from '../lib';
import { echoApp, tempDir } from './helpers/app';
import { BOUNDARY, multipartBody, type Part } from './helpers/multipart';

const dir = tempDir();
afterAll(() => dir.remove());

function post(options: SpoolOptions, parts: Part[], route: 'any' | 'single' | 'none' = 'any') {
  const upload = spool({ rollover: diskEngine({ directory: dir.path }), threshold: 16, ...options });
  const middleware = route === 'single' ? upload.single('file') : route === 'none' ? upload.none() : upload.any();
  return request(echoApp(middleware))
    .post('/upload')
    .set('content-type', `multipart/form-data; boundary=${BOUNDARY}`)
    .send(multipartBody(parts));
}

const file = (name: string, size: number, filename = 'f.bin'): Part => ({ name, filename, data: Buffer.alloc(size, 7) });
const field = (name: string, value: string): Part => ({ name, value });

describe('limits', () => {
  test.each([
    ['LIMIT_FILE_SIZE', { limits: { fileSize: 100 } }, [file('a', 101)], 'any', 413],
    ['LIMIT_FILE_SIZE (rolled over to disk)', { limits: { fileSize: 1000 } }, [file('a', 5000)], 'any', 413],
    ['LIMIT_FILE_COUNT', { limits: { files: 2 } }, [file('a', 1), file('b', 1), file('c', 1)], 'any', 413],
    ['LIMIT_FIELD_COUNT', { limits: { fields: 1 } }, [field('a', '1'), field('b', '2')], 'any', 413],
    ['LIMIT_FIELD_VALUE', { limits: { fieldSize: 4 } }, [field('a', '12345')], 'any', 413],
    ['LIMIT_FIELD_KEY', { limits: { fieldNameSize: 3 } }, [field('abcd', '1')], 'any', 413],
    ['LIMIT_PART_COUNT', { limits: { parts: 2 } }, [field('a', '1'), field('b', '2'), file('c', 1)], 'any', 413],
    ['LIMIT_UNEXPECTED_FILE', {}, [file('other', 10)], 'single', 400],
    ['LIMIT_UNEXPECTED_FILE (second file in single)', {}, [file('file', 10), file('file', 10)], 'single', 400],
    ['LIMIT_UNEXPECTED_FILE (none)', {}, [file('x', 10)], 'none', 400],
    ['MISSING_FIELD_NAME', {}, [file('', 10)], 'any', 400],
  ] as const)('%s', async (label, options, parts, route, status) => {
    const code = label.split(' ')[0];
    const res = await post(options as SpoolOptions, [...parts], route);
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
    expect(dir.files()).toEqual([]);
  });

  test('a file exactly at fileSize is accepted', async () => {
    const res = await post({ limits: { fileSize: 100 } }, [file('a', 100)]);
    expect(res.status).toBe(200);
    expect(res.body.files[0].size).toBe(100);
    expect(dir.files()).toEqual([res.body.files[0].filename]);
    dir.remove();
    require('node:fs').mkdirSync(dir.path);
  });

  test('field names and fileSize errors report the field', async () => {
    const res = await post({ limits: { fileSize: 10 } }, [file('avatar', 50)]);
    expect(res.body.error.field).toBe('avatar');
  });
});

describe('malformed bodies', () => {
  const app = () => echoApp(spool({ rollover: diskEngine({ directory: dir.path }) }).any());
  const send = (contentType: string, body: Buffer | string) =>
    request(app()).post('/upload').set('content-type', contentType).send(Buffer.from(body));

  test.each([
    ['no boundary', 'multipart/form-data', multipartBody([field('a', '1')])],
    ['truncated body', `multipart/form-data; boundary=${BOUNDARY}`, multipartBody([file('f', 1000)]).subarray(0, 600)],
    [
      'bad part header',
      `multipart/form-data; boundary=${BOUNDARY}`,
      `--${BOUNDARY}\r\nContent-Disposition form-data name\r\n\r\nx\r\n--${BOUNDARY}--\r\n`,
    ],
    [
      'folded header (leading space)',
      `multipart/form-data; boundary=${BOUNDARY}`,
      `--${BOUNDARY}\r\n Content-Disposition: form-data; name="a"\r\n\r\nx\r\n--${BOUNDARY}--\r\n`,
    ],
    [
      'header followed directly by the closing boundary',
      `multipart/form-data; boundary=${BOUNDARY}`,
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n--${BOUNDARY}--\r\n`,
    ],
    ['empty body', `multipart/form-data; boundary=${BOUNDARY}`, ''],
  ])('%s → 400 MALFORMED_MULTIPART', async (_label, contentType, body) => {
    const res = await send(contentType, body as Buffer | string);
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('MALFORMED_MULTIPART');
    expect(dir.files()).toEqual([]);
  });

  test('non-multipart requests pass through untouched', async () => {
    const res = await request(app()).post('/upload').send({ hello: 'world' });
    expect(res.status).toBe(200);
    expect(res.body.files).toBeUndefined();
  });
});
