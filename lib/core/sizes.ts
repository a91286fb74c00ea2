/** A byte count: a number, or a string such as `'1MiB'`, `'512KB'`, `'64 MiB'` (KiB = 1024, KB = 1000). */
export type Size = number | string;

const UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

const SIZE_PATTERN = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i;

/** Parses a {@link Size}; returns undefined when it is not one. `Infinity` is allowed. */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === 'number') {
    return value >= 0 && (Number.isInteger(value) || value === Infinity) ? value : undefined;
  }
  if (typeof value !== 'string') return undefined;
  const match = SIZE_PATTERN.exec(value);
  if (!match) return undefined;
  const unit = UNITS[(match[2] || 'b').toLowerCase()];
  if (unit === undefined) return undefined;
  return Math.floor(Number(match[1]) * unit);
}

/** Parses a {@link Size} option or throws a TypeError naming the option. */
export function sizeOption(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  const bytes = parseSize(value);
  if (bytes === undefined) {
    throw new TypeError(
      `Expected \`${name}\` to be a byte count (a non-negative integer or a string like '1MiB'), got ${describe(value)}`,
    );
  }
  return bytes;
}

/** Parses a count option (non-negative integer or Infinity) or throws a TypeError naming it. */
export function countOption(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value >= 0) || !(Number.isInteger(value) || value === Infinity)) {
    throw new TypeError(`Expected \`${name}\` to be a non-negative integer, got ${describe(value)}`);
  }
  return value;
}

/** The longest delay `setTimeout` takes; past it Node fires at once (or throws, for AbortSignal.timeout). */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * A duration in ms: a whole number from 0 to `max` (by default what a timer can wait). Infinity is refused
 * rather than taken for "never": a timer would fire at once instead.
 */
export function durationOption(name: string, value: unknown, fallback: number, max = MAX_TIMER_MS): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new TypeError(`Expected \`${name}\` to be a whole number of ms from 0 to ${max}, got ${describe(value)}`);
  }
  return value;
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (value === null) return 'null';
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}
