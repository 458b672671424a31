// The console's views: the connection indicator, the live event log, and the collection view
// (documents table with cursor paging, live updates, create / edit / delete dialogs).

import { ApiError } from './api.js';
import { h, replaceChildren, shortId, clock, cellText, toast, openDialog } from './dom.js';
import { SchemaForm, fieldsOf, errorText } from './schema-form.js';

const PAGE_SIZE = 25;
const LOG_LIMIT = 300;

/** `products.created` → `created`. */
function actionOf(event) {
  const type = String(event.type ?? '');
  return type.slice(type.lastIndexOf('.') + 1);
}

/** A document's most telling text: its name-like field, else its first string field. */
function titleOf(doc) {
  if (!doc || typeof doc !== 'object') return '';
  for (const key of ['name', 'nombre', 'title', 'username']) {
    if (typeof doc[key] === 'string') return doc[key];
  }
  const first = Object.entries(doc).find(([key, value]) => key !== 'id' && typeof value === 'string');
  return first ? first[1] : '';
}

/** A user-facing sentence for a failed request. */
export function describeError(err, what = 'The request') {
  if (!(err instanceof ApiError)) return `${what} failed: ${err.message}`;
  switch (err.status) {
    case 0:
      return err.message;
    case 401:
      return 'You need to sign in for this (or your session ended): sign in and try again.';
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

// --- connection indicator --------------------------------------------------------------------

export class ConnectionBadge {
  constructor(root) {
    this.root = root;
    this.label = root.querySelector('.connection-label');
    this.button = root.querySelector('button');
    this.live = null;
    this.countdown = null;
    this.button.addEventListener('click', () => this.live?.reconnectNow());
  }

  attach(live) {
    this.live = live;
  }

  update(status) {
    clearInterval(this.countdown);
    this.root.dataset.state = status.state;
    this.button.hidden = status.state !== 'reconnecting';
    if (status.state === 'open') {
      this.label.textContent = 'Live';
      this.root.title = `Connected to ${status.url}`;
    } else if (status.state === 'connecting') {
      this.label.textContent = 'Connecting…';
      this.root.title = `Connecting to ${status.url}`;
    } else if (status.state === 'reconnecting') {
      const until = Date.now() + status.retryInMs;
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        this.label.textContent = `Offline — retrying in ${seconds} s`;
      };
      tick();
      this.countdown = setInterval(tick, 500);
      this.root.title = `Disconnected (${status.reason}); reconnecting to ${status.url}`;
    } else {
      this.label.textContent = 'Not connected';
    }
  }
}

// --- event log -----------------------------------------------------------------------------

export class EventLog {
  constructor(root) {
    this.list = root.querySelector('ol');
    this.count = root.querySelector('.log-count');
    this.empty = root.querySelector('.log-empty');
    this.received = 0;
    root.querySelector('.log-clear').addEventListener('click', () => this.clear());
  }

  /** One event frame as it arrived. */
  event(event, seq, channel) {
    this.received += 1;
    const action = actionOf(event);
    const title = titleOf(event.data);
    this.prepend(
      h(
        'li',
        {
          class: 'log-entry log-event',
          dataset: { seq: String(seq), type: String(event.type), docId: String(event.doc_id ?? ''), channel },
        },
        h('time', { datetime: event.time ?? '' }, clock(event.time ? new Date(event.time) : new Date())),
        h('span', { class: 'log-seq', title: 'stream sequence' }, `#${seq}`),
        h('span', { class: `pill pill-${action}` }, action),
        h(
          'span',
          { class: 'log-text' },
          h('span', { class: 'log-doc', title: String(event.doc_id ?? '') }, `${event.collection} ${shortId(event.doc_id)}`),
          title ? h('span', { class: 'log-title' }, ` ${title}`) : null,
        ),
      ),
    );
    this.count.textContent = `${this.received} event${this.received === 1 ? '' : 's'}`;
  }

  /** A line about the connection itself (connected, resumed, reloaded…). */
  notice(text, level = 'info') {
    this.prepend(
      h('li', { class: `log-entry log-notice log-${level}` }, h('time', {}, clock()), h('span', { class: 'log-text' }, text)),
    );
  }

  prepend(item) {
    this.empty.hidden = true;
    this.list.prepend(item);
    while (this.list.children.length > LOG_LIMIT) this.list.lastElementChild.remove();
  }

  clear() {
    this.list.replaceChildren();
    this.empty.hidden = false;
  }
}

// --- sorting ---------------------------------------------------------------------------------

/** Orders like the api: each sort key (missing/null first ascending, last descending), then id. */
function comparator(sort) {
  const keys = sort
    ? sort.split(',').map((part) => ({ field: part.replace(/^-/, ''), descending: part.startsWith('-') }))
    : [];
  const compareValues = (a, b) => {
    const aNull = a === undefined || a === null;
    const bNull = b === undefined || b === null;
    if (aNull || bNull) return aNull === bNull ? 0 : aNull ? -1 : 1;
    if (typeof a === 'number' && typeof b === 'number') return a - b;
    if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
    const [x, y] = [typeof a === 'string' ? a : JSON.stringify(a), typeof b === 'string' ? b : JSON.stringify(b)];
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

// --- collection view -------------------------------------------------------------------------

export class CollectionView {
  /**
   * @param ctx {root, api, session, live, log, collection, onSignIn}
   */
  constructor(ctx) {
    Object.assign(this, ctx);
    this.name = ctx.collection.name;
    this.schema = ctx.collection.schema ?? { type: 'object' };
    this.fields = fieldsOf(this.schema);
    this.docs = new Map(); // id → document
    this.rows = new Map(); // id → <tr>
    this.next = null;
    this.sort = '';
    this.loading = null; // AbortController of the list request in flight
    this.buffered = null; // events that arrived while the list was loading
    this.editor = null; // the open edit dialog's hooks, if any
    this.liveChanges = new Map(); // id → how many live events changed it (REST answers may be older)
    this.subscribedOnce = false;
  }

  get readNeedsAuth() {
    return this.collection.access?.read === 'authenticated';
  }

  get writeNeedsAuth() {
    return this.collection.access?.write === 'authenticated';
  }

  get canRead() {
    return !this.readNeedsAuth || this.session.signedIn;
  }

  get canWrite() {
    return !this.writeNeedsAuth || this.session.signedIn;
  }

  mount() {
    const tasks = (this.collection.tasks ?? []).map((t) => t.kind);
    this.newButton = h('button', { class: 'primary', type: 'button', onclick: () => this.openCreate() }, `New ${this.singular()}`);
    this.reloadButton = h('button', { type: 'button', onclick: () => this.reload() }, 'Reload');
    this.notice = h('div', { class: 'notice', role: 'status', hidden: true });
    this.error = h('div', { class: 'banner banner-error', role: 'alert', hidden: true });
    this.head = h('tr');
    this.body = h('tbody');
    this.status = h('p', { class: 'table-status', id: 'table-status', 'aria-live': 'polite' });
    this.moreButton = h('button', { type: 'button', class: 'more', hidden: true, onclick: () => this.loadMore() }, 'Load more');
    replaceChildren(
      this.root,
      h(
        'div',
        { class: 'view-head' },
        h(
          'div',
          {},
          h('h1', { id: 'collection-title', tabindex: '-1' }, this.name),
          h(
            'p',
            { class: 'view-meta' },
            h('span', { class: 'badge' }, `read: ${this.collection.access?.read ?? 'public'}`),
            h('span', { class: `badge ${this.writeNeedsAuth ? 'badge-lock' : ''}` }, `write: ${this.collection.access?.write ?? 'public'}`),
            h('span', { class: 'muted' }, ` channel `, h('code', {}, this.name)),
            tasks.length ? h('span', { class: 'muted' }, ` · tasks `, h('code', {}, tasks.join(', '))) : null,
          ),
        ),
        h('div', { class: 'view-actions' }, this.reloadButton, this.newButton),
      ),
      this.notice,
      this.error,
      h(
        'div',
        { class: 'table-wrap' },
        h('table', { class: 'docs', 'aria-describedby': 'table-status' }, h('caption', { class: 'sr-only' }, `Documents of ${this.name}`), h('thead', {}, this.head), this.body),
      ),
      h('div', { class: 'table-foot' }, this.status, this.moreButton),
    );
    this.renderHead();
    this.refreshAccess();
    if (this.canRead) this.setStatus('Loading…');
    else this.updateStatus();
    this.subscribe();
    // With the broadcaster connected, the list loads once the subscription point is known
    // (nothing can fall between the two); otherwise load now and again when live starts.
    if (this.live.state !== 'open') this.reload();
    else this.fallback = setTimeout(() => this.subscribedOnce || this.reload(), 1500);
  }

  destroy() {
    clearTimeout(this.fallback);
    this.loading?.abort();
    this.live.unsubscribe(this.name);
    this.editor?.close();
  }

  singular() {
    return this.name.endsWith('s') ? this.name.slice(0, -1) : this.name;
  }

  subscribe() {
    if (!this.canRead) return;
    this.live.subscribe(
      this.name,
      {
        onSubscribed: ({ fresh }) => {
          this.subscribedOnce = true;
          clearTimeout(this.fallback);
          // A fresh subscription starts now: (re)load so the list and the events meet.
          if (fresh) this.reload();
        },
        onEvent: (event, seq) => this.onEvent(event, seq),
        onResync: () => this.reload(),
        onError: (code, message) => this.onLiveError(code, message),
      },
      { token: this.readNeedsAuth ? this.session.token() : null },
    );
  }

  onLiveError(code, message) {
    if (code === 'unauthorized' && this.session.signedIn) {
      // The token expired before the refresh reached the broadcaster: refresh and resume.
      this.session.refresh().then((ok) => ok && this.live.setToken(this.name, this.session.token()));
      return;
    }
    this.log.notice(`Live updates for ${this.name} stopped: ${message}`, 'error');
  }

  /** After sign-in, refresh or sign-out. */
  onSessionChange(reason) {
    this.refreshAccess();
    if (!this.readNeedsAuth) {
      if (reason !== 'refreshed') this.rerenderRows();
      return;
    }
    if (!this.session.signedIn) {
      this.live.unsubscribe(this.name);
      this.loading?.abort();
      this.clearRows();
      this.next = null;
      this.updateStatus();
      return;
    }
    if (reason === 'refreshed') {
      this.live.setToken(this.name, this.session.token());
    } else {
      this.subscribe();
      if (this.live.state !== 'open') this.reload();
    }
  }

  refreshAccess() {
    const message = !this.canRead
      ? `Reading ${this.name} requires signing in.`
      : !this.canWrite
        ? `Creating, editing and deleting ${this.name} requires signing in.`
        : null;
    this.notice.hidden = message === null;
    if (message) {
      replaceChildren(this.notice, h('span', {}, message, ' '), h('button', { type: 'button', class: 'link', onclick: () => this.onSignIn() }, 'Sign in'));
    }
    this.newButton.disabled = !this.canWrite;
    this.newButton.title = this.canWrite ? '' : 'Sign in to create documents';
    this.reloadButton.disabled = !this.canRead;
  }

  // --- list ----------------------------------------------------------------------------------

  renderHead() {
    const sortable = (name, label = name) => {
      const state = this.sort === name ? 'ascending' : this.sort === `-${name}` ? 'descending' : null;
      const next = state === 'ascending' ? `-${name}` : state === 'descending' ? '' : name;
      return h(
        'th',
        { scope: 'col', 'aria-sort': state },
        h(
          'button',
          { type: 'button', class: 'sort', title: `Sort by ${label}`, onclick: () => this.setSort(next) },
          label,
          h('span', { class: 'sort-mark', 'aria-hidden': 'true' }, state === 'ascending' ? ' ▲' : state === 'descending' ? ' ▼' : ''),
        ),
      );
    };
    replaceChildren(
      this.head,
      h('th', { scope: 'col' }, 'id'),
      this.fields.map((f) => (f.kind === 'json' ? h('th', { scope: 'col' }, f.name) : sortable(f.name))),
      h('th', { scope: 'col', class: 'actions' }, h('span', { class: 'sr-only' }, 'Actions')),
    );
  }

  setSort(sort) {
    this.sort = sort;
    this.renderHead();
    this.reload();
  }

  /** Loads the first page again; events arriving meanwhile are applied after it. */
  async reload() {
    if (!this.canRead) return;
    this.loading?.abort();
    const controller = new AbortController();
    this.loading = controller;
    this.buffered ??= [];
    this.setStatus('Loading…');
    try {
      const page = await this.api.list(this.name, { limit: PAGE_SIZE, sort: this.sort, signal: controller.signal });
      if (controller.signal.aborted) return;
      this.clearRows();
      for (const doc of page.items) this.upsert(doc, false);
      this.next = page.next;
      this.error.hidden = true;
    } catch (err) {
      if (err.name === 'AbortError') return;
      this.showError(`Could not load ${this.name}: ${describeError(err)}`, () => this.reload());
    } finally {
      if (this.loading === controller) {
        this.loading = null;
        this.flushBuffered();
        this.updateStatus();
      }
    }
  }

  async loadMore() {
    if (!this.next || this.loading) return;
    this.moreButton.disabled = true;
    try {
      const page = await this.api.list(this.name, { limit: PAGE_SIZE, sort: this.sort, cursor: this.next });
      // Documents already shown came from live events, which are newer than this page.
      for (const doc of page.items) if (!this.docs.has(doc.id)) this.upsert(doc, false);
      this.next = page.next;
    } catch (err) {
      toast(`Could not load more: ${describeError(err)}`, 'error');
    } finally {
      this.moreButton.disabled = false;
      this.updateStatus();
    }
  }

  flushBuffered() {
    const events = this.buffered ?? [];
    this.buffered = null;
    for (const [event, seq] of events) this.applyEvent(event, seq);
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  updateStatus() {
    if (!this.canRead) {
      this.setStatus(`Sign in to see the ${this.name}.`);
      this.moreButton.hidden = true;
      return;
    }
    const n = this.docs.size;
    const shown = n === 0 ? `No ${this.name} yet.` : `${n} document${n === 1 ? '' : 's'} shown`;
    this.setStatus(this.next ? `${shown} · more to load` : n === 0 ? shown : `${shown} · all loaded`);
    this.moreButton.hidden = !this.next;
  }

  showError(message, retry) {
    replaceChildren(this.error, h('span', {}, message, ' '), retry ? h('button', { type: 'button', onclick: retry }, 'Retry') : null);
    this.error.hidden = false;
  }

  clearRows() {
    this.docs.clear();
    this.rows.clear();
    this.body.replaceChildren();
  }

  rerenderRows() {
    for (const [id, doc] of this.docs) {
      const row = this.renderRow(doc);
      this.rows.get(id)?.replaceWith(row);
      this.rows.set(id, row);
    }
  }

  // --- live ----------------------------------------------------------------------------------

  onEvent(event, seq) {
    this.log.event(event, seq, this.name);
    if (this.buffered) this.buffered.push([event, seq]);
    else this.applyEvent(event, seq);
    this.editor?.changed(event, seq);
  }

  applyEvent(event, seq) {
    const action = actionOf(event);
    const id = String(event.doc_id ?? event.data?.id ?? '');
    if (!id) return;
    this.liveChanges.set(id, (this.liveChanges.get(id) ?? 0) + 1);
    if (action === 'deleted') {
      this.remove(id);
    } else if (event.data && typeof event.data === 'object') {
      this.upsert({ ...event.data, id }, true, seq);
    }
    this.updateStatus();
  }

  /** Inserts or replaces a document's row, at its place in the current sort order. */
  upsert(doc, flash = false, seq = null) {
    if (!doc || typeof doc.id !== 'string') return;
    this.docs.set(doc.id, doc);
    const row = this.renderRow(doc);
    if (seq !== null) row.dataset.seq = String(seq);
    this.rows.get(doc.id)?.remove();
    this.rows.set(doc.id, row);
    const order = comparator(this.sort);
    let before = null;
    for (const [id, other] of this.docs) {
      if (id !== doc.id && order(doc, other) < 0 && (!before || order(other, this.docs.get(before)) < 0)) before = id;
    }
    this.body.insertBefore(row, before ? this.rows.get(before) : null);
    if (flash) {
      row.classList.add('flash');
      row.addEventListener('animationend', () => row.classList.remove('flash'), { once: true });
    }
  }

  remove(id) {
    this.docs.delete(id);
    this.rows.get(id)?.remove();
    this.rows.delete(id);
  }

  renderRow(doc) {
    const disabled = !this.canWrite;
    return h(
      'tr',
      { dataset: { id: doc.id } },
      h(
        'td',
        { class: 'cell-id', dataset: { label: 'id' } },
        h('button', { type: 'button', class: 'link mono', title: `Show ${doc.id}`, onclick: () => this.openDetails(doc.id) }, shortId(doc.id)),
      ),
      this.fields.map((f) => {
        const value = doc[f.name];
        return h(
          'td',
          { dataset: { field: f.name, label: f.name }, class: typeof value === 'number' ? 'num' : null, title: f.kind === 'json' && value !== undefined ? JSON.stringify(value).slice(0, 500) : null },
          f.readOnly && value === undefined && (this.collection.tasks ?? []).length ? h('span', { class: 'muted' }, 'pending…') : cellText(value),
        );
      }),
      h(
        'td',
        { class: 'actions' },
        h('button', { type: 'button', class: 'small', disabled, onclick: () => this.openEdit(doc.id), 'aria-label': `Edit ${titleOf(doc) || doc.id}` }, 'Edit'),
        h('button', { type: 'button', class: 'small danger', disabled, onclick: () => this.openDelete(doc.id), 'aria-label': `Delete ${titleOf(doc) || doc.id}` }, 'Delete'),
      ),
    );
  }

  // --- dialogs -------------------------------------------------------------------------------

  dialogShell(title, ...content) {
    const dialog = h(
      'dialog',
      { class: 'panel', 'aria-labelledby': 'dialog-title' },
      h('div', { class: 'dialog-head' }, h('h2', { id: 'dialog-title' }, title), h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: () => dialog.close() }, '×')),
      ...content,
    );
    return dialog;
  }

  openDetails(id) {
    const doc = this.docs.get(id);
    if (!doc) return;
    const dialog = this.dialogShell(`${this.singular()} ${shortId(id)}`, h('pre', { class: 'json', tabindex: '0' }, JSON.stringify(doc, null, 2)));
    openDialog(dialog);
  }

  openCreate() {
    if (!this.canWrite) return this.onSignIn();
    const form = new SchemaForm(this.schema, null);
    const summary = h('div', { class: 'banner banner-error', role: 'alert', hidden: true });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Create');
    const element = h(
      'form',
      { novalidate: true, class: 'doc-form' },
      summary,
      form.element,
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'), submit),
    );
    const dialog = this.dialogShell(`New ${this.singular()}`, element);
    element.addEventListener('submit', async (e) => {
      e.preventDefault();
      summary.hidden = true;
      const { value, errors } = form.read();
      if (errors.length) return void form.showErrors(errors);
      submit.disabled = true;
      try {
        const { doc } = await this.api.create(this.name, value);
        // Its events may have overtaken this answer (a pet can be enriched already): keep theirs.
        if (!this.docs.has(doc.id)) this.upsert(doc, true);
        this.updateStatus();
        toast(`Created ${this.singular()} ${shortId(doc.id)}`, 'success');
        dialog.close();
      } catch (err) {
        this.showFormError(err, form, summary, 'Creating');
      } finally {
        submit.disabled = false;
      }
    });
    openDialog(dialog);
    dialog.querySelector('input, select, textarea')?.focus();
  }

  /** 422: next to the fields; anything else: above the form. */
  showFormError(err, form, summary, what) {
    if (err instanceof ApiError && err.status === 422) {
      const unplaced = form.showErrors(err.fields);
      if (unplaced.length === 0 && err.fields.length > 0) return;
      replaceChildren(summary, h('strong', {}, err.message), h('ul', {}, unplaced.map((f) => h('li', {}, errorText(f.field, f.reason)))));
    } else {
      replaceChildren(summary, describeError(err, what));
    }
    summary.hidden = false;
    summary.focus?.();
  }

  async openEdit(id) {
    if (!this.canWrite) return this.onSignIn();
    let current;
    try {
      current = await this.api.get(this.name, id);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) this.remove(id);
      toast(describeError(err, 'Opening the document'), 'error');
      return;
    }
    let { doc: base, etag } = current;
    let form = new SchemaForm(this.schema, base);
    const summary = h('div', { class: 'banner banner-error', role: 'alert', tabindex: '-1', hidden: true });
    const changed = h('div', { class: 'banner banner-warning', role: 'status', hidden: true });
    const fieldsBox = h('div', {}, form.element);
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Save');
    const element = h(
      'form',
      { novalidate: true, class: 'doc-form' },
      summary,
      changed,
      h('p', { class: 'muted small' }, 'Version ', h('code', { class: 'etag' }, etag ?? '?'), ' — saving sends If-Match, so it fails rather than overwrite someone else’s change.'),
      fieldsBox,
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'), submit),
    );
    const dialog = this.dialogShell(`Edit ${this.singular()} ${shortId(id)}`, element);

    const editableOf = (doc) => {
      const out = {};
      for (const f of this.fields) if (!f.readOnly && doc[f.name] !== undefined) out[f.name] = doc[f.name];
      return JSON.stringify(out);
    };
    /** What the user changed in the form, as full values (null: cleared). */
    const myEdits = () => {
      const typed = form.read().value;
      return Object.fromEntries(Object.keys(form.patch(typed)).map((name) => [name, typed[name] ?? null]));
    };
    /** Rebuilds the form on `doc` (its ETag is what saving will send), re-applying `edits`. */
    const useVersion = (doc, newEtag, edits = null) => {
      base = doc;
      etag = newEtag;
      form = new SchemaForm(this.schema, doc);
      if (edits) form.apply(edits);
      replaceChildren(fieldsBox, form.element);
      element.querySelector('.etag').textContent = etag ?? '?';
    };
    const latest = async (keepEdits) => {
      try {
        const fresh = await this.api.get(this.name, id);
        useVersion(fresh.doc, fresh.etag, keepEdits ? myEdits() : null);
        summary.hidden = true;
        changed.hidden = true;
        return true;
      } catch (err) {
        replaceChildren(summary, describeError(err, 'Reloading'));
        summary.hidden = false;
        return false;
      }
    };
    const conflict = () => {
      replaceChildren(
        summary,
        h('strong', {}, 'Conflict: this document was changed by someone else after you opened it.'),
        h('span', {}, ' Your changes were not saved (the api answered 412 Precondition Failed).'),
        h(
          'div',
          { class: 'banner-actions' },
          h('button', { type: 'button', onclick: () => latest(false) }, 'Load their version (discard mine)'),
          h('button', { type: 'button', onclick: () => latest(true) }, 'Keep my edits on top of theirs'),
        ),
      );
      summary.dataset.code = 'conflict';
      summary.hidden = false;
      changed.hidden = true;
      summary.focus();
    };

    element.addEventListener('submit', async (e) => {
      e.preventDefault();
      summary.hidden = true;
      delete summary.dataset.code;
      const { value, errors } = form.read();
      if (errors.length) return void form.showErrors(errors);
      const patch = form.patch(value);
      if (Object.keys(patch).length === 0) {
        replaceChildren(summary, 'Nothing changed.');
        summary.hidden = false;
        return;
      }
      submit.disabled = true;
      const changesBefore = this.liveChanges.get(id);
      try {
        const { doc } = await this.api.patch(this.name, id, patch, etag);
        // A live event for it arrived meanwhile: events come in commit order and this change's own
        // event is among them or still to come, so the answer could only put an older state back.
        if (this.liveChanges.get(id) === changesBefore) this.upsert(doc, true);
        toast(`Saved ${this.singular()} ${shortId(id)}`, 'success');
        dialog.close();
      } catch (err) {
        if (err instanceof ApiError && err.status === 412) conflict();
        else {
          if (err instanceof ApiError && err.status === 404) this.remove(id);
          this.showFormError(err, form, summary, 'Saving');
        }
      } finally {
        submit.disabled = false;
      }
    });

    this.editor = {
      close: () => dialog.close(),
      // A live event for this document while the dialog is open.
      changed: async (event, seq) => {
        if (String(event.doc_id) !== id) return;
        if (actionOf(event) === 'deleted') {
          replaceChildren(changed, `This document was deleted by someone else (#${seq}).`);
          changed.hidden = false;
          return;
        }
        // Only Courier-managed (read-only) fields changed, e.g. pets.enriched: take the new
        // version quietly. Otherwise keep the old one, so that saving reports the conflict.
        try {
          const fresh = await this.api.get(this.name, id);
          if (editableOf(fresh.doc) === editableOf(base)) {
            base = fresh.doc;
            etag = fresh.etag;
            form.rebase(fresh.doc);
            element.querySelector('.etag').textContent = etag ?? '?';
            return;
          }
        } catch {
          /* warn below */
        }
        replaceChildren(
          changed,
          h('span', {}, `Someone else just changed this document (${event.type}, #${seq}). Saving now will report a conflict. `),
          h('button', { type: 'button', class: 'link', onclick: () => latest(true) }, 'Update to their version, keeping my edits'),
        );
        changed.hidden = false;
      },
    };
    dialog.addEventListener('close', () => {
      this.editor = null;
    });
    openDialog(dialog);
    form.element.querySelector('input:not([readonly]), select, textarea')?.focus();
  }

  async openDelete(id) {
    if (!this.canWrite) return this.onSignIn();
    let etag;
    try {
      ({ etag } = await this.api.get(this.name, id));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) this.remove(id);
      toast(describeError(err, 'Opening the document'), 'error');
      return;
    }
    const doc = this.docs.get(id);
    const message = h('div', { class: 'banner banner-error', role: 'alert', hidden: true });
    const confirm = h('button', { type: 'button', class: 'danger' }, 'Delete');
    const dialog = this.dialogShell(
      `Delete ${this.singular()}?`,
      h('p', {}, `Delete ${titleOf(doc) ? `“${titleOf(doc)}” ` : ''}(${id})? This cannot be undone.`),
      message,
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel'), confirm),
    );
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      try {
        await this.api.remove(this.name, id, etag);
        this.remove(id);
        this.updateStatus();
        toast(`Deleted ${this.singular()} ${shortId(id)}`, 'success');
        dialog.close();
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          this.remove(id);
          this.updateStatus();
          dialog.close();
          toast('It was already deleted.', 'info');
          return;
        }
        replaceChildren(message, describeError(err, 'Deleting'));
        if (err instanceof ApiError && err.status === 412) {
          message.append(' Review the latest version before deleting. ');
          message.append(
            h('button', { type: 'button', class: 'link', onclick: () => (dialog.close(), this.openDetails(id)) }, 'Show it'),
          );
        }
        message.hidden = false;
      } finally {
        confirm.disabled = false;
      }
    });
    openDialog(dialog);
    confirm.focus();
  }
}
