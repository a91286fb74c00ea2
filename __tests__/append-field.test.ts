import express from 'express';
import fc from 'fast-check';
import request from 'supertest';
import { spool } from '../lib';
import { appendField, createBody, type FieldObject } from '../lib/multipart/append-field';
/* eslint-disable @typescript-eslint/no-require-imports */
const multer = require('multer');
// multer's own dependency: the reference we must match.
const referenceAppendField: (store: object, key: string, value: string) => void = require('append-field');

type Fields = [string, string][];

// The examples of the W3C HTML JSON form submission note (https://www.w3.org/TR/html-json-forms/), which
// multer's append-field implements; values are strings in multipart, and sparse slots serialize as null.
const W3C: [string, Fields, unknown][] = [
  ['basic keys', [['name', 'Bender'], ['hind', 'Bitable'], ['shiny', 'true']], { name: 'Bender', hind: 'Bitable', shiny: 'true' }],
  ['multiple values', [['bottle-on-wall', '1'], ['bottle-on-wall', '2'], ['bottle-on-wall', '3']], { 'bottle-on-wall': ['1', '2', '3'] }],
  [
    'deeper structure',
    [['pet[species]', 'Dahut'], ['pet[name]', 'Hypatia'], ['kids[1]', 'Thelma'], ['kids[0]', 'Ashley']],
    { pet: { species: 'Dahut', name: 'Hypatia' }, kids: ['Ashley', 'Thelma'] },
  ],
  ['sparse arrays', [['hearbeat[0]', 'thunk'], ['hearbeat[2]', 'thunk']], { hearbeat: ['thunk', null, 'thunk'] }],
  [
    'even deeper',
    [['pet[0][species]', 'Dahut'], ['pet[0][name]', 'Hypatia'], ['pet[1][species]', 'Felis Stultus'], ['pet[1][name]', 'Billie']],
    { pet: [{ species: 'Dahut', name: 'Hypatia' }, { species: 'Felis Stultus', name: 'Billie' }] },
  ],
  ['such deep', [['wow[such][deep][3][much][power][!]', 'Amaze']], { wow: { such: { deep: [null, null, null, { much: { power: { '!': 'Amaze' } } }] } } }],
  [
    'merge behaviour',
    [['mix', 'scalar'], ['mix[0]', 'array 1'], ['mix[2]', 'array 2'], ['mix[key]', 'key key']],
    { mix: { '': 'scalar', 0: 'array 1', 2: 'array 2', key: 'key key' } },
  ],
  ['append', [['highlander[]', 'one']], { highlander: ['one'] }],
  ['bad input', [['error[good]', 'BOOM!'], ['error[bad', 'BOOM BOOM!']], { error: { good: 'BOOM!' }, 'error[bad': 'BOOM BOOM!' }],
];

function build(fields: Fields, append: (store: FieldObject, key: string, value: string) => unknown): FieldObject {
  const store = createBody();
  for (const [key, value] of fields) append(store, key, value);
  return store;
}
const json = (value: unknown) => JSON.parse(JSON.stringify(value));

describe('the W3C examples, through a real request, give the body multer gives', () => {
  async function bodyOf(middleware: express.RequestHandler, fields: Fields): Promise<unknown> {
    const app = express();
    app.post('/form', middleware, (req, res) => res.json(req.body));
    let req = request(app).post('/form');
    for (const [name, value] of fields) req = req.field(name, value);
    const res = await req.expect(200);
    return res.body;
  }

  test.each(W3C)('%s', async (_label, fields, expected) => {
    const [ours, theirs] = await Promise.all([bodyOf(spool().none(), fields), bodyOf(multer().none(), fields)]);
    expect(ours).toEqual(expected);
    expect(ours).toEqual(theirs);
  });

  test('the body and every object in it have no prototype; arrays are arrays', async () => {
    let body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
    const app = express();
    app.post('/form', spool().none(), (req, res) => {
      body = req.body;
      res.end();
    });
    await request(app).post('/form').field('pet[0][species]', 'Dahut').field('mix', 's').field('mix[k]', 'v').expect(200);
    expect(Object.getPrototypeOf(body)).toBeNull();
    expect(Array.isArray(body.pet)).toBe(true);
    expect(Object.getPrototypeOf(body.pet[0])).toBeNull();
    expect(Object.getPrototypeOf(body.mix)).toBeNull();
  });
});

