// One collection: its documents table (cursor paging, sort, filters), kept live from the
// broadcaster as a live query (docs/protocol.md): the filter controls build one typed filter
// that is both the REST list's query and the subscription's `filter`; the view subscribes first,
// lists once `subscribed` came, holds the events meanwhile, and reconciles by document version
// (lib/liveQuery.ts), applying `enter` / `stay` / `leave`. Also the create / edit / delete dialogs.

import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { alternatives, ApiError, needsSignIn, perDocument, ruleText, sharingFields, type Collection, type Doc } from '../lib/api';
import { cellText, describeError, shortId, titleOf } from '../lib/format';
import {
  buildFilter,
  filterable,
  filterKey,
  initialText,
  OP_WORDS,
  opLabel,
  opsFor,
  typedValue,
  valueLabel,
  withCondition,
  type Condition,
  type Op,
} from '../lib/filter';
import type { LiveEvent, Match } from '../lib/live';
import { addPage, applyChange, changeOf, emptySet, fromPage, versionOfEtag, type Change, type LiveSet } from '../lib/liveQuery';
import { fieldsOf, type Field } from '../lib/schema';
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

export const singular = (name: string) => (name.endsWith('s') ? name.slice(0, -1) : name);

type Open = { kind: 'create' } | { kind: 'edit'; id: string } | { kind: 'delete'; id: string } | { kind: 'details'; id: string } | null;

/** A filter the api refused (the socket's `bad_filter`, or the list's 400), or one not typed. */
interface FilterProblem {
  field?: string | undefined;
  message: string;
}

