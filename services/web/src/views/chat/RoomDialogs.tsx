// Creating a room (name, topic, members) and starting a direct message, with the api's 422s
// next to their fields.

import { useState, type FormEvent } from 'react';
import { ApiError } from '../../lib/api';
import { MAX_INITIAL_MEMBERS, MAX_ROOM_NAME, MAX_TOPIC, parseNames } from '../../lib/chat';
import type { ChatController } from '../../lib/chatStore';
import { describeError } from '../../lib/format';
import { Dialog } from '../../components/Dialog';
import { FieldNotes } from '../../components/SchemaForm';

type Errors = Record<string, string>;

/** Splits an api error into messages by field (those in `fields`) and one for the rest. */
function placeErrors(err: unknown, fields: string[], what: string): { errors: Errors; summary: string | null } {
  if (err instanceof ApiError && err.status === 422 && err.fields.length) {
    const errors: Errors = {};
    const rest: string[] = [];
    for (const { field, reason } of err.fields) {
      const key = fields.find((f) => field === f || field.startsWith(`${f}[`) || field.startsWith(`${f}.`));
      if (key) errors[key] = errors[key] ? `${errors[key]} ${reason}` : reason;
      else rest.push(`${field}: ${reason}`);
    }
    return { errors, summary: rest.length ? rest.join(' ') : null };
  }
  return { errors: {}, summary: describeError(err, what) };
}

function Field({ id, label, hint, error, children }: { id: string; label: string; hint?: string; error?: string | undefined; children: React.ReactNode }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children}
      <FieldNotes id={id} hint={hint} error={error} />
    </div>
  );
}

export function NewRoomDialog({ controller, onClose }: { controller: ChatController; onClose: () => void }) {
  const [name, setName] = useState('');
  const [topic, setTopic] = useState('');
  const [members, setMembers] = useState('');
  const [errors, setErrors] = useState<Errors>({});
  const [summary, setSummary] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const names = parseNames(members);
    const local: Errors = {};
    if (name.trim() === '') local.name = 'Give the room a name.';
    else if ([...name.trim()].length > MAX_ROOM_NAME) local.name = `At most ${MAX_ROOM_NAME} characters.`;
    if ([...topic].length > MAX_TOPIC) local.topic = `At most ${MAX_TOPIC} characters.`;
    if (names.length > MAX_INITIAL_MEMBERS) local.members = `At most ${MAX_INITIAL_MEMBERS} people at creation; add more afterwards.`;
    setErrors(local);
    setSummary(null);
    if (Object.keys(local).length) return;
    setBusy(true);
    try {
      await controller.createRoom(name.trim(), topic, names);
      onClose();
    } catch (err) {
      const placed = placeErrors(err, ['name', 'topic', 'members'], 'Creating the room');
      setErrors(placed.errors);
      setSummary(placed.summary);
    } finally {
      setBusy(false);
    }
  };

  const describedBy = (id: string, hint = false) => [hint ? `${id}-hint` : '', `${id}-error`].filter(Boolean).join(' ');
  return (
    <Dialog title="New room" onClose={onClose} narrow>
      <form noValidate className="doc-form" onSubmit={(e) => void submit(e)}>
        {summary && (
          <div className="banner banner-error" role="alert">
            {summary}
          </div>
        )}
        <Field id="room-name" label="Name" error={errors.name}>
          <input id="room-name" value={name} autoFocus maxLength={MAX_ROOM_NAME * 2} onChange={(e) => setName(e.target.value)} aria-invalid={errors.name ? true : undefined} aria-describedby={describedBy('room-name')} />
        </Field>
        <Field id="room-topic" label="Topic (optional)" error={errors.topic}>
          <input id="room-topic" value={topic} onChange={(e) => setTopic(e.target.value)} aria-invalid={errors.topic ? true : undefined} aria-describedby={describedBy('room-topic')} />
        </Field>
        <Field id="room-members" label="Members (optional)" hint="Usernames, separated by commas or spaces. You are the owner." error={errors.members}>
          <input
            id="room-members"
            value={members}
            autoCapitalize="none"
            spellCheck={false}
            placeholder="ana, bo"
            onChange={(e) => setMembers(e.target.value)}
            aria-invalid={errors.members ? true : undefined}
            aria-describedby={describedBy('room-members', true)}
          />
        </Field>
        <div className="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Create room
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function DirectDialog({ controller, onClose }: { controller: ChatController; onClose: () => void }) {
  const [username, setUsername] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const name = username.trim().replace(/^@/, '');
    if (!name) {
      setError('Whom do you want to write to?');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await controller.startDirect(name);
      onClose();
    } catch (err) {
      const placed = placeErrors(err, ['direct'], 'Starting the conversation');
      setError(placed.errors.direct ?? placed.summary);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title="Message someone" onClose={onClose} narrow>
      <form noValidate className="doc-form" onSubmit={(e) => void submit(e)}>
        <Field id="direct-username" label="Username" hint="Opens your direct conversation with them (the same one each time)." error={error ?? undefined}>
          <input
            id="direct-username"
            value={username}
            autoFocus
            autoCapitalize="none"
            spellCheck={false}
            onChange={(e) => setUsername(e.target.value)}
            aria-invalid={error ? true : undefined}
            aria-describedby="direct-username-hint direct-username-error"
          />
        </Field>
        <div className="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            Open conversation
          </button>
        </div>
      </form>
    </Dialog>
  );
}
