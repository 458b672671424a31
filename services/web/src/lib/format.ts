// Small text helpers shared by the views.

import { ApiError } from './api';

/** `6b032ef76a2e7cf9b692d0b5` → `6b03…d0b5`. */
export function shortId(id: unknown): string {
  const text = String(id ?? '');
  return text.length > 12 ? `${text.slice(0, 4)}…${text.slice(-4)}` : text;
}

/** A local time like 18:05:43. */
export function clock(date = new Date()): string {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

/** A readable one-line form of any JSON value for table cells. */
export function cellText(value: unknown): string {
  if (value === undefined || value === null) return '—';
  if (typeof value === 'boolean') return value ? 'Yes' : 'No';
  if (typeof value === 'object') {
    if (Array.isArray(value)) {
      if (value.length === 0) return '—';
      // A short list of texts reads as itself; anything longer as a count.
      const joined = value.every((item) => typeof item === 'string') ? value.map((item) => shortId(item)).join(', ') : '';
      if (joined && joined.length <= 40) return joined;
      return `${value.length} item${value.length === 1 ? '' : 's'}`;
    }
    const alerts = (value as { alerts?: unknown }).alerts;
    if (Array.isArray(alerts)) {
      const n = alerts.length;
      return n === 0 ? 'No alerts' : `${n} alert${n === 1 ? '' : 's'}`;
    }
    const keys = Object.keys(value).length;
    return `{${keys} field${keys === 1 ? '' : 's'}}`;
  }
  return String(value);
}

/** `products.created` → `created`. */
export function actionOf(type: unknown): string {
  const text = String(type ?? '');
  return text.slice(text.lastIndexOf('.') + 1);
}

/** A document's most telling text: its name-like field, else its first string field. */
export function titleOf(doc: unknown): string {
  if (!doc || typeof doc !== 'object') return '';
  const record = doc as Record<string, unknown>;
  for (const key of ['name', 'nombre', 'title', 'username']) {
    const value = record[key];
    if (typeof value === 'string') return value;
  }
  const first = Object.entries(record).find(([key, value]) => key !== 'id' && typeof value === 'string');
  return first ? String(first[1]) : '';
}

/** A user-facing sentence for a failed request. */
export function describeError(err: unknown, what = 'The request'): string {
  if (!(err instanceof ApiError)) return `${what} failed: ${err instanceof Error ? err.message : String(err)}`;
  switch (err.status) {
    case 0:
      return err.message;
    case 401:
      return 'You need to sign in for this (or your session ended): sign in and try again.';
    case 403:
      return `Not allowed: ${err.message}`;
    case 404:
      return 'It no longer exists: someone deleted it.';
    case 412:
      return 'Someone else changed this document after you opened it, so your changes were not saved.';
    case 429:
      return `Too many attempts: try again in ${err.retryAfter ?? 'a few'} seconds.`;
    case 503:
      return `The service is temporarily unavailable: ${err.message}`;
    default:
      return err.message;
  }
}