export function CollectionView({ collection }: { collection: Collection }) {
  const name = collection.name;
  const schema = useMemo(() => collection.schema ?? { type: 'object' }, [collection]);
  const fields = useMemo(() => fieldsOf(schema), [schema]);
  const username = useApp((s) => s.username);
  const userId = useApp((s) => s.userId);
  const meRoles = useApp((s) => s.meRoles);
  const roles = useApp((s) => s.roles);
  const openAuth = useApp((s) => s.openAuth);
  const toast = useApp((s) => s.toast);
  const logEvent = useApp((s) => s.logEvent);
  const logNotice = useApp((s) => s.logNotice);
  const signedIn = username !== null;
  const readRule = collection.access?.read;
  const writeRule = collection.access?.write;
  const readNeedsAuth = needsSignIn(readRule);
  const writeNeedsAuth = needsSignIn(writeRule);
  const private_ = perDocument(readRule);
  const sharedThrough = sharingFields(readRule);
  const isAdmin = (meRoles ?? roles).includes('admin');
  const ownerWrites = alternatives(writeRule).every((r) => r === 'owner' || r.startsWith('field:'));
  const canRead = !readNeedsAuth || signedIn;
  const canWrite = !writeNeedsAuth || signedIn;
  /** Whose documents this view shows (a new user means a new subscription and list). */
  const reader = readNeedsAuth ? userId : null;

  const [set, setSet] = useState<LiveSet>(emptySet);
  const [flash, setFlash] = useState<Set<string>>(() => new Set());
  const [next, setNext] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  /** The list answered 401: the session ended (or never was) — a sign-in state, not an error. */
  const [signInNeeded, setSignInNeeded] = useState(false);
  const [sort, setSort] = useState('');
  const [conditions, setConditions] = useState<Condition[]>([]);
  const [filterField, setFilterField] = useState('');
  const [filterOp, setFilterOp] = useState<Op>('eq');
  const [filterText, setFilterText] = useState('');
  const [inputProblem, setInputProblem] = useState<string | null>(null);
  const [refused, setRefused] = useState<FilterProblem | null>(null);
  const [open, setOpen] = useState<Open>(null);
  const [moreBusy, setMoreBusy] = useState(false);

  // Private collections can also be filtered on their creator (`created_by`, which their events
  // carry): the "Only mine" toggle.
  const filterSchema = useMemo(
    () => (private_ ? [...fields, { name: 'created_by', schema: { type: 'string' }, required: false, readOnly: true, kind: 'string' as const }] : fields),
    [fields, private_],
  );
  const filter = useMemo(() => buildFilter(filterSchema, conditions), [filterSchema, conditions]);
  const fKey = filterKey(filter.json);
  const filtered = filter.json !== null;

  const setRef = useRef(set);
  const sortRef = useRef(sort);
  const filterRef = useRef(filter);
  const loadingRef = useRef<AbortController | null>(null);
  const bufferedRef = useRef<[LiveEvent, Match | undefined][] | null>(null);
  const liveChanges = useRef(new Map<string, number>());
  const editorRef = useRef<Editor | null>(null);
  useEffect(() => {
    sortRef.current = sort;
    filterRef.current = filter;
  }, [sort, filter]);

  const commit = useCallback((next: LiveSet) => {
    setRef.current = next;
    setSet(next);
  }, []);

  const highlight = useCallback((id: string) => {
    setFlash((s) => new Set(s).add(id));
    setTimeout(
      () =>
        setFlash((s) => {
          const copy = new Set(s);
          copy.delete(id);
          return copy;
        }),
      1200,
    );
  }, []);

  /** Applies a change unless a newer state of the document is held; true when it did. */
  const change = useCallback(
    (what: Change, flashIt: boolean) => {
      const { set: nextSet, applied } = applyChange(setRef.current, what);
      if (nextSet !== setRef.current) commit(nextSet);
      if (applied && flashIt && what.kind === 'upsert') highlight(what.doc.id);
      return applied;
    },
    [commit, highlight],
  );

  const applyEvent = useCallback(
    (event: LiveEvent, match: Match | undefined) => {
      const what = changeOf(event, match);
      if (what.kind === 'none') return;
      const id = what.kind === 'upsert' ? what.doc.id : what.id;
      liveChanges.current.set(id, (liveChanges.current.get(id) ?? 0) + 1);
      change(what, true);
    },
    [change],
  );

  const reload = useCallback(async () => {
    loadingRef.current?.abort();
    const controller = new AbortController();
    loadingRef.current = controller;
    bufferedRef.current ??= [];
    setLoading(true);
    const { query, errors } = filterRef.current;
    try {
      if (errors.length > 0) throw new Error(errors[0]?.message);
      const page = await api.list(name, { limit: PAGE_SIZE, sort: sortRef.current, filter: query, signal: controller.signal });
      if (controller.signal.aborted) return;
      commit(fromPage(page));
      setNext(page.next);
      setError(null);
      setSignInNeeded(false);
    } catch (err) {
      if (controller.signal.aborted) return;
      commit(emptySet());
      setNext(null);
      if (err instanceof ApiError && err.status === 401) {
        setError(null);
        setSignInNeeded(true);
      } else if (err instanceof ApiError && err.status === 400 && query.length > 0) {
        // The filter was refused: say so next to the controls (the socket says it too).
        setError(null);
        setRefused((r) => r ?? { message: err.message });
      } else {
        setError(`Could not load ${name}: ${describeError(err)}`);
      }
    } finally {
      if (loadingRef.current === controller) {
        loadingRef.current = null;
        const events = bufferedRef.current ?? [];
        bufferedRef.current = null;
        for (const [event, match] of events) applyEvent(event, match);
        setLoading(false);
      }
    }
  }, [name, commit, applyEvent]);

  // Subscribe (with the filter), then list once the subscription point is known: every change
  // after it arrives as an event, the versions make the overlap harmless. A new filter (or
  // reader) is a new subscription and a new list.
  useEffect(() => {
    commit(emptySet());
    setNext(null);
    setError(null);
    setRefused(null);
    setSignInNeeded(false);
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
        onEvent: (event, seq, match) => {
          logEvent(event, seq, name, match);
          if (bufferedRef.current) bufferedRef.current.push([event, match]);
          else applyEvent(event, match);
          editorRef.current?.(event, seq);
        },
        onResync: () => void reload(),
        onError: (code, message, field) => {
          if (code === 'unauthorized' && session.signedIn) {
            // The token expired: refresh, then resume after the last event applied.
            void session.refresh().then((ok) => ok && live.resume(name));
            return;
          }
          if (code === 'bad_filter') {
            setRefused({ field, message });
            return;
          }
          logNotice(`Live updates for ${name} stopped: ${message}`, 'error');
        },
      },
      { token: readNeedsAuth ? () => session.token() : null, filter: filterRef.current.json },
    );
    // Broadcaster unreachable: load now (and again when the subscription starts).
    let fallback: ReturnType<typeof setTimeout> | undefined;
    if (live.state !== 'open') void reload();
    else fallback = setTimeout(() => subscribedOnce || void reload(), 1500);
    return () => {
      clearTimeout(fallback);
      loadingRef.current?.abort();
      loadingRef.current = null;
      bufferedRef.current = null;
      live.unsubscribe(name);
    };
  }, [name, canRead, readNeedsAuth, reader, fKey, reload, applyEvent, commit, logEvent, logNotice]);

  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    if (canRead) void reload();
    // Only a change of order reloads here (a new filter resubscribes, above).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [sort]);

  const loadMore = async () => {
    if (!next || loadingRef.current) return;
    setMoreBusy(true);
    try {
      const page = await api.list(name, { limit: PAGE_SIZE, sort, filter: filter.query, cursor: next });
      commit(addPage(setRef.current, page));
      setNext(page.next);
    } catch (err) {
      toast(`Could not load more: ${describeError(err)}`, 'error');
    } finally {
      setMoreBusy(false);
    }
  };

  /**
   * A write's answer (`etag`: its version). Filtered, the view follows the subscription alone
   * (the document may not match any more); unfiltered, the answer shows at once and its event,
   * of the same version, then changes nothing.
   */
  const written = (doc: Doc, etag: string | null) => {
    if (filtered) {
      if (!live.isActive(name)) void reload();
      return;
    }
    change({ kind: 'upsert', doc, version: versionOfEtag(etag) }, true);
  };

  // --- filter controls ---------------------------------------------------------------------

  const filterFields = fields.filter(filterable);
  const pickedField: Field | undefined = filterFields.find((f) => f.name === filterField);
  const pickField = (fieldName: string) => {
    const field = filterFields.find((f) => f.name === fieldName);
    setFilterField(fieldName);
    setFilterOp('eq');
    setFilterText(initialText(field));
    setInputProblem(null);
  };
  const applyFilter = (e: FormEvent) => {
    e.preventDefault();
    if (!pickedField) return;
    const typed = typedValue(pickedField, filterText);
    if ('error' in typed) {
      setInputProblem(typed.error);
      return;
    }
    setInputProblem(null);
    setRefused(null);
    setConditions((c) => withCondition(c, { field: pickedField.name, op: filterOp, text: filterText }));
    if (pickedField.kind !== 'boolean' && pickedField.kind !== 'enum') setFilterText('');
  };
  const removeCondition = (condition: Condition) => {
    setRefused(null);
    setConditions((c) => c.filter((x) => x !== condition));
  };
  const filterProblem = inputProblem ?? refused?.message ?? null;
  /** The quick filters of a private collection: my own documents, or those shared with me. */
  const quick =
    private_ && userId
      ? [
          { key: 'mine', label: 'Only mine', condition: { field: 'created_by', op: 'eq' as Op, text: userId } },
          ...sharedThrough
            .filter((f) => fields.some((field) => field.name === f && filterable(field)))
            .slice(0, 1)
            .map((f) => ({ key: 'shared', label: 'Shared with me', condition: { field: f, op: 'eq' as Op, text: userId } })),
        ]
      : [];
  const isOn = (q: Condition) => conditions.some((c) => c.field === q.field && c.op === q.op && c.text === q.text);
  const chipText = (c: Condition) => {
    const quickOne = quick.find((q) => q.condition.field === c.field && q.condition.op === c.op && q.condition.text === c.text);
    if (quickOne) return quickOne.label.toLowerCase();
    const field = filterSchema.find((f) => f.name === c.field);
    return `${c.field} ${opLabel(field, c.op)} ${valueLabel(field, c.text)}`;
  };

  const ownsOrMay = (doc: Doc) => {
    if (!ownerWrites || isAdmin) return true;
    const creator = doc.created_by;
    return typeof creator !== 'string' || creator === userId;
  };

  const docs = set.docs;
  const rows = useMemo(() => [...docs.values()].sort(comparator(sort)), [docs, sort]);
  const tasks = (collection.tasks ?? []).map((t) => t.kind);
  const mustSignIn = !canRead || signInNeeded;
  let notice: string | null = null;
  if (mustSignIn) notice = private_ ? `Your ${name} are private: sign in to see yours and those shared with you.` : `Reading ${name} requires signing in.`;
  else if (!canWrite) notice = `Creating, editing and deleting ${name} requires signing in.`;
  const n = docs.size;
  let status: string;
  if (mustSignIn) status = private_ ? `Sign in to see your ${name}.` : `Sign in to see the ${name}.`;
  else if (loading && n === 0) status = 'Loading…';
  else if (refused) status = `No ${name} shown: the filter was refused.`;
  else {
    const none = filtered ? `No ${name} match the filter.` : `No ${name} yet.`;
    const shown = n === 0 ? none : `${n} document${n === 1 ? '' : 's'} shown${filtered ? ' (filtered)' : ''}`;
    status = next ? `${shown} · more to load` : n === 0 ? shown : `${shown} · all loaded`;
  }

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

  let valueControl;
  const valueProps = {
    id: 'filter-value',
    value: filterText,
    disabled: !pickedField,
    'aria-invalid': inputProblem ? true : undefined,
    'aria-describedby': 'filter-error',
    onChange: (e: { target: { value: string } }) => {
      setFilterText(e.target.value);
      setInputProblem(null);
    },
  } as const;
  if (pickedField?.kind === 'boolean') {
    valueControl = (
      <select {...valueProps}>
        <option value="true">Yes</option>
        <option value="false">No</option>
      </select>
    );
  } else if (pickedField?.kind === 'enum') {
    valueControl = (
      <select {...valueProps}>
        {(pickedField.schema.enum ?? []).map((option, index) => (
          <option key={index} value={String(index)}>
            {String(option)}
          </option>
        ))}
      </select>
    );
  } else if (pickedField?.kind === 'integer' || pickedField?.kind === 'number') {
    valueControl = <input {...valueProps} type="number" step={pickedField.kind === 'integer' ? '1' : 'any'} placeholder="value…" />;
  } else {
    valueControl = <input {...valueProps} placeholder={pickedField?.kind === 'list' ? 'contains…' : 'value…'} maxLength={1024} autoComplete="off" />;
  }

  return (
    <>
      <div className="view-head">
        <div>
          <h1 id="collection-title" tabIndex={-1}>
            {name}
          </h1>
          <p className="view-meta">
            <span className={`badge ${readNeedsAuth ? 'badge-lock' : ''}`}>read: {ruleText(readRule)}</span>
            <span className={`badge ${writeNeedsAuth ? 'badge-lock' : ''}`}>write: {ruleText(writeRule)}</span>
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
          <button type="button" disabled={mustSignIn} onClick={() => void reload()}>
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
      {!mustSignIn && private_ && sharedThrough.length > 0 && userId && (
        <p className="share-hint muted" id="share-hint">
          You see the {name} you wrote and those shared with you. To share one, add a user’s id to its <code>{sharedThrough.join(', ')}</code>. Your id:{' '}
          <code className="my-id" id="my-user-id">
            {userId}
          </code>{' '}
          <button
            type="button"
            className="link small"
            onClick={() => {
              void navigator.clipboard?.writeText(userId).then(
                () => toast('Your user id was copied.', 'success'),
                () => toast('Could not copy: select the id and copy it.', 'error'),
              );
            }}
          >
            Copy
          </button>
        </p>
      )}
      {error && (
        <div className="banner banner-error" role="alert">
          <span>{error} </span>
          <button type="button" onClick={() => void reload()}>
            Retry
          </button>
        </div>
      )}
      {!mustSignIn && filterFields.length > 0 && (
        <div className="filter-bar">
          <form className="filters" aria-label={`Filter ${name}`} onSubmit={applyFilter}>
            <label htmlFor="filter-field">Filter</label>
            <select id="filter-field" value={filterField} onChange={(e) => pickField(e.target.value)}>
              <option value="">field…</option>
              {filterFields.map((f) => (
                <option key={f.name} value={f.name}>
                  {f.name}
                </option>
              ))}
            </select>
            <label htmlFor="filter-op" className="sr-only">
              Comparison
            </label>
            <select id="filter-op" className="filter-op" value={filterOp} disabled={!pickedField} onChange={(e) => setFilterOp(e.target.value as Op)}>
              {(pickedField ? opsFor(pickedField) : (['eq'] as Op[])).map((op) => (
                <option key={op} value={op} title={OP_WORDS[op]}>
                  {opLabel(pickedField, op)}
                </option>
              ))}
            </select>
            <label htmlFor="filter-value" className="sr-only">
              Value
            </label>
            {valueControl}
            <button type="submit" className="small" disabled={!pickedField}>
              Apply
            </button>
            {quick.map((q) => {
              const on = isOn(q.condition);
              return (
                <button
                  key={q.key}
                  type="button"
                  className="small toggle"
                  aria-pressed={on}
                  onClick={() => {
                    setRefused(null);
                    setConditions((c) => (on ? c.filter((x) => !(x.field === q.condition.field && x.op === q.condition.op && x.text === q.condition.text)) : withCondition(c, q.condition)));
                  }}
                >
                  {q.label}
                </button>
              );
            })}
            {conditions.length > 0 && (
              <ul className="chips" aria-label="Active filters">
                {conditions.map((c) => {
                  const text = chipText(c);
                  const bad = refused !== null && (refused.field === c.field || refused.field === undefined);
                  return (
                    <li key={`${c.field}-${c.op}`} className={`chip${bad ? ' chip-invalid' : ''}`} data-field={c.field} data-op={c.op}>
                      <span>{text}</span>
                      <button type="button" className="icon small" aria-label={`Remove filter ${text}`} onClick={() => removeCondition(c)}>
                        ×
                      </button>
                    </li>
                  );
                })}
                {conditions.length > 1 && (
                  <li>
                    <button
                      type="button"
                      className="link small"
                      onClick={() => {
                        setRefused(null);
                        setConditions([]);
                      }}
                    >
                      Clear all
                    </button>
                  </li>
                )}
              </ul>
            )}
          </form>
          <p className="field-error filter-error" id="filter-error" role="alert" hidden={!filterProblem}>
            {refused && !inputProblem ? `The filter was refused: ${refused.message}` : filterProblem}
          </p>
        </div>
      )}
      <div className="table-wrap">
        <table className="docs" aria-describedby="table-status">
          <caption className="sr-only">Documents of {name}</caption>
          <thead>
            <tr>
              <th scope="col">id</th>
              {fields.map((f) => (f.kind === 'json' || f.kind === 'list' ? <th key={f.name} scope="col">{f.name}</th> : sortHeader(f.name)))}
              <th scope="col" className="actions">
                <span className="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((doc) => {
              const sharedWithMe = private_ && typeof doc.created_by === 'string' && userId !== null && doc.created_by !== userId;
              const writable = canWrite && ownsOrMay(doc);
              const why = writable ? undefined : canWrite ? `Only its author can change this ${singular(name)}` : 'Sign in to change it';
              return (
                <tr key={doc.id} data-id={doc.id} className={flash.has(doc.id) ? 'flash' : undefined}>
                  <td className="cell-id" data-label="id">
                    <button type="button" className="link mono" title={`Show ${doc.id}`} onClick={() => setOpen({ kind: 'details', id: doc.id })}>
                      {shortId(doc.id)}
                    </button>
                    {sharedWithMe && <span className="badge badge-muted badge-shared">shared with you</span>}
                  </td>
                  {fields.map((f) => {
                    const value = doc[f.name];
                    return (
                      <td
                        key={f.name}
                        data-field={f.name}
                        data-label={f.name}
                        className={typeof value === 'number' ? 'num' : undefined}
                        title={(f.kind === 'json' || f.kind === 'list') && value !== undefined ? JSON.stringify(value).slice(0, 500) : undefined}
                      >
                        {f.readOnly && value === undefined && tasks.length ? <span className="muted">pending…</span> : cellText(value)}
                      </td>
                    );
                  })}
                  <td className="actions">
                    <button type="button" className="small" disabled={!writable} title={why} onClick={() => openDoc('edit')(doc.id)} aria-label={`Edit ${titleOf(doc) || doc.id}`}>
                      Edit
                    </button>
                    <button type="button" className="small danger" disabled={!writable} title={why} onClick={() => openDoc('delete')(doc.id)} aria-label={`Delete ${titleOf(doc) || doc.id}`}>
                      Delete
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <div className="table-foot">
        <p className="table-status" id="table-status" aria-live="polite">
          {status}
        </p>
        {!mustSignIn && next && (
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
          onCreated={(doc, etag) => {
            // Its events may have overtaken this answer (a pet can be enriched already): the
            // version decides.
            written(doc, etag ?? '"1"');
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
          onGone={() => change({ kind: 'remove', id: open.id, version: null }, false)}
          onSaved={(doc, etag) => {
            written(doc, etag);
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
            change({ kind: 'remove', id: open.id, version: null }, false);
            toast(already ? 'It was already deleted.' : `Deleted ${singular(name)} ${shortId(open.id)}`, already ? 'info' : 'success');
          }}
          onShow={() => setOpen({ kind: 'details', id: open.id })}
        />
      )}
    </>
  );
}
