// Forms from a collection's JSON Schema, as data: one field per top-level property (text,
// number, yes/no, choice, a list of texts for arrays of strings, or JSON for other objects and
// arrays), the conversion of what was typed into
// JSON values, and JSON merge patches. Validation is the api's (one set of rules, the schema's):
// the form only refuses what cannot be converted, like malformed JSON.

import type { FieldError, Json, JsonSchema } from './api';

/** `list`: an array of strings, edited as one text per line (or comma separated). */
export type Kind = 'string' | 'integer' | 'number' | 'boolean' | 'enum' | 'list' | 'json';

export interface Field {
  name: string;
  schema: JsonSchema;
  required: boolean;
  readOnly: boolean;
  kind: Kind;
}

/** The JSON type of a property schema, ignoring "null" in type lists. */
function typeOf(schema: JsonSchema): string {
  const type = schema.type;
  if (Array.isArray(type)) return type.find((t) => t !== 'null') ?? 'string';
  return type ?? (schema.properties ? 'object' : 'string');
}

export function kindOf(schema: JsonSchema): Kind {
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return 'enum';
  const type = typeOf(schema);
  if (type === 'string' || type === 'integer' || type === 'number' || type === 'boolean') return type;
  if (type === 'array' && schema.items && !Array.isArray(schema.items.enum) && schema.items.type !== undefined && typeOf(schema.items) === 'string') return 'list';
  return 'json';
}

/** The top-level properties, in schema order. */
export function fieldsOf(schema: JsonSchema): Field[] {
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  return Object.entries(schema.properties ?? {}).map(([name, property]) => ({
    name,
    schema: property,
    required: required.has(name),
    readOnly: property.readOnly === true,
    kind: kindOf(property),
  }));
}

