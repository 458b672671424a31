// The open room's messages: by day and by runs of one author, with replies quoted, reactions,
// edit and delete of my own (and, for owners and admins, delete of others'), the messages still
// in the outbox at the end, infinite scroll back through history, and the read marker moved
// as messages come into view.

import { useEffect, useLayoutEffect, useRef, useState, type FormEvent } from 'react';
import { REACTIONS, can, draftProblem, groupMessages, textParts, timeLabel, type ChatMessage, type RoomSummary } from '../../lib/chat';
import type { ChatController, PendingMessage, RoomMessages } from '../../lib/chatStore';
import { describeError } from '../../lib/format';
import { Dialog } from '../../components/Dialog';
import { useApp } from '../../store';
import { useChat } from './useChat';

const NO_PENDING: PendingMessage[] = [];
const NO_REACTIONS: string[] = [];
/** Scrolled to within this of the end counts as "at the end" (new messages keep it there). */
const AT_END_PX = 80;

export function MessageList({ controller, room, messages, meId, onReply }: { controller: ChatController; room: RoomSummary; messages: RoomMessages; meId: string | null; onReply: (m: ChatMessage) => void }) {
  const pending = useChat(controller, (s) => s.pending[room.id]) ?? NO_PENDING;
  const listRef = useRef<HTMLOListElement>(null);
  const topRef = useRef<HTMLLIElement>(null);
  const atEnd = useRef(true);
  const shape = useRef({ first: 0, last: 0, pending: 0, height: 0, top: 0 });
  const [firstUnread] = useState(() => (room.unread > 0 ? room.last_read_seq + 1 : null));
  const [deleting, setDeleting] = useState<ChatMessage | null>(null);
  const [editing, setEditing] = useState<number | null>(null);
  const items = messages.items;
  const first = items[0]?.seq ?? 0;
  const last = items.at(-1)?.seq ?? 0;

  // Keep the view where the reader is: older pages above keep the position, new messages
  // follow when at the end (or mine), the first load goes to the first unread or the end.
  useLayoutEffect(() => {
    const list = listRef.current;
    if (!list) return;
    const before = shape.current;
    if (before.last === 0 && last > 0) {
      const divider = list.querySelector<HTMLElement>('.unread-divider');
      if (divider) list.scrollTop = Math.max(0, divider.offsetTop - list.offsetTop - 40);
      else list.scrollTop = list.scrollHeight;
    } else if (first < before.first && before.first !== 0) {
      list.scrollTop = before.top + (list.scrollHeight - before.height);
    } else if (last > before.last || pending.length > before.pending) {
      const mine = items.at(-1)?.author.id === meId || pending.length > before.pending;
      if (atEnd.current || mine) list.scrollTop = list.scrollHeight;
    }
    shape.current = { first, last, pending: pending.length, height: list.scrollHeight, top: list.scrollTop };
  }, [first, last, pending.length, items, meId]);

  const onScroll = () => {
    const list = listRef.current;
    if (!list) return;
    atEnd.current = list.scrollHeight - list.scrollTop - list.clientHeight < AT_END_PX;
    shape.current.top = list.scrollTop;
    shape.current.height = list.scrollHeight;
  };

  // Infinite scroll: the top of the list in view loads the page before.
  const { hasMore, loadingOlder } = messages;
  useEffect(() => {
    const top = topRef.current;
    if (!top || !hasMore || typeof IntersectionObserver === 'undefined') return;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void controller.loadOlder(room.id);
    }, { root: listRef.current, rootMargin: '200px 0px 0px 0px' });
    observer.observe(top);
    return () => observer.disconnect();
  }, [controller, room.id, hasMore, loadingOlder, first]);

  // Read markers: a message counts as read once half of it has been on screen while the page
  // is visible; the marker moves at most every 150 ms, to the newest such message (the
  // controller keeps it forward-only). Without IntersectionObserver, showing the newest counts.
  const readUpTo = room.last_read_seq;
  const seen = useRef(0);
  const readTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(readTimer.current), []);
  useEffect(() => {
    const list = listRef.current;
    if (!list || last === 0) return;
    if (typeof IntersectionObserver === 'undefined') {
      controller.markRead(room.id, last);
      return;
    }
    const commit = () => {
      readTimer.current = undefined;
      if (document.visibilityState !== 'hidden') controller.markRead(room.id, seen.current);
    };
    const observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const seq = Number((entry.target as HTMLElement).dataset.seq);
          if (entry.isIntersecting && seq > seen.current) seen.current = seq;
        }
        readTimer.current ??= setTimeout(commit, 150);
      },
      { root: list, threshold: 0.5 },
    );
    for (const li of list.querySelectorAll('li[data-seq]')) {
      if (Number((li as HTMLElement).dataset.seq) > readUpTo) observer.observe(li);
    }
    const visible = () => document.visibilityState === 'visible' && commit();
    document.addEventListener('visibilitychange', visible);
    return () => {
      observer.disconnect();
      document.removeEventListener('visibilitychange', visible);
    };
  }, [controller, room.id, last, readUpTo, items]);

  const byId = new Map(items.map((m) => [m.seq, m]));
  const days = groupMessages(items);
  const nothing = items.length === 0 && pending.length === 0;

  return (
    <>
      <ol className="chat-messages" ref={listRef} onScroll={onScroll} aria-label={`Messages of ${room.name || 'this conversation'}`} aria-live="polite" aria-relevant="additions">
        <li ref={topRef} className="history-edge" aria-hidden={!hasMore && !loadingOlder ? true : undefined}>
          {loadingOlder ? (
            <span className="muted" role="status">
              Loading earlier messages…
            </span>
          ) : hasMore ? (
            <button type="button" className="link" onClick={() => void controller.loadOlder(room.id)}>
              Load earlier messages
            </button>
          ) : items.length > 0 ? (
            <span className="muted">The beginning of {room.kind === 'direct' ? 'your conversation' : `#${room.name}`}.</span>
          ) : null}
        </li>
        {messages.error && (
          <li className="banner banner-error" role="alert">
            <span>{messages.error} </span>
            <button type="button" className="small" onClick={() => void controller.loadLatest(room.id)}>
              Retry
            </button>
          </li>
        )}
        {messages.loading && items.length === 0 && (
          <li className="chat-state muted" role="status">
            Loading messages…
          </li>
        )}
        {!messages.loading && !messages.error && nothing && (
          <li className="chat-state">
            <strong>No messages yet.</strong>
            <span className="muted"> Say hello: everything you write here appears for every member at once.</span>
          </li>
        )}
        {days.map((day) => (
          <DayBlock key={day.day} label={day.label}>
            {day.groups.map((group) =>
              group.messages.map((m, i) => (
                <MessageItem
                  key={m.seq}
                  controller={controller}
                  room={room}
                  message={m}
                  head={i === 0}
                  mine={m.author.id === meId}
                  quoted={m.reply_to !== null ? (byId.get(m.reply_to) ?? null) : null}
                  unreadDivider={firstUnread !== null && m.seq === firstUnreadSeq(items, firstUnread, meId)}
                  editing={editing === m.seq}
                  onEdit={(on) => setEditing(on ? m.seq : null)}
                  onReply={() => onReply(m)}
                  onDelete={() => setDeleting(m)}
                />
              )),
            )}
          </DayBlock>
        ))}
        {pending.map((p) => (
          <li key={p.clientMsgId} className={`chat-msg head mine pending ${p.state}`} data-client-msg-id={p.clientMsgId} data-state={p.state}>
            <p className="msg-text">{p.text}</p>
            <p className="msg-status">
              {p.state === 'sending' && 'Sending…'}
              {p.state === 'queued' && (controller.state.online ? `Not sent yet: ${p.error ?? 'waiting'}; retrying.` : 'Waiting for the connection: sent as soon as you are back online.')}
              {p.state === 'failed' && (
                <>
                  <span className="field-error">Not sent: {p.error}</span>{' '}
                  <button type="button" className="link" onClick={() => controller.retryPending(room.id, p.clientMsgId)}>
                    Retry
                  </button>{' '}
                  <button type="button" className="link" onClick={() => controller.discardPending(room.id, p.clientMsgId)}>
                    Discard
                  </button>
                </>
              )}
            </p>
          </li>
        ))}
      </ol>
      {deleting && <DeleteDialog controller={controller} room={room} message={deleting} onClose={() => setDeleting(null)} />}
    </>
  );
}

