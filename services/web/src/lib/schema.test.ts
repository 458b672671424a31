import { describe, expect, it } from 'vitest';
import { fieldsOf, mergePatchDiff, patchOf, placeErrors, rawValues, readValues } from './schema';

const schema = {
  type: 'object',
  required: ['nombre'],
  properties: {
    nombre: { type: 'string', minLength: 1 },
    precio: { type: 'number', minimum: 0 },
    talla: { type: 'string' },
    tags: { type: 'array' },
    enrichment: { type: 'object', readOnly: true },
  },
};

describe('schema forms', () => {
  const fields = fieldsOf(schema);
  it('reads typed values, refusing what cannot be converted', () => {
    const { value, errors } = readValues(fields, { nombre: 'A', precio: '2.5', talla: '', tags: '[1' });
    expect(value).toEqual({ nombre: 'A', precio: 2.5 });
    expect(errors).toEqual([{ field: 'tags', reason: 'is not valid JSON' }]);
  });
  it('patches only what changed; a cleared field becomes null; read-only fields never sent', () => {
    const doc = { nombre: 'A', precio: 1, talla: 'M', enrichment: { alerts: [] } };
    const raw = { ...rawValues(fields, doc), precio: '2', talla: '' };
    expect(patchOf(fields, doc, readValues(fields, raw).value)).toEqual({ precio: 2, talla: null });
    expect(mergePatchDiff({ a: { b: 1, c: 2 } }, { a: { b: 1, c: 3 } })).toEqual({ a: { c: 3 } });
  });
  it('places 422 errors next to their fields', () => {
    const { byField, unplaced } = placeErrors(fields, [
      { field: 'nombre', reason: 'is required' },
      { field: 'precio', reason: '-5 is less than the minimum of 0' },
      { field: 'enrichment', reason: 'is read-only' },
    ]);
    expect(byField).toEqual({ nombre: 'nombre is required', precio: '-5 is less than the minimum of 0' });
    expect(unplaced).toEqual([{ field: 'enrichment', reason: 'is read-only' }]);
  });
  it('edits an array of strings as one text per line (or comma separated)', () => {
    const notes = fieldsOf({
      type: 'object',
      properties: { shared_with: { type: 'array', maxItems: 50, items: { type: 'string' } }, tags: { type: 'array', items: { type: 'integer' } } },
    });
    expect(notes.map((f) => f.kind)).toEqual(['list', 'json']);
    const raw = rawValues(notes, { shared_with: ['u-1', 'u-2'] });
    expect(raw.shared_with).toBe('u-1\nu-2');
    expect(readValues(notes, { shared_with: ' u-1, u-3\n\nu-1 ' }).value).toEqual({ shared_with: ['u-1', 'u-3'] });
    // Emptied: left out, so an edit's patch removes the field.
    const { value } = readValues(notes, { shared_with: ' \n ' });
    expect(patchOf(notes, { shared_with: ['u-1'] }, value)).toEqual({ shared_with: null });
  });
});