/** A short description of a property's rules, e.g. "number ≥ 0" or "1–200 characters". */
export function describeRules(schema: JsonSchema): string {
  const kind = kindOf(schema);
  const parts: string[] = [];
  if (kind === 'string') {
    const { minLength: min, maxLength: max } = schema;
    if (min !== undefined && max !== undefined) parts.push(`${min}–${max} characters`);
    else if (max !== undefined) parts.push(`up to ${max} characters`);
    else if (min !== undefined) parts.push(`at least ${min} character${min === 1 ? '' : 's'}`);
    if (schema.format) parts.push(schema.format);
  } else if (kind === 'integer' || kind === 'number') {
    const bounds = [kind === 'integer' ? 'whole number' : 'number'];
    if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
    if (schema.exclusiveMinimum !== undefined) bounds.push(`> ${schema.exclusiveMinimum}`);
    if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
    if (schema.exclusiveMaximum !== undefined) bounds.push(`< ${schema.exclusiveMaximum}`);
    parts.push(bounds.join(' '));
  } else if (kind === 'boolean') {
    parts.push('yes or no');
  } else if (kind === 'list') {
    const { minItems: min, maxItems: max } = schema;
    parts.push('one per line, or separated by commas');
    if (min !== undefined && max !== undefined) parts.push(`${min}–${max} items`);
    else if (max !== undefined) parts.push(`up to ${max} items`);
    else if (min !== undefined) parts.push(`at least ${min} item${min === 1 ? '' : 's'}`);
  } else if (kind === 'json') {
    parts.push(`JSON ${typeOf(schema)}`);
  }
  return parts.join(' · ');
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const isObject = (v: unknown): v is Record<string, Json> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * The JSON merge patch (RFC 7386) that turns `before` into `after`: changed values, `null` for
 * removed keys, nested objects diffed key by key. `{}` when nothing changed.
 */
export function mergePatchDiff(before: Record<string, Json>, after: Record<string, Json | undefined>): Record<string, Json> {
  const patch: Record<string, Json> = {};
  for (const key of Object.keys(before)) {
    if (!(key in after) || after[key] === undefined) patch[key] = null;
  }
  for (const [key, value] of Object.entries(after)) {
    if (value === undefined) continue;
    const old = before[key];
    if (isObject(old) && isObject(value)) {
      const inner = mergePatchDiff(old, value);
      if (Object.keys(inner).length > 0) patch[key] = inner;
    } else if (!same(old, value)) {
      patch[key] = value;
    }
  }
  return patch;
}

/** "is required" → "nombre is required"; other reasons as the api wrote them. */
export function errorText(field: string, reason: string | undefined): string {
  const text = String(reason ?? 'is invalid');
  return /^(is|must|does|has) /.test(text) ? `${field} ${text}` : text;
}

/** The text a control shows for a JSON value. */
export function inputValue(field: Field, value: Json | undefined): string {
  if (value === undefined || value === null) return '';
  switch (field.kind) {
    case 'enum': {
      const index = (field.schema.enum ?? []).findIndex((option) => same(option, value));
      return index < 0 ? '' : String(index);
    }
    case 'boolean':
      return value ? 'true' : 'false';
    case 'json':
      return JSON.stringify(value, null, 2);
    case 'list':
      return Array.isArray(value) ? value.map((item) => (typeof item === 'string' ? item : JSON.stringify(item))).join('\n') : JSON.stringify(value);
    default:
      return typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
}

/** The controls' texts for a document (or empty for a new one). */
export function rawValues(fields: Field[], doc: Record<string, Json> | null): Record<string, string> {
  const raw: Record<string, string> = {};
  for (const field of fields) if (!field.readOnly) raw[field.name] = inputValue(field, doc?.[field.name]);
  return raw;
}

/** The document as typed; `errors` lists what could not be converted. Empty controls are left out. */
export function readValues(fields: Field[], raw: Record<string, string>): { value: Record<string, Json>; errors: FieldError[] } {
  const value: Record<string, Json> = {};
  const errors: FieldError[] = [];
  for (const field of fields) {
    if (field.readOnly) continue;
    const text = raw[field.name] ?? '';
    const name = field.name;
    switch (field.kind) {
      case 'enum':
        if (text !== '') value[name] = field.schema.enum?.[Number(text)] ?? null;
        break;
      case 'boolean':
        if (text !== '') value[name] = text === 'true';
        break;
      case 'integer':
      case 'number':
        if (text.trim() === '') break;
        if (Number.isNaN(Number(text))) errors.push({ field: name, reason: 'must be a number' });
        else value[name] = Number(text);
        break;
      case 'list': {
        // One text per line or between commas; blanks dropped; duplicates kept once.
        const items = [...new Set(text.split(/[\n,]/).map((item) => item.trim()).filter((item) => item !== ''))];
        if (items.length > 0) value[name] = items;
        break;
      }
      case 'json':
        if (text.trim() !== '') {
          try {
            value[name] = JSON.parse(text) as Json;
          } catch {
            errors.push({ field: name, reason: 'is not valid JSON' });
          }
        }
        break;
      default:
        if (text !== '') value[name] = text;
    }
  }
  return { value, errors };
}

/** The merge patch from `doc` (its editable fields) to what the form holds. */
export function patchOf(fields: Field[], doc: Record<string, Json>, value: Record<string, Json>): Record<string, Json> {
  const before: Record<string, Json> = {};
  for (const field of fields) {
    const old = doc[field.name];
    if (!field.readOnly && old !== undefined) before[field.name] = old;
  }
  return mergePatchDiff(before, value);
}

/** `[{field, reason}]` by top-level field (nested paths on their field), and those naming none. */
export function placeErrors(fields: Field[], errors: FieldError[]): { byField: Record<string, string>; unplaced: FieldError[] } {
  const byField: Record<string, string> = {};
  const unplaced: FieldError[] = [];
  for (const error of errors) {
    const top = String(error.field).split('.')[0] ?? '';
    const field = fields.find((f) => f.name === top);
    if (!field || field.readOnly) {
      unplaced.push(error);
      continue;
    }
    const text = errorText(error.field, error.reason);
    byField[top] = byField[top] ? `${byField[top]} ${text}` : text;
  }
  return { byField, unplaced };
}
