// The console's filters as data: conditions the user picked (field, operator, typed text),
// checked and typed by the schema's field kinds, and turned into the two forms the api takes —
// the REST list's query (`species=Dog&age[gte]=3`) and a subscription's `filter` object
// (`{"species": "Dog", "age": {"gte": 3}}`, docs/protocol.md). One set of conditions feeds both,
// so the table's list and its live events always describe the same documents.

import type { Field } from './schema';

export type Op = 'eq' | 'ne' | 'gt' | 'gte' | 'lt' | 'lte';
export type Scalar = string | number | boolean;

/** One condition as picked in the controls: `text` is what was typed (or chosen). */
export interface Condition {
  field: string;
  op: Op;
  text: string;
}

/** A subscription's `filter`: a value means equality, an object of operators each must hold. */
export type FilterJson = Record<string, Scalar | Partial<Record<Op, Scalar>>>;

/** How an operator reads in the controls and chips. */
export const OP_LABEL: Record<Op, string> = { eq: '=', ne: '≠', gt: '>', gte: '≥', lt: '<', lte: '≤' };
/** The spoken form (option titles, screen readers). */
export const OP_WORDS: Record<Op, string> = {
  eq: 'equals',
  ne: 'is not',
  gt: 'greater than',
  gte: 'at least',
  lt: 'less than',
  lte: 'at most',
};

/** Whether a field can be filtered on at all: scalars, and arrays of strings ("contains"). */
export function filterable(field: Field): boolean {
  return field.kind !== 'json';
}

/** The operators a field's kind allows: ranges for strings and numbers (as the api allows). */
export function opsFor(field: Field): Op[] {
  switch (field.kind) {
    case 'string':
    case 'integer':
    case 'number':
      return ['eq', 'ne', 'gt', 'gte', 'lt', 'lte'];
    case 'list':
      return ['eq'];
    default:
      return ['eq', 'ne'];
  }
}

/** The operator's label for this field (an array field's `=` means "contains"). */
export function opLabel(field: Field | undefined, op: Op): string {
  return field?.kind === 'list' && op === 'eq' ? 'contains' : OP_LABEL[op];
}

/** The value as the api types it, or why the text cannot be one. */
export function typedValue(field: Field, text: string): { value: Scalar } | { error: string } {
  switch (field.kind) {
    case 'integer': {
      const trimmed = text.trim();
      if (!/^-?\d+$/.test(trimmed)) return { error: `${field.name} is a whole number` };
      const n = Number(trimmed);
      return Number.isSafeInteger(n) ? { value: n } : { error: `${field.name} is too large` };
    }
    case 'number': {
      const trimmed = text.trim();
      const n = trimmed === '' ? NaN : Number(trimmed);
      return Number.isFinite(n) ? { value: n } : { error: `${field.name} is a number` };
    }
    case 'boolean':
      if (text === 'true' || text === 'false') return { value: text === 'true' };
      return { error: `${field.name} is yes or no` };
    case 'enum': {
      const option = field.schema.enum?.[Number(text)];
      if (text === '' || option === undefined || (typeof option !== 'string' && typeof option !== 'number' && typeof option !== 'boolean')) {
        return { error: `choose a value for ${field.name}` };
      }
      return { value: option };
    }
    default:
      if (text === '') return { error: `type a value for ${field.name}` };
      if (new TextEncoder().encode(text).length > 1024) return { error: `${field.name}: values are at most 1,024 bytes` };
      return { value: text };
  }
}

/** How a condition's value reads in a chip. */
export function valueLabel(field: Field | undefined, text: string): string {
  if (!field) return text;
  if (field.kind === 'boolean') return text === 'true' ? 'Yes' : text === 'false' ? 'No' : text;
  if (field.kind === 'enum') return String(field.schema.enum?.[Number(text)] ?? text);
  return text;
}

export interface BuiltFilter {
  /** The subscription's `filter`; null when there are no conditions. */
  json: FilterJson | null;
  /** The REST list's filter parameters, in order. */
  query: [string, string][];
  /** Conditions that could not be typed (`field`: the condition's field). */
  errors: { field: string; message: string }[];
}

/**
 * Both forms of `conditions`, typed by `fields`. One condition per field and operator (a later
 * one replaces an earlier one, as the controls do); several operators on one field combine
 * (`{"age": {"gte": 3, "lte": 9}}`).
 */
export function buildFilter(fields: Field[], conditions: Condition[]): BuiltFilter {
  const byField = new Map<string, Map<Op, Scalar>>();
  const errors: BuiltFilter['errors'] = [];
  for (const condition of conditions) {
    const field = fields.find((f) => f.name === condition.field);
    if (!field || !filterable(field)) {
      errors.push({ field: condition.field, message: `${condition.field} cannot be filtered on` });
      continue;
    }
    if (!opsFor(field).includes(condition.op)) {
      errors.push({ field: field.name, message: `${field.name} cannot be compared with ${OP_LABEL[condition.op]}` });
      continue;
    }
    const typed = typedValue(field, condition.text);
    if ('error' in typed) {
      errors.push({ field: field.name, message: typed.error });
      continue;
    }
    const ops = byField.get(field.name) ?? new Map<Op, Scalar>();
    ops.set(condition.op, typed.value);
    byField.set(field.name, ops);
  }
  if (byField.size === 0) return { json: null, query: [], errors };
  const json: FilterJson = {};
  const query: [string, string][] = [];
  for (const [name, ops] of byField) {
    if (ops.size === 1 && ops.has('eq')) json[name] = ops.get('eq') as Scalar;
    else json[name] = Object.fromEntries(ops) as Partial<Record<Op, Scalar>>;
    for (const [op, value] of ops) query.push([op === 'eq' ? name : `${name}[${op}]`, String(value)]);
  }
  return { json, query, errors };
}

/** Adds `condition`, replacing one on the same field and operator. */
export function withCondition(conditions: Condition[], condition: Condition): Condition[] {
  const rest = conditions.filter((c) => !(c.field === condition.field && c.op === condition.op));
  return [...rest, condition];
}

/** A stable key of a filter (effect dependencies). */
export function filterKey(json: FilterJson | null): string {
  return json === null ? '' : JSON.stringify(json);
}

/** The default text of a value control for `field` (a choice starts on its first option). */
export function initialText(field: Field | undefined): string {
  if (!field) return '';
  if (field.kind === 'boolean') return 'true';
  if (field.kind === 'enum') return (field.schema.enum ?? []).length > 0 ? '0' : '';
  return '';
}
