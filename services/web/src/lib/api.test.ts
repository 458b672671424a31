import { describe, expect, it } from 'vitest';
import { needsSignIn, perDocument, ruleText, sharingFields } from './api';

describe('needsSignIn', () => {
  it('is false only for public (or no) rules', () => {
    expect(needsSignIn(undefined)).toBe(false);
    expect(needsSignIn('public')).toBe(false);
    for (const rule of ['authenticated', 'owner', 'role:editor']) expect(needsSignIn(rule)).toBe(true);
  });
  it('reads lists of alternatives: per-document rules and the fields they share through', () => {
    const notes = ['owner', 'field:shared_with'];
    expect(needsSignIn(notes)).toBe(true);
    expect(needsSignIn(['owner', 'public'])).toBe(false);
    expect(perDocument(notes)).toBe(true);
    expect(perDocument('owner')).toBe(true);
    expect(perDocument(['owner', 'authenticated'])).toBe(false);
    expect(perDocument('public')).toBe(false);
    expect(sharingFields(notes)).toEqual(['shared_with']);
    expect(ruleText(notes)).toBe('owner, field:shared_with');
    expect(ruleText(undefined)).toBe('public');
    // The api writes a rule of several alternatives as text.
    expect(perDocument('owner, field:shared_with')).toBe(true);
    expect(sharingFields('owner, field:shared_with')).toEqual(['shared_with']);
    expect(needsSignIn('owner, public')).toBe(false);
  });
});
