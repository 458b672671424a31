// The create, edit (If-Match, 412 explained and resolved, live changes warned) and delete
// dialogs of a collection. A 422 is shown next to each failing field; the rest above the form.

import { useEffect, useState, type FormEvent, type MutableRefObject } from 'react';
import { ApiError, type Doc, type FieldError, type Json } from '../lib/api';
import { actionOf, describeError, shortId, titleOf } from '../lib/format';
import type { LiveEvent } from '../lib/live';
import { errorText, patchOf, placeErrors, rawValues, readValues, type Field } from '../lib/schema';
import { api } from '../store';
import { Dialog } from '../components/Dialog';
import { SchemaFields } from '../components/SchemaForm';
import { singular } from './CollectionView';

/** Told about every live event of the collection while an edit dialog is open. */
export type Editor = (event: LiveEvent, seq: number) => void;

interface Problem {
  message: string;
  unplaced: FieldError[];
}

function problemOf(err: unknown, what: string, fields: Field[], setErrors: (e: Record<string, string>) => void): Problem | null {
  if (err instanceof ApiError && err.status === 422) {
    const { byField, unplaced } = placeErrors(fields, err.fields);
    setErrors(byField);
    if (unplaced.length === 0 && err.fields.length > 0) return null;
    return { message: err.message, unplaced };
  }
  return { message: describeError(err, what), unplaced: [] };
}

