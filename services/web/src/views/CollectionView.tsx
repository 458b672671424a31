// One collection: its documents table (cursor paging, sort, filters), kept live from the
// broadcaster (subscribe first, load after `subscribed`, events during the load applied after
// it, duplicates dropped by the client), and the create / edit / delete dialogs.

import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { needsSignIn, type Collection, type Doc, type Json } from '../lib/api';
import { actionOf, cellText, describeError, shortId, titleOf } from '../lib/format';
import type { LiveEvent } from '../lib/live';
import { fieldsOf } from '../lib/schema';
import { api, live, session, useApp } from '../store';
import { Dialog } from '../components/Dialog';
import { CreateDialog, DeleteDialog, EditDialog, type Editor } from './DocDialogs';

const PAGE_SIZE = 25;

/** Orders like the api: each sort key (missing/null first ascending, last descending), then id. */
export function comparator(sort: string): (a: Doc, b: Doc) => number {
  const keys = sort ? sort.split(',').map((part) => ({ field: part.replace(/^-/, ''), descending: part.startsWith('-') })) : [];
  const compareValues = (a: unknown, b: unknown): number => {
    const aNull = a === undefined || a === null;
    const bNull = b === undefined || b === null;
    if (aNull || bNull) return aNull === bNull ? 0 : aNull ? -1 : 1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
    const x = typeof a === 'string' ? a : JSON.stringify(a);
    const y = typeof b === 'string' ? b : JSON.stringify(b);
    return x < y ? -1 : x > y ? 1 : 0;
  };
  return (a, b) => {
    for (const { field, descending } of keys) {
      const order = compareValues(a[field], b[field]);
      if (order !== 0) return descending ? -order : order;
    }
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  };
}

/** Whether `doc` passes the filters (field = value, compared as the api compares text). */
export function matches(doc: Record<string, Json>, filters: Record<string, string>): boolean {
  return Object.entries(filters).every(([field, value]) => value === '' || String(doc[field] ?? '') === value);
}

export const singular = (name: string) => (name.endsWith('s') ? name.slice(0, -1) : name);

type Open = { kind: 'create' } | { kind: 'edit'; id: string } | { kind: 'delete'; id: string } | { kind: 'details'; id: string } | null;

