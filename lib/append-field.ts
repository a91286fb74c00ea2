/** Segments that would reach into prototypes if used as keys; fields naming them are refused. */
const FORBIDDEN = new Set(['__proto__', 'constructor', 'prototype']);
const BRACKETS = /^([^[\]]+)((?:\[[^[\]]*\])+)$/;
const MAX_DEPTH = 8;

export type FieldValue = string | FieldValue[] | FieldObject;
export interface FieldObject {
  [key: string]: FieldValue;
}

/** A body object without a prototype, so no field name can reach Object.prototype. */
export function createBody(): FieldObject {
  return Object.create(null) as FieldObject;
}

/**
 * Adds a text field to `body` the way multer does: `a[b][c]` nests objects (null-prototype), `a[]` appends to
 * an array, a repeated name becomes an array. Names deeper than 8 levels or that do not parse are kept
 * verbatim as one key. Returns false, adding nothing, for a name with a forbidden segment.
 */
export function appendField(body: FieldObject, name: string, value: string): boolean {
  const path = parsePath(name);
  if (path.some((segment) => FORBIDDEN.has(segment))) return false;
  let container: FieldObject = body;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i];
    const next = Object.hasOwn(container, key) ? container[key] : undefined;
    if (next === undefined) {
      const created = path[i + 1] === '' ? ([] as unknown as FieldObject) : createBody();
      container[key] = created;
      container = created;
    } else if (typeof next === 'object') {
      container = next as FieldObject;
    } else {
      // `a=1` then `a[b]=2`: the shapes clash, keep the field under its literal name.
      setValue(body, name, value);
      return true;
    }
  }
  setValue(container, path[path.length - 1], value);
  return true;
}

function setValue(container: FieldObject, key: string, value: string): void {
  if (Array.isArray(container)) {
    container.push(value);
    return;
  }
  if (key === '') key = '0';
  const existing = Object.hasOwn(container, key) ? container[key] : undefined;
  if (existing === undefined) container[key] = value;
  else if (Array.isArray(existing)) existing.push(value);
  else if (typeof existing === 'string') container[key] = [existing, value];
  else container[`${key}[]`] = value;
}

function parsePath(name: string): string[] {
  const match = BRACKETS.exec(name);
  if (!match) return [name];
  const rest = match[2].slice(1, -1).split('][');
  if (rest.length > MAX_DEPTH) return [name];
  return [match[1], ...rest];
}
