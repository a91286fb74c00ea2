import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES, SpoolError, type SpoolErrorCode } from '../lib';

// The README's Errors table names every code with the HTTP status it is answered with. Read it, and hold
// the library to it: each row's status is what `new SpoolError(code)` carries, and the table and the
// library know the same codes (a code added to one and not the other fails here).

interface Row {
  codes: string[];
  statuses: number[];
}

function errorTable(): Row[] {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Errors\n'), readme.indexOf('\n## API reference\n'));
  expect(section.length).toBeGreaterThan(100);
  const lines = section.split('\n');
  const head = lines.findIndex((line) => /^\| code \| status \| when \|$/.test(line));
  expect(head).toBeGreaterThan(0);
  const rows: Row[] = [];
  for (const line of lines.slice(head + 2)) {
    if (!line.startsWith('|')) break;
    const [codeCell, statusCell] = line.split('|').slice(1, 3);
    const codes = [...codeCell.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]);
    // '503 (+ `Retry-After`)' and '500 (502 when S3 answered an error)': the status is the number before the
    // parenthesis; '404, 410, …' gives one per code.
    const statuses = statusCell.replace(/\([^)]*\)/g, '').split(',').map((s) => Number(s.trim()));
    rows.push({ codes, statuses });
  }
  return rows;
}

const rows = errorTable();
const documented = new Map<string, number>();
for (const { codes, statuses } of rows) {
  expect(codes.length).toBeGreaterThan(0);
  expect(statuses.every((s) => Number.isInteger(s) && s >= 400 && s < 600)).toBe(true);
  expect(statuses.length === codes.length || statuses.length === 1).toBe(true);
  codes.forEach((code, i) => documented.set(code, statuses.length === 1 ? statuses[0] : statuses[i]));
}

test('the README table lists every code of the library, and no code the library does not have', () => {
  expect([...documented.keys()].sort()).toEqual(Object.keys(ERROR_CODES).sort());
  expect(documented.size).toBe(29);
});

test.each([...documented])('%s: the README says %d, and that is the status SpoolError carries', (code, status) => {
  const err = new SpoolError(code as SpoolErrorCode);
  expect(err.status).toBe(status);
  expect(err.statusCode).toBe(status);
  expect(ERROR_CODES[code as SpoolErrorCode].status).toBe(status);
});