export function CollectionView({ collection }: { collection: Collection }) {
  const name = collection.name;
  const schema = useMemo(() => collection.schema ?? { type: 'object' }, [collection]);
  const fields = useMemo(() => fieldsOf(schema), [schema]);
  const username = useApp((s) => s.username);
  const openAuth = useApp((s) => s.openAuth);
  const toast = useApp((s) => s.toast);
  const logEvent = useApp((s) => s.logEvent);
  const logNotice = useApp((s) => s.logNotice);
  const signedIn = username !== null;
  const readNeedsAuth = needsSignIn(collection.access?.read);
  const writeNeedsAuth = needsSignIn(collection.access?.write);
  const canRead = !readNeedsAuth || signedIn;
  const canWrite = !writeNeedsAuth || signedIn;

  const [docs, setDocs] = useState<Map<string, Doc>>(() => new Map());
  const [flash, setFlash] = useState<Set<string>>(() => new Set());
  const [next, setNext] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [sort, setSort] = useState('');
  const [filters, setFilters] = useState<Record<string, string>>({});
  const [filterField, setFilterField] = useState('');
  const [filterValue, setFilterValue] = useState('');
  const [open, setOpen] = useState<Open>(null);
  const [moreBusy, setMoreBusy] = useState(false);

  const docsRef = useRef(docs);
  const sortRef = useRef(sort);
  const filtersRef = useRef(filters);
  const loadingRef = useRef<AbortController | null>(null);
  const bufferedRef = useRef<[LiveEvent, number][] | null>(null);
  const liveChanges = useRef(new Map<string, number>());
  const editorRef = useRef<Editor | null>(null);
  useEffect(() => {
    sortRef.current = sort;
    filtersRef.current = filters;
  }, [sort, filters]);

  const commit = useCallback((map: Map<string, Doc>) => {
    docsRef.current = map;
    setDocs(map);
  }, []);

  const upsert = useCallback(
    (doc: Doc, highlight: boolean) => {
      const map = new Map(docsRef.current);
      if (matches(doc, filtersRef.current)) map.set(doc.id, doc);
      else map.delete(doc.id);
      commit(map);
      if (highlight) {
        setFlash((s) => new Set(s).add(doc.id));
        setTimeout(() => setFlash((s) => {
          const copy = new Set(s);
          copy.delete(doc.id);
          return copy;
        }), 1200);
      }
    },
    [commit],
  );

  const removeDoc = useCallback(
    (id: string) => {
      if (!docsRef.current.has(id)) return;
      const map = new Map(docsRef.current);
      map.delete(id);
      commit(map);
    },
    [commit],
  );

  const applyEvent = useCallback(
    (event: LiveEvent) => {
      const data = event.data && typeof event.data === 'object' ? (event.data as Record<string, Json>) : null;
      const id = String(event.doc_id ?? data?.id ?? '');
      if (!id) return;
      liveChanges.current.set(id, (liveChanges.current.get(id) ?? 0) + 1);
      if (actionOf(event.type) === 'deleted') removeDoc(id);
      else if (data) upsert({ ...data, id }, true);
    },
    [removeDoc, upsert],
  );

  const reload = useCallback(async () => {
    loadingRef.current?.abort();
    const controller = new AbortController();
    loadingRef.current = controller;
    bufferedRef.current ??= [];
    setLoading(true);
    try {
      const page = await api.list(name, { limit: PAGE_SIZE, sort: sortRef.current, filters: filtersRef.current, signal: controller.signal });
      if (controller.signal.aborted) return;
      commit(new Map(page.items.map((doc) => [doc.id, doc])));
      setNext(page.next);
      setError(null);
    } catch (err) {
      if (controller.signal.aborted) return;
      setError(`Could not load ${name}: ${describeError(err)}`);
    } finally {
      if (loadingRef.current === controller) {
        loadingRef.current = null;
        const events = bufferedRef.current ?? [];
        bufferedRef.current = null;
        for (const [event] of events) applyEvent(event);
        setLoading(false);
      }
    }
  }, [name, commit, applyEvent]);

  // Subscribe, then load once the subscription point is known (nothing falls in between).
  useEffect(() => {
    commit(new Map());
    setNext(null);
    setError(null);
    if (!canRead) {
      setLoading(false);
      return;
    }
    let subscribedOnce = false;
    live.subscribe(
      name,
      {
        onSubscribed: ({ fresh }) => {
          subscribedOnce = true;
          if (fresh) void reload();
        },
        onEvent: (event, seq) => {
          logEvent(event, seq, name);
          if (bufferedRef.current) bufferedRef.current.push([event, seq]);
          else applyEvent(event);
          editorRef.current?.(event, seq);
        },
        onResync: () => void reload(),
        onError: (code, message) => {
          if (code === 'unauthorized' && session.signedIn) {
            void session.refresh().then((ok) => ok && live.setToken(name, session.token()));
            return;
          }
          logNotice(`Live updates for ${name} stopped: ${message}`, 'error');
        },
      },
      { token: readNeedsAuth ? session.token() : null },
    );
    // Broadcaster unreachable: load now (and again when the subscription starts).
    let fallback: ReturnType<typeof setTimeout> | undefined;
    if (live.state !== 'open') void reload();
    else fallback = setTimeout(() => subscribedOnce || void reload(), 1500);
    const unlisten = session.onChange((reason) => {
      if (reason === 'refreshed' && readNeedsAuth) live.setToken(name, session.token());
    });
    return () => {
      clearTimeout(fallback);
      unlisten();
      loadingRef.current?.abort();
      loadingRef.current = null;
      bufferedRef.current = null;
      live.unsubscribe(name);
    };
  }, [name, canRead, readNeedsAuth, reload, applyEvent, commit, logEvent, logNotice]);

  const first = useRef(true);
  const filtersKey = JSON.stringify(filters);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    if (canRead) void reload();
    // Only a change of order or filters reloads here.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sort, filtersKey]);

  const loadMore = async () => {
    if (!next || loadingRef.current) return;
    setMoreBusy(true);
    try {
      const page = await api.list(name, { limit: PAGE_SIZE, sort, filters, cursor: next });
      const map = new Map(docsRef.current);
      // Documents already shown came from live events, which are newer than this page.
      for (const doc of page.items) if (!map.has(doc.id)) map.set(doc.id, doc);
      commit(map);
      setNext(page.next);
    } catch (err) {
      toast(`Could not load more: ${describeError(err)}`, 'error');
    } finally {
      setMoreBusy(false);
    }
  };

  const rows = useMemo(() => [...docs.values()].sort(comparator(sort)), [docs, sort]);
  const tasks = (collection.tasks ?? []).map((t) => t.kind);
  const notice = !canRead ? `Reading ${name} requires signing in.` : !canWrite ? `Creating, editing and deleting ${name} requires signing in.` : null;
  const n = docs.size;
  let status: string;
  if (!canRead) status = `Sign in to see the ${name}.`;
  else if (loading && n === 0) status = 'Loading…';
  else {
    const shown = n === 0 ? `No ${name} yet.` : `${n} document${n === 1 ? '' : 's'} shown`;
    status = next ? `${shown} · more to load` : n === 0 ? shown : `${shown} · all loaded`;
  }
  const filterable = fields.filter((f) => f.kind !== 'json');
  const activeFilters = Object.entries(filters).filter(([, v]) => v !== '');

  const sortHeader = (field: string) => {
    const state = sort === field ? 'ascending' : sort === `-${field}` ? 'descending' : undefined;
    const nextSort = state === 'ascending' ? `-${field}` : state === 'descending' ? '' : field;
    return (
      <th key={field} scope="col" aria-sort={state}>
        <button type="button" className="sort" title={`Sort by ${field}`} onClick={() => setSort(nextSort)}>
          {field}
          <span className="sort-mark" aria-hidden="true">
            {state === 'ascending' ? ' ▲' : state === 'descending' ? ' ▼' : ''}
          </span>
        </button>
      </th>
    );
  };

  const openDoc = (kind: 'edit' | 'delete') => (id: string) => {
    if (!canWrite) return openAuth('login');
    setOpen({ kind, id });
  };

  return (
    <>
      <div className="view-head">
        <div>
          <h1 id="collection-title" tabIndex={-1}>
            {name}
          </h1>
          <p className="view-meta">
            <span className="badge">read: {collection.access?.read ?? 'public'}</span>
            <span className={`badge ${writeNeedsAuth ? 'badge-lock' : ''}`}>write: {collection.access?.write ?? 'public'}</span>
            <span className="muted">
              {' '}channel <code>{name}</code>
            </span>
            {tasks.length > 0 && (
              <span className="muted">
                {' '}· tasks <code>{tasks.join(', ')}</code>
              </span>
            )}
          </p>
        </div>
        <div className="view-actions">
          <button type="button" disabled={!canRead} onClick={() => void reload()}>
            Reload
          </button>
          <button type="button" className="primary" disabled={!canWrite} title={canWrite ? '' : 'Sign in to create documents'} onClick={() => setOpen({ kind: 'create' })}>
            New {singular(name)}
          </button>
        </div>
      </div>
      {notice && (
        <div className="notice" role="status">
          <span>{notice} </span>
          <button type="button" className="link" onClick={() => openAuth('login')}>
            Sign in
          </button>
        </div>
      )}
      {error && (
        <div className="banner banner-error" role="alert">
          <span>{error} </span>
          <button type="button" onClick={() => void reload()}>
            Retry
          </button>
        </div>
      )}
      {canRead && filterable.length > 0 && (
        <form
          className="filters"
          aria-label={`Filter ${name}`}
          onSubmit={(e) => {
            e.preventDefault();
            if (!filterField) return;
            setFilters((f) => ({ ...f, [filterField]: filterValue }));
            setFilterValue('');
          }}
        >
          <label htmlFor="filter-field">Filter</label>
          <select id="filter-field" value={filterField} onChange={(e) => setFilterField(e.target.value)}>
            <option value="">field…</option>
            {filterable.map((f) => (
              <option key={f.name} value={f.name}>
                {f.name}
              </option>
            ))}
          </select>
          <label htmlFor="filter-value" className="sr-only">
            Value
          </label>
          <input id="filter-value" placeholder="equals…" value={filterValue} onChange={(e) => setFilterValue(e.target.value)} maxLength={200} />
          <button type="submit" className="small" disabled={!filterField}>
            Apply
          </button>
          {activeFilters.map(([field, value]) => (
            <span key={field} className="chip">
              {field} = {value || '(empty)'}
              <button
                type="button"
                className="icon small"
                aria-label={`Remove filter ${field}`}
                onClick={() =>
                  setFilters((f) => {
                    const copy = { ...f };
                    delete copy[field];
                    return copy;
                  })
                }
              >
                ×
              </button>
            </span>
          ))}
        </form>
      )}
      <div className="table-wrap">
        <table className="docs" aria-describedby="table-status">
          <caption className="sr-only">Documents of {name}</caption>
          <thead>
            <tr>
              <th scope="col">id</th>
              {fields.map((f) => (f.kind === 'json' ? <th key={f.name} scope="col">{f.name}</th> : sortHeader(f.name)))}
              <th scope="col" className="actions">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((doc) => (
              <tr key={doc.id} data-id={doc.id} className={flash.has(doc.id) ? 'flash' : undefined}>
                <td className="cell-id" data-label="id">
                  <button type="button" className="link mono" title={`Show ${doc.id}`} onClick={() => setOpen({ kind: 'details', id: doc.id })}>
                    {shortId(doc.id)}
                  </button>
                </td>
                {fields.map((f) => {
                  const value = doc[f.name];
                  return (
                    <td
                      key={f.name}
                      data-field={f.name}
                      data-label={f.name}
                      className={typeof value === 'number' ? 'num' : undefined}
                      title={f.kind === 'json' && value !== undefined ? JSON.stringify(value).slice(0, 500) : undefined}
                    >
                      {f.readOnly && value === undefined && tasks.length ? <span className="muted">pending…</span> : cellText(value)}
                    </td>
                  );
                })}
                <td className="actions">
                  <button type="button" className="small" disabled={!canWrite} onClick={() => openDoc('edit')(doc.id)} aria-label={`Edit ${titleOf(doc) || doc.id}`}>
                    Edit
                  </button>
                  <button type="button" className="small danger" disabled={!canWrite} onClick={() => openDoc('delete')(doc.id)} aria-label={`Delete ${titleOf(doc) || doc.id}`}>
                    Delete
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <div className="table-foot">
        <p className="table-status" id="table-status" aria-live="polite">
          {status}
        </p>
        {canRead && next && (
          <button type="button" className="more" disabled={moreBusy} onClick={() => void loadMore()}>
            Load more
          </button>
        )}
      </div>
      {open?.kind === 'details' && docs.get(open.id) && (
        <Dialog title={`${singular(name)} ${shortId(open.id)}`} onClose={() => setOpen(null)}>
          <pre className="json" tabIndex={0}>
            {JSON.stringify(docs.get(open.id), null, 2)}
          </pre>
        </Dialog>
      )}
      {open?.kind === 'create' && (
        <CreateDialog
          name={name}
          fields={fields}
          onClose={() => setOpen(null)}
          onCreated={(doc) => {
            // Its events may have overtaken this answer (a pet can be enriched already): keep theirs.
            if (!docsRef.current.has(doc.id)) upsert(doc, true);
            toast(`Created ${singular(name)} ${shortId(doc.id)}`, 'success');
          }}
        />
      )}
      {open?.kind === 'edit' && (
        <EditDialog
          name={name}
          id={open.id}
          fields={fields}
          editorRef={editorRef}
          liveChanges={liveChanges.current}
          onClose={() => setOpen(null)}
          onGone={() => removeDoc(open.id)}
          onSaved={(doc) => {
            upsert(doc, true);
            toast(`Saved ${singular(name)} ${shortId(doc.id)}`, 'success');
          }}
        />
      )}
      {open?.kind === 'delete' && (
        <DeleteDialog
          name={name}
          id={open.id}
          doc={docs.get(open.id) ?? null}
          onClose={() => setOpen(null)}
          onDeleted={(already) => {
            removeDoc(open.id);
            toast(already ? 'It was already deleted.' : `Deleted ${singular(name)} ${shortId(open.id)}`, already ? 'info' : 'success');
          }}
          onShow={() => setOpen({ kind: 'details', id: open.id })}
        />
      )}
    </>
  );
}