/** The first message after my marker (at opening) that someone else wrote. */
function firstUnreadSeq(items: ChatMessage[], from: number, meId: string | null): number | null {
  return items.find((m) => m.seq >= from && m.author.id !== meId)?.seq ?? null;
}

function DayBlock({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <>
      <li className="day-divider" role="separator" aria-label={label}>
        <span>{label}</span>
      </li>
      {children}
    </>
  );
}

function MessageItem({
  controller,
  room,
  message: m,
  head,
  mine,
  quoted,
  unreadDivider,
  editing,
  onEdit,
  onReply,
  onDelete,
}: {
  controller: ChatController;
  room: RoomSummary;
  message: ChatMessage;
  head: boolean;
  mine: boolean;
  quoted: ChatMessage | null;
  unreadDivider: boolean;
  editing: boolean;
  onEdit: (on: boolean) => void;
  onReply: () => void;
  onDelete: () => void;
}) {
  const myReactions = useChat(controller, (s) => s.myReactions[m.id]) ?? NO_REACTIONS;
  const toast = useApp((s) => s.toast);
  const [picking, setPicking] = useState(false);
  const writable = !room.archived && !m.deleted;
  const react = (emoji: string) => {
    setPicking(false);
    controller.toggleReaction(room.id, m, emoji).catch((err: unknown) => toast(describeError(err, 'Reacting'), 'error'));
  };
  const reactions = Object.entries(m.reactions ?? {});
  return (
    <>
      {unreadDivider && (
        <li className="unread-divider" role="separator" aria-label="New messages">
          <span>New messages</span>
        </li>
      )}
      <li className={`chat-msg${head ? ' head' : ''}${mine ? ' mine' : ''}${m.deleted ? ' deleted' : ''}`} data-seq={m.seq} data-author={m.author.username}>
        {head && (
          <div className="msg-head">
            <span className="avatar" aria-hidden="true">
              {m.author.username.slice(0, 1).toUpperCase()}
            </span>
            <strong className="msg-author">{m.author.username}</strong>
            <time dateTime={m.created_at}>{timeLabel(m.created_at)}</time>
          </div>
        )}
        {!head && (
          <time className="msg-time-hover" dateTime={m.created_at}>
            {timeLabel(m.created_at)}
          </time>
        )}
        {m.reply_to !== null && (
          <blockquote className="msg-quote" data-reply-to={m.reply_to}>
            {quoted ? (
              <>
                <strong>{quoted.author.username}</strong> <span>{quoted.deleted ? 'message deleted' : quoted.text.slice(0, 140)}</span>
              </>
            ) : (
              <span className="muted">an earlier message (#{m.reply_to})</span>
            )}
          </blockquote>
        )}
        {editing ? (
          <EditForm controller={controller} room={room} message={m} onDone={() => onEdit(false)} />
        ) : (
          <p className="msg-text">
            {m.deleted ? (
              <span className="muted">message deleted</span>
            ) : (
              textParts(m.text, m.mention_names ?? []).map((part, i) =>
                part.mention ? (
                  <span key={i} className="mention">
                    {part.text}
                  </span>
                ) : (
                  <span key={i}>{part.text}</span>
                ),
              )
            )}
            {m.edited_at && !m.deleted && <span className="muted edited"> (edited)</span>}
          </p>
        )}
        {reactions.length > 0 && (
          <div className="msg-reactions">
            {reactions.map(([emoji, count]) => (
              <button key={emoji} type="button" className="reaction" aria-pressed={myReactions.includes(emoji)} aria-label={`${emoji} ${count}${myReactions.includes(emoji) ? ', including you' : ''}`} disabled={!writable} onClick={() => react(emoji)}>
                <span aria-hidden="true">{emoji}</span> <span>{count}</span>
              </button>
            ))}
          </div>
        )}
        {writable && !editing && (
          <div className="msg-actions" role="toolbar" aria-label={`Actions for the message of ${m.author.username}`}>
            <button type="button" className="icon" aria-label="Reply" title="Reply" onClick={onReply}>
              ↩
            </button>
            <button type="button" className="icon" aria-label="Add a reaction" title="React" aria-expanded={picking} onClick={() => setPicking((p) => !p)}>
              ☺
            </button>
            {mine && (
              <button type="button" className="icon" aria-label="Edit" title="Edit" onClick={() => onEdit(true)}>
                ✎
              </button>
            )}
            {can.deleteMessage(room.role, mine) && (
              <button type="button" className="icon" aria-label="Delete" title="Delete" onClick={onDelete}>
                🗑
              </button>
            )}
            {picking && (
              <div className="reaction-picker" role="group" aria-label="Reactions">
                {REACTIONS.map((emoji) => (
                  <button key={emoji} type="button" className="icon" aria-label={`React with ${emoji}`} onClick={() => react(emoji)}>
                    {emoji}
                  </button>
                ))}
              </div>
            )}
          </div>
        )}
      </li>
    </>
  );
}

function EditForm({ controller, room, message, onDone }: { controller: ChatController; room: RoomSummary; message: ChatMessage; onDone: () => void }) {
  const [text, setText] = useState(message.text);
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const save = async (e?: FormEvent) => {
    e?.preventDefault();
    if (text === message.text) return onDone();
    const why = draftProblem(text);
    setProblem(why);
    if (why) return;
    setBusy(true);
    try {
      await controller.edit(room.id, message, text);
      onDone();
    } catch (err) {
      setProblem(describeError(err, 'Saving'));
    } finally {
      setBusy(false);
    }
  };
  const id = `edit-${message.seq}`;
  return (
    <form className="msg-edit" onSubmit={(e) => void save(e)} noValidate>
      <label htmlFor={id} className="sr-only">
        Edit the message
      </label>
      <textarea
        id={id}
        value={text}
        autoFocus
        rows={2}
        aria-invalid={problem ? true : undefined}
        aria-describedby={problem ? `${id}-error` : undefined}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === 'Escape') {
            e.preventDefault();
            e.stopPropagation();
            onDone();
          } else if (e.key === 'Enter' && !e.shiftKey) {
            e.preventDefault();
            void save();
          }
        }}
      />
      {problem && (
        <p id={`${id}-error`} className="field-error">
          {problem}
        </p>
      )}
      <div className="msg-edit-actions">
        <button type="button" className="small" onClick={onDone}>
          Cancel
        </button>
        <button type="submit" className="primary small" disabled={busy}>
          Save
        </button>
      </div>
    </form>
  );
}

function DeleteDialog({ controller, room, message, onClose }: { controller: ChatController; room: RoomSummary; message: ChatMessage; onClose: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const confirm = async () => {
    setBusy(true);
    try {
      await controller.remove(room.id, message);
      onClose();
    } catch (err) {
      setError(describeError(err, 'Deleting'));
      setBusy(false);
    }
  };
  return (
    <Dialog title="Delete this message?" onClose={onClose} narrow>
      <p>
        Everyone will see <em>message deleted</em> in its place. This cannot be undone.
      </p>
      <blockquote className="msg-quote">{message.text.slice(0, 200)}</blockquote>
      {error && (
        <div className="banner banner-error" role="alert">
          {error}
        </div>
      )}
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" className="danger" disabled={busy} onClick={() => void confirm()}>
          Delete
        </button>
      </div>
    </Dialog>
  );
}
