/** Segments that would reach into prototypes if used as keys; fields naming them are refused. */
const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype']);
/** Names with more bracket groups than this are kept verbatim as one key. */
const MAX_DEPTH = 8;
/**
 * An index further than this past the end of its array makes the array an object keyed by index (what
 * append-field does for a non-numeric key), so `a[99999999]` cannot make a sparse array that whoever
 * serializes `req.body` pays for. Arrays filled in order never hit it.
 */
const MAX_INDEX_GAP = 1000;

export type FieldValue = string | FieldValue[] | FieldObject;
export interface FieldObject {
  [key: string]: FieldValue;
}

/** A body object without a prototype, so no field name can reach Object.prototype. */
export function createBody(): FieldObject {
  return Object.create(null) as FieldObject;
}

interface Step {
  key: string | number;
  /** The next step indexes an array (`[3]`) rather than an object (`[name]`). */
  nextIsIndex: boolean;
  /** `[]` at the end of the name: always append. */
  append: boolean;
  last: boolean;
}

type Container = FieldObject | FieldValue[];

/**
 * Adds a text field to `body` exactly as multer does (its `append-field`, the W3C HTML JSON form
 * submission algorithm): `a[b][c]` nests objects (null-prototype), `a[2]` indexes arrays (sparse ones
 * too), `a[]` appends, a repeated name becomes an array, `a` and `a[b]` merge into one object (the scalar
 * under `''`), an array given a non-numeric key becomes an object, and a name that does not parse
 * (`a[b`, `a[b]c`, `[a]`) is kept verbatim as one key. Two guards: more than 8 bracket groups are kept
 * verbatim, and an index more than 1000 past its array's end turns the array into an object.
 * Returns false, adding nothing, for a name with a `__proto__`, `constructor` or `prototype` segment.
 */
export function appendField(body: FieldObject, name: string, value: string): boolean {
  // A plain name (most forms): one key, no path to parse.
  if (!name.includes('[')) {
    if (FORBIDDEN.has(name)) return false;
    setLastValue(body, name, false, value);
    return true;
  }
  const steps = parsePath(name);
  if (steps.some((step) => typeof step.key === 'string' && FORBIDDEN.has(step.key))) return false;
  let context: Container = body;
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    if (step.last) {
      setLastValue(context, step.key, step.append, value);
      break;
    }
    const current = get(context, step.key);
    const next = steps[i + 1];
    // Past the gap, the index is an object key; its array (if any) becomes an object below.
    const asIndex = step.nextIsIndex && (next.key as number) - (Array.isArray(current) ? current.length : 0) <= MAX_INDEX_GAP;
    if (!asIndex) next.key = String(next.key);
    context = descend(context, step.key, current, asIndex);
  }
  return true;
}

function get(context: Container, key: string | number): FieldValue | undefined {
  return (context as Record<string | number, FieldValue | undefined>)[key];
}

function set(context: Container, key: string | number, value: FieldValue): void {
  (context as Record<string | number, FieldValue>)[key] = value;
}

/** append-field's setValue for a step that is not the last: the container the next step writes into. */
function descend(context: Container, key: string | number, current: FieldValue | undefined, nextIsIndex: boolean): Container {
  if (current === undefined) {
    const created: Container = nextIsIndex ? [] : createBody();
    set(context, key, created);
    return created;
  }
  if (Array.isArray(current)) {
    if (nextIsIndex) return current;
    const object = createBody();
    current.forEach((item, index) => {
      if (item !== undefined) object[String(index)] = item;
    });
    set(context, key, object);
    return object;
  }
  if (typeof current === 'object') return current;
  const object = createBody();
  object[''] = current;
  set(context, key, object);
  return object;
}

/** append-field's setLastValue. */
function setLastValue(context: Container, key: string | number, append: boolean, value: string): void {
  for (;;) {
    const current = get(context, key);
    if (current === undefined) return set(context, key, append ? [value] : value);
    if (Array.isArray(current)) return void current.push(value);
    if (typeof current !== 'object') return set(context, key, [current, value]);
    // An object already there: the value goes under '' (and so on down).
    context = current;
    key = '';
    append = false;
  }
}

const FIRST_KEY = /^[^[]*/;
const INDEX = /\[(\d+)\]/y;
const KEY = /\[([^\]]+)\]/y;

/** append-field's parsePath, plus the depth guard. */
function parsePath(name: string): Step[] {
  const verbatim = (): Step[] => [{ key: name, nextIsIndex: false, append: false, last: true }];
  const first = FIRST_KEY.exec(name)![0];
  if (!first) return verbatim();
  let tail: Step = { key: first, nextIsIndex: false, append: false, last: false };
  const steps = [tail];
  let pos = first.length;
  while (pos < name.length) {
    if (name[pos] === '[' && name[pos + 1] === ']') {
      pos += 2;
      tail.append = true;
      if (pos !== name.length) return verbatim();
      continue;
    }
    INDEX.lastIndex = KEY.lastIndex = pos;
    const index = INDEX.exec(name);
    const match = index ?? KEY.exec(name);
    if (!match) return verbatim();
    pos += match[0].length;
    tail.nextIsIndex = index !== null;
    tail = { key: index ? parseInt(index[1], 10) : match[1], nextIsIndex: false, append: false, last: false };
    steps.push(tail);
    if (steps.length - 1 > MAX_DEPTH) return verbatim();
  }
  tail.last = true;
  return steps;
}
