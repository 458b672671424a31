// The open room: its header (title, topic, who is online, the members panel), the messages,
// who is typing, the connection state, and the composer.

import { useEffect, useState } from 'react';
import { roomTitle, type ChatMessage, type ChatUser, type Member, type RoomSummary } from '../../lib/chat';
import type { ChatController } from '../../lib/chatStore';
import { useApp } from '../../store';
import { Composer } from './Composer';
import { MembersPanel } from './MembersPanel';
import { MessageList } from './MessageList';
import { useChat } from './useChat';

const NO_MEMBERS: Member[] = [];
const NOBODY: ChatUser[] = [];

/** "ana is typing…", "ana and bo are typing…", "3 people are typing…". */
export function typingText(users: ChatUser[]): string {
  if (users.length === 0) return '';
  if (users.length === 1) return `${users[0]?.username} is typing…`;
  if (users.length === 2) return `${users[0]?.username} and ${users[1]?.username} are typing…`;
  return `${users.length} people are typing…`;
}

export function RoomView({ controller, room, username, onRooms, unreadElsewhere }: { controller: ChatController; room: RoomSummary; username: string; onRooms: () => void; unreadElsewhere: number }) {
  const messages = useChat(controller, (s) => s.messages[room.id]);
  const members = useChat(controller, (s) => s.members[room.id]) ?? NO_MEMBERS;
  const typing = useChat(controller, (s) => s.typing[room.id]) ?? NOBODY;
  const presence = useChat(controller, (s) => s.presence[room.id]) ?? NOBODY;
  const online = useChat(controller, (s) => s.online);
  const meId = useChat(controller, (s) => s.me?.id ?? null);
  const connection = useApp((s) => s.connection);
  const [replyTo, setReplyTo] = useState<ChatMessage | null>(null);
  const [membersOpen, setMembersOpen] = useState(() => typeof window !== 'undefined' && window.matchMedia?.('(min-width: 1100px)').matches === true);
  // Where the panel overlays the room (narrow screens), Esc closes it, unless a field used the
  // key first (a mention list, a reply, an edit).
  useEffect(() => {
    if (!membersOpen || window.matchMedia?.('(max-width: 1100px)').matches !== true) return;
    const onKey = (event: KeyboardEvent) => {
      if (event.key === 'Escape' && !event.defaultPrevented) setMembersOpen(false);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [membersOpen]);
  const title = roomTitle(room, username);
  const here = presence.filter((u) => u.id !== meId).length;

  return (
    <div className={`chat-room-layout${membersOpen ? ' members-open' : ''}`}>
      <section className="chat-room-view" aria-labelledby="chat-room-title">
        <header className="chat-room-head">
          <button type="button" className="rooms-toggle small" onClick={onRooms} aria-label={`Rooms${unreadElsewhere ? `, ${unreadElsewhere} unread` : ''}`}>
            ← Rooms{unreadElsewhere > 0 && <span className="badge">{unreadElsewhere > 99 ? '99+' : unreadElsewhere}</span>}
          </button>
          <div className="chat-room-title">
            <h2 id="chat-room-title">{title}</h2>
            {room.topic && <p className="muted chat-topic">{room.topic}</p>}
          </div>
          <button type="button" className="members-toggle small" aria-expanded={membersOpen} aria-controls="chat-members" onClick={() => setMembersOpen((o) => !o)}>
            <span className={`presence-dot${here > 0 ? ' online' : ''}`} aria-hidden="true" />
            <span className="presence-count">{presence.length} online</span>
            <span className="muted"> · {room.member_count} members</span>
          </button>
        </header>
        {(!online || connection.state === 'reconnecting') && (
          <div className="banner banner-warning chat-connection" role="status">
            {!online ? 'You are offline. Messages you send are kept and sent, in order, as soon as you are back.' : 'Reconnecting to live updates… Nothing is lost: the room catches up when the connection is back.'}
          </div>
        )}
        {messages ? (
          <MessageList controller={controller} room={room} messages={messages} meId={meId} onReply={setReplyTo} />
        ) : (
          <p className="chat-state muted" role="status">
            Loading messages…
          </p>
        )}
        <p className="typing-line" aria-live="polite" data-testid="typing">
          {typingText(typing)}
        </p>
        <Composer controller={controller} room={room} members={members} username={username} replyTo={replyTo} onCancelReply={() => setReplyTo(null)} />
      </section>
      {membersOpen && <button type="button" className="members-backdrop" aria-label="Close the members panel" tabIndex={-1} onClick={() => setMembersOpen(false)} />}
      {membersOpen && (
        <div id="chat-members" className="chat-members-wrap">
          <MembersPanel controller={controller} room={room} onClose={() => setMembersOpen(false)} />
        </div>
      )}
    </div>
  );
}
