import { describe, expect, it } from 'vitest';
import { buildFilter, opsFor, typedValue, withCondition, type Condition } from './filter';
import { fieldsOf } from './schema';

const fields = fieldsOf({
  type: 'object',
  properties: {
    name: { type: 'string' },
    species: { type: 'string', enum: ['Dog', 'Cat'] },
    age: { type: 'integer' },
    weight: { type: 'number' },
    vaccinated: { type: 'boolean' },
    shared_with: { type: 'array', items: { type: 'string' } },
    enrichment: { type: 'object' },
  },
});
const field = (name: string) => fields.find((f) => f.name === name)!;

describe('filters', () => {
  it('types values by the schema: numbers, whole numbers, booleans, choices, strings as typed', () => {
    expect(typedValue(field('age'), ' 3 ')).toEqual({ value: 3 });
    expect(typedValue(field('age'), '3.5')).toEqual({ error: 'age is a whole number' });
    expect(typedValue(field('weight'), '2.5')).toEqual({ value: 2.5 });
    expect(typedValue(field('weight'), 'heavy')).toEqual({ error: 'weight is a number' });
    expect(typedValue(field('vaccinated'), 'false')).toEqual({ value: false });
    expect(typedValue(field('species'), '1')).toEqual({ value: 'Cat' });
    expect(typedValue(field('name'), ' Rex ')).toEqual({ value: ' Rex ' });
    expect(typedValue(field('name'), '')).toEqual({ error: 'type a value for name' });
  });

  it('offers ranges only where the api allows them', () => {
    expect(opsFor(field('age'))).toEqual(['eq', 'ne', 'gt', 'gte', 'lt', 'lte']);
    expect(opsFor(field('name'))).toContain('gte');
    expect(opsFor(field('vaccinated'))).toEqual(['eq', 'ne']);
    expect(opsFor(field('species'))).toEqual(['eq', 'ne']);
    expect(opsFor(field('shared_with'))).toEqual(['eq']);
  });

  it('builds the subscription filter and the list query from the same conditions', () => {
    const conditions: Condition[] = [
      { field: 'species', op: 'eq', text: '0' },
      { field: 'age', op: 'gte', text: '3' },
      { field: 'age', op: 'lt', text: '10' },
      { field: 'vaccinated', op: 'ne', text: 'true' },
      { field: 'shared_with', op: 'eq', text: 'u-1' },
    ];
    const built = buildFilter(fields, conditions);
    expect(built.errors).toEqual([]);
    expect(built.json).toEqual({ species: 'Dog', age: { gte: 3, lt: 10 }, vaccinated: { ne: true }, shared_with: 'u-1' });
    expect(built.query).toEqual([
      ['species', 'Dog'],
      ['age[gte]', '3'],
      ['age[lt]', '10'],
      ['vaccinated[ne]', 'true'],
      ['shared_with', 'u-1'],
    ]);
    expect(buildFilter(fields, [])).toEqual({ json: null, query: [], errors: [] });
  });

  it('refuses what cannot be typed or compared, naming the field', () => {
    const built = buildFilter(fields, [
      { field: 'age', op: 'eq', text: 'old' },
      { field: 'vaccinated', op: 'gt', text: 'true' },
      { field: 'enrichment', op: 'eq', text: 'x' },
      { field: 'name', op: 'eq', text: 'Rex' },
    ]);
    expect(built.errors.map((e) => e.field)).toEqual(['age', 'vaccinated', 'enrichment']);
    expect(built.json).toEqual({ name: 'Rex' });
  });

  it('keeps one condition per field and operator', () => {
    let conditions: Condition[] = [];
    conditions = withCondition(conditions, { field: 'age', op: 'gte', text: '3' });
    conditions = withCondition(conditions, { field: 'age', op: 'lte', text: '9' });
    conditions = withCondition(conditions, { field: 'age', op: 'gte', text: '4' });
    expect(conditions).toEqual([
      { field: 'age', op: 'lte', text: '9' },
      { field: 'age', op: 'gte', text: '4' },
    ]);
  });
});