describe('the same result as append-field', () => {
  test.each<[string, Fields]>([
    ['a scalar then a nested key', [['a', '1'], ['a[b]', '2']]],
    ['a nested key then a scalar', [['a[b]', '1'], ['a', '2'], ['a', '3']]],
    ['an index then a key: the array becomes an object', [['a[0]', 'x'], ['a[2]', 'y'], ['a[k]', 'z']]],
    ['a key then an index', [['obj[x]', '1'], ['obj[0]', '2']]],
    ['append after a scalar, and after an object', [['a', '1'], ['a[]', '2'], ['o[k]', '1'], ['o[]', '2']]],
    ['append twice, and an index into an appended array', [['h[]', '1'], ['h[]', '2'], ['h[5]', '3']]],
    ['repeated index', [['a[0]', '1'], ['a[0]', '2']]],
    ['leading zeros', [['a[007]', 'x']]],
    ['malformed names kept verbatim', [['a[b', '1'], ['a[b]c', '2'], ['[a]', '3'], ['a[]b', '4'], ['a[][b]', '5'], ['a]b[c]', '6'], ['', '7'], ['a[]]', '8']]],
    ['empty brackets in the middle and odd keys', [['a[ ]', '1'], ['a[-1]', '2'], ['a[1.5]', '3'], ['a[[b]', '4']]],
    ['names that shadow Object methods', [['hasOwnProperty', '1'], ['toString[x]', '2'], ['valueOf[0]', '3']]],
  ])('%s', (_label, fields) => {
    expect(json(build(fields, appendField))).toEqual(json(build(fields, referenceAppendField)));
  });

  test('random forms (fast-check): same JSON, same array/object shapes', () => {
    const first = fc.constantFrom('a', 'b', 'a]', '');
    const group = fc.constantFrom('[]', '[0]', '[1]', '[2]', '[5]', '[x]', '[y]', '[', ']', '[0', 'x]', '[[x]');
    const name = fc.tuple(first, fc.array(group, { maxLength: 4 })).map(([head, groups]) => head + groups.join(''));
    const form = fc.array(fc.tuple(name, fc.string({ maxLength: 3 })), { minLength: 1, maxLength: 8 });
    fc.assert(
      fc.property(form, (fields) => {
        expect(json(build(fields, appendField))).toEqual(json(build(fields, referenceAppendField)));
      }),
      { numRuns: 3000, seed: 20261201 },
    );
  });
});

describe('guards', () => {
  test.each(['__proto__', '__proto__[x]', 'a[__proto__]', 'a[0][__proto__][x]', 'constructor[prototype][x]', 'x[constructor]', 'a[prototype][]'])(
    '%s is refused and nothing reaches Object.prototype',
    (name) => {
      const body = createBody();
      expect(appendField(body, name, 'polluted')).toBe(false);
      expect(Object.keys(body)).toEqual([]);
      expect(({} as Record<string, unknown>).x).toBeUndefined();
      expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'x')).toBe(false);
    },
  );

  test('malformed names that merely contain a forbidden word are plain keys', () => {
    const body = createBody();
    expect(appendField(body, '__proto__[x', 'v')).toBe(true);
    expect(appendField(body, '[__proto__]', 'w')).toBe(true);
    expect(json(body)).toEqual({ '__proto__[x': 'v', '[__proto__]': 'w' });
    expect(Object.getPrototypeOf(body)).toBeNull();
  });

  test('more than 8 bracket groups: kept verbatim', () => {
    const body = createBody();
    appendField(body, 'a[1][2][3][4][5][6][7][8]', 'deep');
    appendField(body, 'b[1][2][3][4][5][6][7][8][9]', 'too deep');
    expect(json(body).a[1][2][3][4][5][6][7][8]).toBe('deep');
    expect(json(body)['b[1][2][3][4][5][6][7][8][9]']).toBe('too deep');
  });

  test('a huge index makes an object keyed by index, not a huge sparse array', () => {
    const body = createBody();
    appendField(body, 'qty[12345]', '3');
    appendField(body, 'rows[0]', 'first');
    appendField(body, 'rows[1000000000]', 'far');
    appendField(body, 'near[1000]', 'ok');
    expect(json(body)).toEqual({ qty: { 12345: '3' }, rows: { 0: 'first', 1000000000: 'far' }, near: expect.any(Array) });
    expect((body.near as unknown[]).length).toBe(1001);
    // Filled in order, an array may grow past the gap without becoming an object.
    const dense = createBody();
    for (let i = 0; i < 2500; i++) appendField(dense, `r[${i}][n]`, String(i));
    expect(Array.isArray(dense.r)).toBe(true);
    expect((dense.r as unknown[]).length).toBe(2500);
  });
});
