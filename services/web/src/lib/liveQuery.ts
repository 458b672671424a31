// A live query's documents: the REST list it read plus the events of its subscription,
// reconciled by document version (docs/protocol.md, "Live queries: a consistent start"). Per
// document the highest version seen wins: a listed page, an event or a write's answer whose
// version is not above the one held is already reflected and changes nothing; `enter` / `stay`
// add or replace, `leave` and deletes remove — and their version is remembered, so an older
// state arriving later cannot bring the document back.

import type { Doc, Json, Page } from './api';
import { actionOf } from './format';
import type { LiveEvent, Match } from './live';

export interface LiveSet {
  docs: Map<string, Doc>;
  /** id → the highest version seen (also of documents removed from the view). */
  versions: Map<string, number>;
}

export function emptySet(): LiveSet {
  return { docs: new Map(), versions: new Map() };
}

/** What one event (or a write's answer) does to the view. */
export type Change = { kind: 'upsert'; doc: Doc; version: number | null } | { kind: 'remove'; id: string; version: number | null } | { kind: 'none' };

const versionOf = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null);

/** `"3"` (an `ETag`) → 3; null when it is not a version. */
export function versionOfEtag(etag: string | null | undefined): number | null {
  const text = (etag ?? '').replace(/^W\//, '').replace(/"/g, '');
  return /^\d+$/.test(text) ? Number(text) : null;
}

/**
 * An event as a change: by `match` where the subscription is filtered or rule-checked (`leave`
 * removes, `enter`/`stay` upsert), else by its type (a delete removes, anything with data
 * upserts).
 */
export function changeOf(event: LiveEvent, match?: Match): Change {
  const data = event.data && typeof event.data === 'object' && !Array.isArray(event.data) ? (event.data as Record<string, Json>) : null;
  const id = String(event.doc_id ?? data?.id ?? '');
  if (!id) return { kind: 'none' };
  const version = versionOf(event.version);
  if (match === 'leave' || (match === undefined && actionOf(event.type) === 'deleted')) return { kind: 'remove', id, version };
  if (!data) return { kind: 'none' };
  return { kind: 'upsert', doc: { ...data, id }, version };
}

/** `set` with `change` applied; `applied` false when it was already reflected (or a no-op). */
export function applyChange(set: LiveSet, change: Change): { set: LiveSet; applied: boolean } {
  if (change.kind === 'none') return { set, applied: false };
  const id = change.kind === 'upsert' ? change.doc.id : change.id;
  const held = set.versions.get(id);
  if (change.version !== null && held !== undefined && change.version <= held) return { set, applied: false };
  const docs = new Map(set.docs);
  const versions = new Map(set.versions);
  if (change.version !== null) versions.set(id, change.version);
  if (change.kind === 'upsert') docs.set(id, change.doc);
  else if (!docs.delete(id)) return { set: { docs, versions }, applied: false };
  return { set: { docs, versions }, applied: true };
}

/** The first page of a (re)load: its documents and versions replace what was held. */
export function fromPage(page: Page<Doc>): LiveSet {
  const set = emptySet();
  for (const doc of page.items) {
    set.docs.set(doc.id, doc);
    const version = versionOf(page.versions?.[doc.id]);
    if (version !== null) set.versions.set(doc.id, version);
  }
  return set;
}

/** A further page ("Load more"): each listed document unless a newer state is held. */
export function addPage(set: LiveSet, page: Page<Doc>): LiveSet {
  let next = set;
  for (const doc of page.items) {
    const version = versionOf(page.versions?.[doc.id]);
    // Without versions (an older api), a document already shown came from a newer event.
    if (version === null && next.docs.has(doc.id)) continue;
    next = applyChange(next, { kind: 'upsert', doc, version }).set;
  }
  return next;
}