function Summary({ problem }: { problem: Problem | null }) {
  if (!problem) return null;
  return (
    <div className="banner banner-error" role="alert" tabIndex={-1}>
      <strong>{problem.message}</strong>
      {problem.unplaced.length > 0 && (
        <ul>
          {problem.unplaced.map((f) => (
            <li key={f.field}>{errorText(f.field, f.reason)}</li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function CreateDialog({ name, fields, onClose, onCreated }: { name: string; fields: Field[]; onClose: () => void; onCreated: (doc: Doc, etag: string | null) => void }) {
  const [raw, setRaw] = useState(() => rawValues(fields, null));
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<Problem | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setProblem(null);
    const { value, errors: local } = readValues(fields, raw);
    if (local.length) return setErrors(placeErrors(fields, local).byField);
    setErrors({});
    setBusy(true);
    try {
      const { doc, etag } = await api.create(name, value);
      onCreated(doc, etag);
      onClose();
    } catch (err) {
      setProblem(problemOf(err, 'Creating', fields, setErrors));
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={`New ${singular(name)}`} onClose={onClose}>
      <form noValidate className="doc-form" onSubmit={(e) => void submit(e)}>
        <Summary problem={problem} />
        <SchemaFields fields={fields} raw={raw} errors={errors} doc={null} onChange={(field, value) => setRaw((r) => ({ ...r, [field]: value }))} />
        <div className="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Create
          </button>
        </div>
      </form>
    </Dialog>
  );
}

const editableOf = (fields: Field[], doc: Record<string, Json>) =>
  JSON.stringify(Object.fromEntries(fields.filter((f) => !f.readOnly && doc[f.name] !== undefined).map((f) => [f.name, doc[f.name]])));

interface EditProps {
  name: string;
  id: string;
  fields: Field[];
  editorRef: MutableRefObject<Editor | null>;
  liveChanges: Map<string, number>;
  onClose: () => void;
  onGone: () => void;
  onSaved: (doc: Doc, etag: string | null) => void;
}

export function EditDialog({ name, id, fields, editorRef, liveChanges, onClose, onGone, onSaved }: EditProps) {
  const [base, setBase] = useState<{ doc: Doc; etag: string | null } | null>(null);
  const [raw, setRaw] = useState<Record<string, string>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [problem, setProblem] = useState<Problem | null>(null);
  const [conflict, setConflict] = useState(false);
  const [changed, setChanged] = useState<string | null>(null);
  const [deleted, setDeleted] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let cancelled = false;
    api.get(name, id).then(
      (current) => {
        if (cancelled) return;
        setBase(current);
        setRaw(rawValues(fields, current.doc));
      },
      (err: unknown) => {
        if (cancelled) return;
        if (err instanceof ApiError && err.status === 404) onGone();
        setProblem({ message: describeError(err, 'Opening the document'), unplaced: [] });
      },
    );
    return () => {
      cancelled = true;
    };
    // Read once, when the dialog opens.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  /** What the user changed in the form, as raw texts of the changed fields. */
  const myEdits = (): Record<string, string> => {
    if (!base) return {};
    const { value } = readValues(fields, raw);
    const patch = patchOf(fields, base.doc, value);
    return Object.fromEntries(Object.keys(patch).map((field) => [field, raw[field] ?? '']));
  };

  const latest = async (keepEdits: boolean) => {
    try {
      const edits = keepEdits ? myEdits() : {};
      const fresh = await api.get(name, id);
      setBase(fresh);
      setRaw({ ...rawValues(fields, fresh.doc), ...edits });
      setProblem(null);
      setConflict(false);
      setChanged(null);
    } catch (err) {
      setProblem({ message: describeError(err, 'Reloading'), unplaced: [] });
    }
  };

  // Live events for this document while the dialog is open.
  useEffect(() => {
    if (!base) return;
    editorRef.current = (event, seq) => {
      if (String(event.doc_id) !== id) return;
      if (actionOf(event.type) === 'deleted') {
        setDeleted(`This document was deleted by someone else (#${seq}).`);
        return;
      }
      // Only Courier-managed (read-only) fields changed (pets.enriched): take the new version
      // quietly. Otherwise keep the old one, so that saving reports the conflict.
      api.get(name, id).then(
        (fresh) => {
          if (editableOf(fields, fresh.doc) === editableOf(fields, base.doc)) setBase(fresh);
          else setChanged(`Someone else just changed this document (${event.type}, #${seq}). Saving now will report a conflict. `);
        },
        () => setChanged(`Someone else just changed this document (${event.type}, #${seq}). Saving now will report a conflict. `),
      );
    };
    return () => {
      editorRef.current = null;
    };
  }, [base, editorRef, fields, id, name]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!base) return;
    setProblem(null);
    setConflict(false);
    const { value, errors: local } = readValues(fields, raw);
    if (local.length) return setErrors(placeErrors(fields, local).byField);
    setErrors({});
    const patch = patchOf(fields, base.doc, value);
    if (Object.keys(patch).length === 0) return setProblem({ message: 'Nothing changed.', unplaced: [] });
    setBusy(true);
    const changesBefore = liveChanges.get(id);
    try {
      const { doc, etag } = await api.patch(name, id, patch, base.etag);
      // A live event for it arrived meanwhile: it is newer than (or equal to) this answer.
      if (liveChanges.get(id) === changesBefore) onSaved(doc, etag);
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        setConflict(true);
        setChanged(null);
      } else {
        if (err instanceof ApiError && err.status === 404) onGone();
        setProblem(problemOf(err, 'Saving', fields, setErrors));
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog title={`Edit ${singular(name)} ${shortId(id)}`} onClose={onClose}>
      <form noValidate className="doc-form" onSubmit={(e) => void submit(e)}>
        <Summary problem={problem} />
        {conflict && (
          <div className="banner banner-error" role="alert" data-code="conflict" tabIndex={-1}>
            <strong>Conflict: this document was changed by someone else after you opened it.</strong>
            <span> Your changes were not saved (the api answered 412 Precondition Failed).</span>
            <div className="banner-actions">
              <button type="button" onClick={() => void latest(false)}>
                Load their version (discard mine)
              </button>
              <button type="button" onClick={() => void latest(true)}>
                Keep my edits on top of theirs
              </button>
            </div>
          </div>
        )}
        {(changed || deleted) && (
          <div className="banner banner-warning" role="status">
            {deleted ?? (
              <>
                <span>{changed}</span>
                <button type="button" className="link" onClick={() => void latest(true)}>
                  Update to their version, keeping my edits
                </button>
              </>
            )}
          </div>
        )}
        {base ? (
          <>
            <p className="muted small">
              Version <code className="etag">{base.etag ?? '?'}</code> — saving sends If-Match, so it fails rather than overwrite someone else’s change.
            </p>
            <SchemaFields fields={fields} raw={raw} errors={errors} doc={base.doc} onChange={(field, value) => setRaw((r) => ({ ...r, [field]: value }))} />
          </>
        ) : (
          !problem && <p className="muted">Loading…</p>
        )}
        <div className="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy || !base}>
            Save
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function DeleteDialog({ name, id, doc, onClose, onDeleted, onShow }: { name: string; id: string; doc: Doc | null; onClose: () => void; onDeleted: (already: boolean) => void; onShow: () => void }) {
  const [etag, setEtag] = useState<string | null | undefined>(undefined);
  const [message, setMessage] = useState<string | null>(null);
  const [stale, setStale] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    let cancelled = false;
    api.get(name, id).then(
      (current) => !cancelled && setEtag(current.etag),
      (err: unknown) => {
        if (cancelled) return;
        if (err instanceof ApiError && err.status === 404) {
          onDeleted(true);
          onClose();
        } else setMessage(describeError(err, 'Opening the document'));
      },
    );
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  const confirm = async () => {
    setBusy(true);
    try {
      await api.remove(name, id, etag ?? null);
      onDeleted(false);
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        onDeleted(true);
        onClose();
        return;
      }
      setMessage(describeError(err, 'Deleting'));
      setStale(err instanceof ApiError && err.status === 412);
    } finally {
      setBusy(false);
    }
  };
  const title = titleOf(doc);
  return (
    <Dialog title={`Delete ${singular(name)}?`} onClose={onClose}>
      <p>{`Delete ${title ? `“${title}” ` : ''}(${id})? This cannot be undone.`}</p>
      {message && (
        <div className="banner banner-error" role="alert">
          {message}
          {stale && (
            <>
              {' Review the latest version before deleting. '}
              <button type="button" className="link" onClick={onShow}>
                Show it
              </button>
            </>
          )}
        </div>
      )}
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" className="danger" autoFocus disabled={busy || etag === undefined} onClick={() => void confirm()}>
          Delete
        </button>
      </div>
    </Dialog>
  );
}
