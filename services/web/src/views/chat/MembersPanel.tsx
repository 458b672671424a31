// A room's members: who is online (presence), their roles, and for owners and admins adding,
// removing and (owners) changing roles; everyone can leave a group room.

import { useState, type FormEvent } from 'react';
import { can, type ChatUser, type Member, type Role, type RoomSummary } from '../../lib/chat';
import type { ChatController } from '../../lib/chatStore';
import { describeError } from '../../lib/format';
import { useApp } from '../../store';
import { useChat } from './useChat';

const NO_MEMBERS: Member[] = [];
const NOBODY: ChatUser[] = [];
const ROLES: Role[] = ['member', 'admin', 'owner'];

export function MembersPanel({ controller, room, onClose }: { controller: ChatController; room: RoomSummary; onClose: () => void }) {
  const members = useChat(controller, (s) => s.members[room.id]) ?? NO_MEMBERS;
  const known = useChat(controller, (s) => s.members[room.id] !== undefined);
  const presence = useChat(controller, (s) => s.presence[room.id]) ?? NOBODY;
  const me = useChat(controller, (s) => s.me);
  const toast = useApp((s) => s.toast);
  const [username, setUsername] = useState('');
  const [role, setRole] = useState<Role>('member');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const online = new Set(presence.map((u) => u.id));
  const manage = room.kind === 'group' && can.manage(room.role) && !room.archived;
  const sorted = [...members].sort((a, b) => Number(online.has(b.user_id)) - Number(online.has(a.user_id)) || a.username.localeCompare(b.username));
  const onlineCount = members.filter((m) => online.has(m.user_id)).length;

  const run = async (what: string, action: () => Promise<void>, done?: string) => {
    setBusy(true);
    try {
      await action();
      if (done) toast(done, 'success');
      return true;
    } catch (err) {
      toast(describeError(err, what), 'error');
      return false;
    } finally {
      setBusy(false);
    }
  };

  const add = async (e: FormEvent) => {
    e.preventDefault();
    const name = username.trim().replace(/^@/, '');
    if (!name) {
      setError('Whom do you want to add?');
      return;
    }
    setError(null);
    setBusy(true);
    try {
      await controller.addMember(room.id, name, role);
      setUsername('');
      toast(`${name} added.`, 'success');
    } catch (err) {
      setError(describeError(err, 'Adding'));
    } finally {
      setBusy(false);
    }
  };

  return (
    <aside className="chat-members" aria-label="Members">
      <div className="chat-members-head">
        <h3>
          Members <span className="muted">· {known ? members.length : room.member_count}</span>
        </h3>
        <button type="button" className="icon" aria-label="Close the members panel" onClick={onClose}>
          ×
        </button>
      </div>
      <p className="muted small-text" aria-live="polite">
        {onlineCount} online
      </p>
      {!known && <p className="muted">Loading the members…</p>}
      <ul className="member-list">
        {sorted.map((m) => {
          const self = m.user_id === me?.id;
          return (
            <li key={m.user_id} data-username={m.username}>
              <span className={`presence-dot${online.has(m.user_id) ? ' online' : ''}`} role="img" aria-label={online.has(m.user_id) ? 'online' : 'offline'} />
              <span className="member-name">
                {m.username}
                {self && <span className="muted"> (you)</span>}
              </span>
              {room.kind === 'group' && can.changeRoles(room.role) && !self && !room.archived ? (
                <select aria-label={`Role of ${m.username}`} value={m.role} disabled={busy} onChange={(e) => void run('Changing the role', () => controller.setRole(room.id, m.username, e.target.value as Role), `${m.username} is now ${e.target.value}.`)}>
                  {ROLES.map((r) => (
                    <option key={r} value={r}>
                      {r}
                    </option>
                  ))}
                </select>
              ) : (
                m.role !== 'member' && <span className={`tag role-${m.role}`}>{m.role}</span>
              )}
              {manage && !self && can.remove(room.role, m.role) && (
                <button type="button" className="icon danger-text" aria-label={`Remove ${m.username}`} title={`Remove ${m.username}`} disabled={busy} onClick={() => void run('Removing', () => controller.removeMember(room.id, m.username), `${m.username} removed.`)}>
                  ×
                </button>
              )}
            </li>
          );
        })}
      </ul>
      {manage && (
        <form className="member-add" noValidate onSubmit={(e) => void add(e)}>
          <label htmlFor="member-add-name">Add someone</label>
          <div className="member-add-row">
            <input id="member-add-name" value={username} placeholder="username" autoCapitalize="none" spellCheck={false} onChange={(e) => setUsername(e.target.value)} aria-invalid={error ? true : undefined} aria-describedby="member-add-error" />
            <select aria-label="Role for the new member" value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {ROLES.filter((r) => r !== 'owner' || can.changeRoles(room.role)).map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
            <button type="submit" className="primary small" disabled={busy}>
              Add
            </button>
          </div>
          <p id="member-add-error" className="field-error" hidden={!error}>
            {error}
          </p>
        </form>
      )}
      {room.kind === 'group' && (
        <button type="button" className="danger small leave-room" disabled={busy} onClick={() => void run('Leaving', () => controller.leave(room.id))}>
          Leave room
        </button>
      )}
    </aside>
  );
}
