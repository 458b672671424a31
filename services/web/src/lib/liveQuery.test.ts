import { describe, expect, it } from 'vitest';
import type { LiveEvent, Match } from './live';
import { addPage, applyChange, changeOf, emptySet, fromPage, versionOfEtag, type LiveSet } from './liveQuery';

const note = (id: string, title: string) => ({ id, title });
const ev = (type: string, id: string, version: number | undefined, data: unknown): LiveEvent => ({ type: `notes.${type}`, doc_id: id, version, data });

function apply(set: LiveSet, event: LiveEvent, match?: Match): LiveSet {
  return applyChange(set, changeOf(event, match)).set;
}
const titles = (set: LiveSet) => Object.fromEntries([...set.docs.values()].map((d) => [d.id, d.title]));

describe('live query reconciliation', () => {
  it('applies enter / stay / leave by version: the highest version per document wins', () => {
    // The list read at versions a=2, b=1; events buffered while it loaded overlap it.
    let set = fromPage({ items: [note('a', 'A2'), note('b', 'B1')], next: null, versions: { a: 2, b: 1 } });
    set = apply(set, ev('updated', 'a', 2, note('a', 'A2')), 'stay'); // already listed: no change
    set = apply(set, ev('updated', 'a', 1, note('a', 'A1')), 'stay'); // older: skipped
    expect(titles(set)).toEqual({ a: 'A2', b: 'B1' });
    set = apply(set, ev('updated', 'b', 2, note('b', 'B2')), 'stay');
    set = apply(set, ev('created', 'c', 1, note('c', 'C1')), 'enter');
    expect(titles(set)).toEqual({ a: 'A2', b: 'B2', c: 'C1' });
    // Unshared: the leave has no data; the document goes and stays gone for older states.
    set = apply(set, ev('updated', 'b', 3, null), 'leave');
    set = apply(set, ev('updated', 'b', 2, note('b', 'B2')), 'enter');
    expect(titles(set)).toEqual({ a: 'A2', c: 'C1' });
    // Shared again later: a newer enter brings it back.
    set = apply(set, ev('updated', 'b', 4, note('b', 'B4')), 'enter');
    expect(titles(set)).toEqual({ a: 'A2', b: 'B4', c: 'C1' });
    // A delete of a document in view arrives as leave (with its last state).
    set = apply(set, ev('deleted', 'c', 2, note('c', 'C1')), 'leave');
    expect(titles(set)).toEqual({ a: 'A2', b: 'B4' });
    expect(set.versions.get('c')).toBe(2);
  });

  it('without match (an unfiltered public channel) goes by the event type', () => {
    let set = emptySet();
    set = apply(set, ev('created', 'p', 1, { id: 'p', nombre: 'X' }));
    expect(changeOf(ev('updated', 'p', 2, null))).toEqual({ kind: 'none' });
    set = apply(set, ev('deleted', 'p', 2, { id: 'p', nombre: 'X' }));
    expect(set.docs.size).toBe(0);
    // Events without a version (older servers) always apply.
    set = apply(set, ev('created', 'q', undefined, { id: 'q' }));
    set = apply(set, ev('updated', 'q', undefined, { id: 'q', n: 2 }));
    expect(set.docs.get('q')).toEqual({ id: 'q', n: 2 });
  });

  it('a further page adds only what is not held in a newer state', () => {
    let set = fromPage({ items: [note('a', 'A1')], next: 'x', versions: { a: 1 } });
    set = apply(set, ev('updated', 'b', 5, note('b', 'B5')), 'enter');
    set = apply(set, ev('updated', 'c', 3, null), 'leave');
    set = addPage(set, { items: [note('b', 'B4'), note('c', 'C2'), note('d', 'D1')], next: null, versions: { b: 4, c: 2, d: 1 } });
    expect(titles(set)).toEqual({ a: 'A1', b: 'B5', d: 'D1' });
  });

  it('reads versions from ETags', () => {
    expect(versionOfEtag('"3"')).toBe(3);
    expect(versionOfEtag('W/"12"')).toBe(12);
    expect(versionOfEtag(null)).toBeNull();
    expect(versionOfEtag('"abc"')).toBeNull();
  });
});
