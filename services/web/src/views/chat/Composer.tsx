// The message composer: Enter sends (Shift+Enter for a new line), `@` offers the room's members,
// a reply shows what it answers, typing is signalled (throttled by the controller), and a send
// goes to the outbox, so it survives being offline.

import { useId, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { draftProblem, mentionAt, mentionMatches, type ChatMessage, type Member, type RoomSummary } from '../../lib/chat';
import type { ChatController } from '../../lib/chatStore';

export function Composer({
  controller,
  room,
  members,
  username,
  replyTo,
  onCancelReply,
}: {
  controller: ChatController;
  room: RoomSummary;
  members: Member[];
  username: string;
  replyTo: ChatMessage | null;
  onCancelReply: () => void;
}) {
  const [draft, setDraft] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [mention, setMention] = useState<{ query: string; start: number } | null>(null);
  const [active, setActive] = useState(0);
  const ref = useRef<HTMLTextAreaElement>(null);
  const listId = useId();
  const matches = mention ? mentionMatches(members, mention.query, username) : [];
  const suggesting = mention !== null && matches.length > 0;
  const readOnly = room.archived;

  const update = (text: string, caret: number) => {
    setDraft(text);
    if (problem) setProblem(null);
    const found = mentionAt(text, caret);
    setMention(found);
    setActive(0);
    if (text.trim() !== '') controller.typing(room.id);
  };

  const pick = (member: Member) => {
    if (!mention) return;
    const caret = ref.current?.selectionStart ?? draft.length;
    const before = draft.slice(0, mention.start);
    const after = draft.slice(caret);
    const inserted = `@${member.username} `;
    const text = `${before}${inserted}${after.replace(/^ /, '')}`;
    setDraft(text);
    setMention(null);
    const position = before.length + inserted.length;
    requestAnimationFrame(() => {
      ref.current?.focus();
      ref.current?.setSelectionRange(position, position);
    });
  };

  const submit = (event?: FormEvent) => {
    event?.preventDefault();
    const why = draftProblem(draft);
    setProblem(why);
    if (why) return;
    controller.send(room.id, draft, replyTo?.seq ?? null);
    setDraft('');
    setMention(null);
    onCancelReply();
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (suggesting) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        setActive((i) => (i + (e.key === 'ArrowDown' ? 1 : matches.length - 1)) % matches.length);
        return;
      }
      if (e.key === 'Enter' || e.key === 'Tab') {
        e.preventDefault();
        const member = matches[active] ?? matches[0];
        if (member) pick(member);
        return;
      }
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        setMention(null);
        return;
      }
    }
    if (e.key === 'Escape' && replyTo) {
      e.preventDefault();
      onCancelReply();
      return;
    }
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      submit();
    }
  };

  if (readOnly) {
    return (
      <p className="notice chat-readonly" role="status">
        This room is archived: it is read-only until an owner or admin unarchives it.
      </p>
    );
  }
  return (
    <form className="chat-composer" onSubmit={submit} noValidate>
      {replyTo && (
        <div className="composer-reply">
          <span>
            Replying to <strong>{replyTo.author.username}</strong>: <span className="muted">{replyTo.deleted ? 'a deleted message' : replyTo.text.slice(0, 80)}</span>
          </span>
          <button type="button" className="icon" aria-label="Cancel the reply" onClick={onCancelReply}>
            ×
          </button>
        </div>
      )}
      <label htmlFor="chat-draft" className="sr-only">
        Message
      </label>
      <div className="composer-row">
        <div className="composer-input">
          {suggesting && (
            <ul id={listId} className="mention-list" role="listbox" aria-label="Members to mention">
              {matches.map((m, i) => (
                <li
                  key={m.user_id}
                  id={`${listId}-${i}`}
                  role="option"
                  aria-selected={i === active}
                  onMouseDown={(e) => {
                    e.preventDefault();
                    pick(m);
                  }}
                >
                  <span className="avatar" aria-hidden="true">
                    {m.username.slice(0, 1).toUpperCase()}
                  </span>
                  @{m.username}
                </li>
              ))}
            </ul>
          )}
          <textarea
            id="chat-draft"
            ref={ref}
            value={draft}
            rows={1}
            placeholder={`Message ${room.kind === 'direct' ? '' : '#'}${room.name || ''}`.trim()}
            role="combobox"
            aria-autocomplete="list"
            aria-expanded={suggesting}
            aria-controls={suggesting ? listId : undefined}
            aria-activedescendant={suggesting ? `${listId}-${active}` : undefined}
            aria-invalid={problem ? true : undefined}
            aria-describedby={problem ? 'chat-draft-error' : 'chat-draft-hint'}
            onChange={(e) => update(e.target.value, e.target.selectionStart ?? e.target.value.length)}
            onKeyDown={onKeyDown}
            onBlur={() => setMention(null)}
          />
        </div>
        <button type="submit" className="primary">
          Send
        </button>
      </div>
      {problem ? (
        <p id="chat-draft-error" className="field-error">
          {problem}
        </p>
      ) : (
        <p id="chat-draft-hint" className="hint composer-hint">
          Enter sends, Shift+Enter adds a line, @ mentions someone.
        </p>
      )}
    </form>
  );
}
