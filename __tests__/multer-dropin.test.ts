import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { spool } from '../lib';

// What a multer app meets when it moves over: options checked the same way, and the parser's internals
// checked when the middleware is created rather than on the first request.

const root = join(__dirname, '..');

describe('limits: unknown keys are refused like unknown options', () => {
  test.each(['fileSzie', 'file_size', 'maxFileSize', 'fieldNestingDepth'])('limits.%s', (key) => {
    expect(() => spool({ limits: { [key]: 1 } as never })).toThrow(new TypeError(`Unknown option \`limits.${key}\``));
  });

  test('the top-level message has the same shape', () => {
    expect(() => spool({ dest: 'uploads/' } as never)).toThrow(new TypeError('Unknown option `dest`'));
  });

  test('every documented limit is still accepted', () => {
    expect(() =>
      spool({ limits: { fileSize: '1MiB', files: 1, fields: 1, fieldSize: 1, fieldNameSize: 1, parts: 1, headerPairs: 1 } }),
    ).not.toThrow();
  });
});

describe('@fastify/busboy: pinned, and its internals checked at start-up', () => {
  test('package.json pins the exact installed version, and the lockfile agrees', () => {
    const installed = JSON.parse(readFileSync(join(root, 'node_modules/@fastify/busboy/package.json'), 'utf8')).version;
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
    expect(pkg.dependencies['@fastify/busboy']).toBe(installed);
    expect(lock.packages[''].dependencies['@fastify/busboy']).toBe(installed);
    expect(lock.packages['node_modules/@fastify/busboy'].version).toBe(installed);
  });

  /** Loads the library against a stand-in for @fastify/busboy. */
  function spoolWith(FakeBusboy: unknown): typeof spool {
    let isolated: typeof spool | undefined;
    jest.isolateModules(() => {
      jest.doMock('@fastify/busboy', () => ({ Busboy: FakeBusboy }));
      isolated = require('../lib').spool; // eslint-disable-line @typescript-eslint/no-require-imports
    });
    jest.dontMock('@fastify/busboy');
    return isolated!;
  }

  test('a version without the inner multipart parser fails when the middleware is created', () => {
    class NoInternals extends Writable {}
    expect(() => spoolWith(NoInternals)()).toThrow(/unsupported @fastify\/busboy version \(no multipart parser found\)/);
  });

  test('a version whose inner parser no longer reports part headers fails the self-test', () => {
    class SilentInternals extends Writable {
      _parser = { parser: new EventEmitter() };
      override _write(_chunk: Buffer, _encoding: string, callback: () => void) {
        callback();
      }
    }
    expect(() => spoolWith(SilentInternals)()).toThrow(/unsupported @fastify\/busboy version \(self-test saw no file\)/);
  });

  test('the installed version passes', () => {
    expect(() => spool()).not.toThrow();
  });
});
