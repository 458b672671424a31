// The chat section (#/chat): my rooms with unread badges, the open room's messages arriving
// live on `chat:<room id>`, and a composer. Rules on the data live in lib/chat.ts.

import { useCallback, useEffect, useRef, useState, type FormEvent } from 'react';
import { badgeText, chatApi, draftProblem, mergeMessages, roomAfterMessage, roomTitle, sortRooms, type ChatMessage, type RoomSummary } from '../lib/chat';
import { describeError } from '../lib/format';
import type { LiveClient } from '../lib/live';
import { api, live as defaultLive, session, useApp } from '../store';

let drafts = 0;
const newClientMsgId = () => `web-${Date.now().toString(36)}-${(drafts += 1)}`;

/** One client for the app (a default made per render would reload on every render). */
const defaultClient = chatApi(api);

export function ChatView({ client = defaultClient, liveClient = defaultLive }: { client?: ReturnType<typeof chatApi>; liveClient?: LiveClient }) {
  const username = useApp((s) => s.username);
  const openAuth = useApp((s) => s.openAuth);
  const [rooms, setRooms] = useState<RoomSummary[] | null>(null);
  const [openId, setOpenId] = useState<string | null>(null);
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const openRef = useRef<string | null>(null);
  openRef.current = openId;

  useEffect(() => {
    if (username === null) return;
    client.rooms().then(
      (items) => {
        const sorted = sortRooms(items);
        setRooms(sorted);
        setOpenId((id) => id ?? sorted[0]?.id ?? null);
      },
      (err: unknown) => setError(`Could not load your rooms: ${describeError(err)}`),
    );
  }, [client, username]);

  const markRead = useCallback(
    (id: string, seq: number) => {
      client.markRead(id, seq).then(
        ({ unread }) => setRooms((list) => list && list.map((r) => (r.id === id ? { ...r, unread, last_read_seq: seq } : r))),
        () => {},
      );
    },
    [client],
  );

  // Every room of the list is followed live: the open one shows its messages, the others count.
  const roomIds = rooms?.map((r) => r.id).join(',') ?? '';
  useEffect(() => {
    if (!roomIds) return;
    const ids = roomIds.split(',');
    for (const id of ids) {
      liveClient.subscribe(
        `chat:${id}`,
        {
          onEvent: (event) => {
            if (event.type !== 'chat.message' && event.type !== 'chat.message_edited' && event.type !== 'chat.message_deleted') return;
            const message = event.data as ChatMessage;
            const open = openRef.current === id;
            if (open) setMessages((list) => mergeMessages(list, [message]));
            if (event.type !== 'chat.message') return;
            const mine = message.author.username === session.username;
            setRooms((list) => list && sortRooms(list.map((r) => (r.id === id ? roomAfterMessage(r, message, mine, open) : r))));
            if (open && !mine) markRead(id, message.seq);
          },
        },
        { token: session.token() },
      );
    }
    return () => ids.forEach((id) => liveClient.unsubscribe(`chat:${id}`));
  }, [roomIds, liveClient, markRead]);

  // Opening a room loads its newest page and marks it read.
  useEffect(() => {
    setMessages([]);
    if (!openId) return;
    let current = true;
    client.messages(openId).then(
      (items) => {
        if (!current) return;
        setMessages((list) => mergeMessages(list, items));
        const last = items.at(-1);
        if (last) markRead(openId, last.seq);
      },
      (err: unknown) => current && setError(`Could not load the messages: ${describeError(err)}`),
    );
    return () => {
      current = false;
    };
  }, [client, openId, markRead]);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    if (!openId) return;
    const why = draftProblem(draft);
    setProblem(why);
    if (why) return;
    setSending(true);
    try {
      const message = await client.send(openId, draft, newClientMsgId());
      setMessages((list) => mergeMessages(list, [message]));
      setRooms((list) => list && sortRooms(list.map((r) => (r.id === openId ? roomAfterMessage(r, message, true, true) : r))));
      setDraft('');
    } catch (err) {
      setProblem(describeError(err, 'Sending'));
    } finally {
      setSending(false);
    }
  };

  if (username === null) {
    return (
      <>
        <h1 tabIndex={-1}>Chat</h1>
        <div className="notice" role="status">
          <span>Chat requires signing in. </span>
          <button type="button" className="link" onClick={() => openAuth('login')}>
            Sign in
          </button>
        </div>
      </>
    );
  }
  const open = rooms?.find((r) => r.id === openId) ?? null;
  return (
    <div className="chat">
      <nav className="chat-rooms" aria-label="Rooms">
        <h1 tabIndex={-1}>Chat</h1>
        {error && (
          <div className="banner banner-error" role="alert">
            {error}
          </div>
        )}
        {rooms === null && !error && <p className="muted">Loading…</p>}
        {rooms?.length === 0 && <p className="empty muted">You are in no room yet.</p>}
        <ul>
          {rooms?.map((room) => (
            <li key={room.id}>
              <button type="button" className="chat-room" aria-current={room.id === openId ? 'true' : undefined} onClick={() => setOpenId(room.id)}>
                <span className="chat-room-name">{roomTitle(room, username)}</span>
                {room.unread > 0 && (
                  <span className="badge" aria-label={`${room.unread} unread`} data-testid={`unread-${room.id}`}>
                    {badgeText(room.unread)}
                  </span>
                )}
              </button>
            </li>
          ))}
        </ul>
      </nav>
      <section className="chat-room-view" aria-label={open ? roomTitle(open, username) : 'No room open'}>
        {open ? (
          <>
            <h2>{roomTitle(open, username)}</h2>
            {open.topic && <p className="muted">{open.topic}</p>}
            <ol className="chat-messages" aria-live="polite">
              {messages.map((m) => (
                <li key={m.seq} data-seq={m.seq} className={m.deleted ? 'deleted' : undefined}>
                  <strong>{m.author.username}</strong> <span>{m.deleted ? 'message deleted' : m.text}</span>
                  {m.edited_at && <span className="muted"> (edited)</span>}
                </li>
              ))}
            </ol>
            <form className="chat-composer" onSubmit={(e) => void submit(e)} noValidate>
              <label htmlFor="chat-draft">Message</label>
              <textarea
                id="chat-draft"
                value={draft}
                rows={2}
                disabled={open.archived}
                aria-invalid={problem ? true : undefined}
                aria-describedby={problem ? 'chat-draft-error' : undefined}
                onChange={(e) => setDraft(e.target.value)}
              />
              {problem && (
                <p id="chat-draft-error" className="field-error">
                  {problem}
                </p>
              )}
              <button type="submit" className="primary" disabled={sending || open.archived}>
                Send
              </button>
            </form>
          </>
        ) : (
          <p className="muted">Pick a room.</p>
        )}
      </section>
    </div>
  );
}
