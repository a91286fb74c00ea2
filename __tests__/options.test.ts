import { spool, diskEngine, spoolEngine, parseSize, MemoryBudget } from '../lib';

describe('option validation happens in the factory', () => {
  test.each([
    [{ threshold: '1 potato' }, /Expected `threshold` to be a byte count/],
    [{ threshold: -1 }, /Expected `threshold`/],
    [{ memoryBudget: {} }, /Expected `memoryBudget`/],
    [{ limits: { fileSize: 'big' } }, /Expected `limits.fileSize`/],
    [{ limits: { files: 1.5 } }, /Expected `limits.files` to be a non-negative integer, got 1.5/],
    [{ limits: 'none' }, /Expected `limits` to be an object/],
    [{ fileFilter: 'x' }, /Expected `fileFilter` to be a function/],
    [{ storage: {} }, /Expected `storage` to be a storage engine/],
    [{ rollover: 'disk' }, /Expected `rollover` to be a storage engine/],
    [{ sha256: 'yes' }, /Expected `sha256` to be a boolean/],
    [{ idleTimeout: -5 }, /Expected `idleTimeout`/],
    [{ destination: './uploads' }, /Unknown option `destination`/],
    [{ dest: 42 }, /Expected `dest` to be a directory or a function/],
    [{ dest: './uploads', threshold: 5 }, /do not combine them with `dest`/],
    [{ storage: diskEngine(), threshold: 5 }, /do not combine/],
  ])('%j', (options, message) => {
    expect(() => spool(options as never)).toThrow(TypeError);
    expect(() => spool(options as never)).toThrow(message);
  });

  test('engine factories validate too', () => {
    expect(() => diskEngine({ directory: '' })).toThrow(/Expected `directory`/);
    expect(() => diskEngine({ lifetime: 'forever' as never })).toThrow(/Expected `lifetime`/);
    expect(() => spoolEngine({ threshold: 'x' })).toThrow(/Expected `threshold`/);
  });

  test('route helpers validate field specs', () => {
    const upload = spool();
    expect(() => upload.single('')).toThrow(/non-empty string/);
    expect(() => upload.array('a', -1)).toThrow(/maxCount/);
    expect(() => upload.fields([{ name: 5 as never }])).toThrow(/non-empty string/);
  });

  test.each([
    [0, 0],
    [1024, 1024],
    ['1MiB', 1048576],
    ['512KB', 512000],
    ['512 kib', 524288],
    ['2GiB', 2147483648],
    ['1.5MiB', 1572864],
    ['10', 10],
    [Infinity, Infinity],
  ])('parseSize(%j) = %d', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  test.each([[-1], ['1 XB'], [''], [1.5], [null], ['MiB']])('parseSize(%j) is undefined', (input) => {
    expect(parseSize(input)).toBeUndefined();
  });

  test('a MemoryBudget instance can be shared between spool() calls', () => {
    const budget = new MemoryBudget('1MiB');
    expect(spool({ memoryBudget: budget }).memoryBudget).toBe(budget);
    expect(spool({ memoryBudget: budget }).memoryBudget).toBe(budget);
  });
});
