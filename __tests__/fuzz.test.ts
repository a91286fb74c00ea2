import fc from 'fast-check';
import { diskEngine, spool, SpoolError, type UploadedFile } from '../lib';
import { eventually, tempDir } from './helpers/app';
import { drive, splitAt } from './helpers/drive';
import { BOUNDARY, multipartBody, sha256, type Part } from './helpers/multipart';

// Property-based tests. `npm test` runs a seeded sample; `npm run fuzz` runs FUZZ_RUNS (≥ 10,000) cases.
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
const SEED = Number(process.env.FUZZ_SEED ?? 20261125);
const THRESHOLD = 4096;
const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

const dir = tempDir();
afterAll(() => dir.remove());
const upload = spool({
  threshold: THRESHOLD,
  rollover: diskEngine({ directory: dir.path, lifetime: 'temporary' }),
  memoryBudget: '16MiB',
  limits: { fileSize: '1MiB', files: 50, fields: 50, parts: 100 },
  idleTimeout: 0,
  sha256: true,
});
const middleware = upload.any();

const sizeAroundThreshold = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.integer({ min: THRESHOLD - 16, max: THRESHOLD + 16 }),
  fc.integer({ min: 0, max: 3 * THRESHOLD }),
);
const partArb = fc.oneof(
  fc.record({ kind: fc.constant('field' as const), value: fc.string({ maxLength: 200 }) }),
  fc.record({ kind: fc.constant('file' as const), size: sizeAroundThreshold, seed: fc.integer({ min: 0, max: 255 }), filename: fc.stringMatching(/^[\w. -]{1,40}$/) }),
);
const formArb = fc.array(partArb, { minLength: 0, maxLength: 8 });
type FormSpec = typeof formArb extends fc.Arbitrary<infer T> ? T : never;

function toParts(form: FormSpec): Part[] {
  return form.map((p, i) => {
    if (p.kind === 'field') return { name: `field${i}`, value: p.value };
    const data = Buffer.alloc(p.size);
    for (let j = 0; j < p.size; j++) data[j] = (j * 131 + p.seed) & 0xff;
    return { name: `file${i}`, filename: p.filename, data };
  });
}

/** Cut points: anywhere, with a bias towards 1-byte chunks and the boundary's neighbourhood. */
const cutsArb = (length: number) => fc.array(fc.integer({ min: 1, max: Math.max(1, length - 1) }), { maxLength: Math.min(200, length) });

afterEach(async () => {
  await eventually(() => expect(dir.files()).toEqual([]));
  expect(upload.memoryBudget.used).toBe(0);
});

test(`valid forms in random chunk splits arrive byte-exact with the right storage (${RUNS} cases)`, async () => {
  await fc.assert(
    fc.asyncProperty(formArb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), async (form, cutSeed) => {
      const parts = toParts(form);
      const body = multipartBody(parts);
      const cuts = fc.sample(cutsArb(body.length), { seed: cutSeed, numRuns: 1 })[0];
      const { error, req, finish } = await drive(middleware, splitAt(body, cuts), CONTENT_TYPE);
      try {
        expect(error).toBeUndefined();
        const files = req.files as UploadedFile[];
        // A filename of '.' or '..' reads as no filename, and such a part is skipped, as multer does.
        const expectedFiles = parts.filter(
          (p): p is Extract<Part, { filename: string }> => 'filename' in p && p.filename !== '.' && p.filename !== '..',
        );
        expect(files.map((f) => f.fieldname)).toEqual(expectedFiles.map((p) => p.name));
        for (const [i, file] of files.entries()) {
          const data = expectedFiles[i].data as Buffer;
          expect(file.size).toBe(data.length);
          expect(file.sha256).toBe(sha256(data));
          expect(file.storage).toBe(data.length > THRESHOLD ? 'disk' : 'memory');
          const back: Buffer[] = [];
          for await (const chunk of file.stream()) back.push(chunk as Buffer);
          expect(sha256(Buffer.concat(back))).toBe(sha256(data));
        }
        const fields = Object.fromEntries(parts.filter((p): p is Extract<Part, { value: string }> => 'value' in p).map((p) => [p.name, p.value]));
        expect({ ...(req.body as object) }).toEqual(fields);
      } finally {
        finish();
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
}, 600_000);

const mutationArb = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({
    op: fc.constant('insert' as const),
    at: fc.nat(),
    text: fc.constantFrom('\r\n', '--', `--${BOUNDARY}`, `\r\n--${BOUNDARY}\r\n`, `--${BOUNDARY}--`, '\r\n\r\n', ' ', ':', '"', ';', 'Content-Disposition: form-data; name="x"; filename="y"\r\n', '\0'),
  }),
  fc.record({ op: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 300 }) }),
);

type Mutation = typeof mutationArb extends fc.Arbitrary<infer T> ? T : never;

function mutate(body: Buffer, mutations: Mutation[]): Buffer {
  let out = body;
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % out.length;
    if (m.op === 'flip') out = Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at + 1)]);
    else if (m.op === 'truncate') out = out.subarray(0, at);
    else if (m.op === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.length)]);
    else if (m.op === 'insert') out = Buffer.concat([out.subarray(0, at), Buffer.from(m.text), out.subarray(at)]);
    else out = Buffer.concat([out.subarray(0, at + m.length), out.subarray(at)]);
  }
  return out;
}

test(`mutated bodies never crash, hang, answer 5xx or leave a file behind (${RUNS * 2} cases)`, async () => {
  await fc.assert(
    fc.asyncProperty(formArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), async (form, mutations, cutSeed) => {
      const body = mutate(multipartBody(toParts(form)), mutations);
      const cuts = fc.sample(cutsArb(body.length), { seed: cutSeed, numRuns: 1 })[0];
      const { error, finish } = await drive(middleware, body.length ? splitAt(body, cuts) : [], CONTENT_TYPE);
      finish();
      if (error) {
        expect(error).toBeInstanceOf(SpoolError);
        expect(error.status).toBeGreaterThanOrEqual(400);
        expect(error.status).toBeLessThan(500);
      }
      await eventually(() => expect(dir.files()).toEqual([]));
      expect(upload.memoryBudget.used).toBe(0);
    }),
    { numRuns: RUNS * 2, seed: SEED },
  );
}, 600_000);
