import { describe, expect, it } from 'vitest';
import { needsSignIn } from './api';

describe('needsSignIn', () => {
  it('is false only for public (or no) rules', () => {
    expect(needsSignIn(undefined)).toBe(false);
    expect(needsSignIn('public')).toBe(false);
    for (const rule of ['authenticated', 'owner', 'role:editor']) expect(needsSignIn(rule)).toBe(true);
  });
});
