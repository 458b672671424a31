// Forms generated from a collection's JSON Schema: one labelled control per top-level property
// (text, number, yes/no, choice, or JSON for objects and arrays), required fields marked,
// readOnly fields shown but never sent, and the api's 422 errors placed next to their field.
//
// Validation is the api's: the form only converts what was typed into JSON values (and refuses
// what cannot be converted, like malformed JSON), so there is one set of rules, the schema's.

import { h } from './dom.js';

/** The JSON type of a property schema, ignoring "null" in type lists. */
function typeOf(schema) {
  const type = schema.type;
  if (Array.isArray(type)) return type.find((t) => t !== 'null') ?? 'string';
  return type ?? (schema.properties ? 'object' : 'string');
}

/** How a property is edited: string, integer, number, boolean, enum or json. */
export function kindOf(schema) {
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return 'enum';
  const type = typeOf(schema);
  if (['string', 'integer', 'number', 'boolean'].includes(type)) return type;
  return 'json';
}

/** The top-level properties, in schema order: `[{name, schema, required, readOnly, kind}]`. */
export function fieldsOf(schema) {
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
export function describeRules(schema) {
  const kind = kindOf(schema);
  const parts = [];
  if (kind === 'string') {
    const { minLength: min, maxLength: max } = schema;
    if (min !== undefined && max !== undefined) parts.push(`${min}–${max} characters`);
    else if (max !== undefined) parts.push(`up to ${max} characters`);
    else if (min !== undefined) parts.push(`at least ${min} character${min === 1 ? '' : 's'}`);
    if (schema.format) parts.push(schema.format);
  } else if (kind === 'integer' || kind === 'number') {
    const noun = kind === 'integer' ? 'whole number' : 'number';
    const bounds = [];
    if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
    if (schema.exclusiveMinimum !== undefined) bounds.push(`> ${schema.exclusiveMinimum}`);
    if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
    if (schema.exclusiveMaximum !== undefined) bounds.push(`< ${schema.exclusiveMaximum}`);
    parts.push([noun, ...bounds].join(' '));
  } else if (kind === 'boolean') {
    parts.push('yes or no');
  } else if (kind === 'json') {
    parts.push(`JSON ${typeOf(schema)}`);
  }
  return parts.join(' · ');
}

function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * The JSON merge patch (RFC 7386) that turns `before` into `after`: changed values, `null` for
 * removed keys, nested objects diffed key by key. `{}` when nothing changed.
 */
export function mergePatchDiff(before, after) {
  const patch = {};
  for (const key of Object.keys(before)) {
    if (!(key in after) || after[key] === undefined) patch[key] = null;
  }
  for (const [key, value] of Object.entries(after)) {
    if (value === undefined) continue;
    const old = before[key];
    if (isPlainObject(old) && isPlainObject(value)) {
      const inner = mergePatchDiff(old, value);
      if (Object.keys(inner).length > 0) patch[key] = inner;
    } else if (!deepEqual(old, value)) {
      patch[key] = value;
    }
  }
  return patch;
}

/** "is required" → "nombre is required"; other reasons as the api wrote them. */
export function errorText(field, reason) {
  const text = String(reason ?? 'is invalid');
  return /^(is|must|does|has) /.test(text) ? `${field} ${text}` : text;
}

/** The text a control shows for a JSON value. */
function inputValue(field, value) {
  if (value === undefined || value === null) return '';
  switch (field.kind) {
    case 'enum': {
      const index = field.schema.enum.findIndex((option) => deepEqual(option, value));
      return index < 0 ? '' : String(index);
    }
    case 'boolean':
      return value ? 'true' : 'false';
    case 'json':
      return JSON.stringify(value, null, 2);
    default:
      return typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
}

let formCount = 0;

export class SchemaForm {
  /**
   * @param schema   the collection's JSON Schema (an object schema)
   * @param values   the document being edited, or null for a new one
   */
  constructor(schema, values = null) {
    formCount += 1;
    this.prefix = `sf${formCount}`;
    this.fields = fieldsOf(schema);
    this.values = values;
    this.controls = new Map(); // name → {field, input, error}
    this.element = h('div', { class: 'schema-form' });
    for (const field of this.fields) {
      if (field.readOnly && values === null) continue; // set by Courier, nothing to show yet
      this.element.append(this.renderField(field, values?.[field.name]));
    }
    if (values) this.apply(values);
    if (this.fields.length === 0) {
      this.element.append(h('p', { class: 'muted' }, 'This collection’s schema declares no fields.'));
    }
  }

  renderField(field, value) {
    const id = `${this.prefix}-${field.name}`;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    const hint = [field.schema.description, describeRules(field.schema)].filter(Boolean).join(' — ');
    const label = h(
      'label',
      { for: id },
      field.name,
      field.required ? h('span', { class: 'required', 'aria-hidden': 'true', title: 'required' }, ' *') : null,
      field.required ? h('span', { class: 'sr-only' }, ' (required)') : null,
      field.readOnly ? h('span', { class: 'badge badge-muted' }, 'read-only') : null,
    );
    const describedBy = `${hint ? hintId : ''} ${errorId}`.trim();
    const input = field.readOnly ? this.readOnlyControl(id, field, value, describedBy) : this.control(id, field, describedBy);
    const error = h('p', { class: 'field-error', id: errorId, hidden: true });
    this.controls.set(field.name, { field, input, error });
    return h(
      'div',
      { class: `field field-${field.kind}`, dataset: { field: field.name } },
      label,
      input,
      hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
      error,
    );
  }

  readOnlyControl(id, field, value, describedBy) {
    if (field.kind === 'json') {
      const text = value === undefined ? 'Not set yet.' : JSON.stringify(value, null, 2);
      return h('pre', { id, class: 'readonly-json', tabindex: '0', 'aria-describedby': describedBy }, text);
    }
    return h('input', {
      id,
      name: field.name,
      readonly: true,
      value: value === undefined || value === null ? '' : String(value),
      'aria-describedby': describedBy,
    });
  }

  control(id, field, describedBy) {
    const common = { id, name: field.name, 'aria-describedby': describedBy, 'aria-required': field.required ? 'true' : null };
    const s = field.schema;
    switch (field.kind) {
      case 'enum': {
        const select = h('select', common, h('option', { value: '' }, field.required ? 'Choose…' : '— not set —'));
        s.enum.forEach((option, index) => {
          select.append(h('option', { value: String(index) }, String(option)));
        });
        return select;
      }
      case 'boolean':
        return h(
          'select',
          common,
          h('option', { value: '' }, field.required ? 'Choose…' : '— not set —'),
          h('option', { value: 'true' }, 'Yes'),
          h('option', { value: 'false' }, 'No'),
        );
      case 'integer':
      case 'number':
        return h('input', {
          ...common,
          type: 'number',
          step: field.kind === 'integer' ? '1' : 'any',
          inputmode: field.kind === 'integer' ? 'numeric' : 'decimal',
        });
      case 'json':
        return h('textarea', { ...common, rows: '4', spellcheck: 'false', class: 'json-input' });
      default: {
        const type = { email: 'email', uri: 'url', date: 'date' }[s.format] ?? 'text';
        return h('input', {
          ...common,
          type,
          maxlength: s.maxLength !== undefined ? String(s.maxLength) : null,
          autocomplete: 'off',
        });
      }
    }
  }

  /**
   * Takes `doc` as the version being edited when only its read-only fields differ: updates
   * those displays and leaves what the user is typing alone.
   */
  rebase(doc) {
    this.values = doc;
    for (const [name, { field, input }] of this.controls) {
      if (!field.readOnly) continue;
      const value = doc[name];
      if (input.tagName === 'PRE') input.textContent = value === undefined ? 'Not set yet.' : JSON.stringify(value, null, 2);
      else input.value = value === undefined || value === null ? '' : String(value);
    }
  }

  /** Sets the controls named in `values` (null or missing value: empty); others keep theirs. */
  apply(values) {
    for (const [name, value] of Object.entries(values)) {
      const control = this.controls.get(name);
      if (control && !control.field.readOnly) control.input.value = inputValue(control.field, value);
    }
  }

  /**
   * The document as typed: `{value, errors}`; `errors` lists what could not be converted
   * (malformed JSON, not a number). Empty controls are left out.
   */
  read() {
    const value = {};
    const errors = [];
    for (const [name, { field, input }] of this.controls) {
      if (field.readOnly) continue;
      const raw = input.value;
      switch (field.kind) {
        case 'enum':
          if (raw !== '') value[name] = field.schema.enum[Number(raw)];
          break;
        case 'boolean':
          if (raw !== '') value[name] = raw === 'true';
          break;
        case 'integer':
        case 'number':
          if (input.validity?.badInput) errors.push({ field: name, reason: 'must be a number' });
          else if (raw !== '') value[name] = Number(raw);
          break;
        case 'json':
          if (raw.trim() !== '') {
            try {
              value[name] = JSON.parse(raw);
            } catch {
              errors.push({ field: name, reason: 'is not valid JSON' });
            }
          }
          break;
        default:
          if (raw !== '') value[name] = raw;
      }
    }
    return { value, errors };
  }

  /** The merge patch from the document being edited to what the form holds now. */
  patch(value) {
    const before = {};
    for (const [name, { field }] of this.controls) {
      if (!field.readOnly && this.values && this.values[name] !== undefined) before[name] = this.values[name];
    }
    return mergePatchDiff(before, value);
  }

  clearErrors() {
    for (const { input, error } of this.controls.values()) {
      input.removeAttribute('aria-invalid');
      error.hidden = true;
      error.textContent = '';
    }
  }

  /**
   * Shows `[{field, reason}]` next to their fields (nested paths on their top-level field);
   * returns those that name no field of the form, for a message above it.
   */
  showErrors(fields) {
    this.clearErrors();
    const unplaced = [];
    let first = null;
    for (const { field, reason } of fields) {
      const top = String(field).split('.')[0];
      const control = this.controls.get(top);
      if (!control || control.field.readOnly) {
        unplaced.push({ field, reason });
        continue;
      }
      control.input.setAttribute('aria-invalid', 'true');
      const text = errorText(field, reason);
      control.error.textContent = control.error.textContent ? `${control.error.textContent} ${text}` : text;
      control.error.hidden = false;
      first ??= control.input;
    }
    first?.focus();
    return unplaced;
  }
}
