// The room list: my rooms newest activity first, with unread and mention badges that follow
// the live events, and the buttons to create a room or start a direct message.

import { badgeText, roomTitle, type RoomSummary } from '../../lib/chat';
import type { ChatController } from '../../lib/chatStore';
import { useChat } from './useChat';

export function RoomList({ controller, username, onPick, onNewRoom, onDirect }: { controller: ChatController; username: string; onPick: (id: string) => void; onNewRoom: () => void; onDirect: () => void }) {
  const rooms = useChat(controller, (s) => s.rooms);
  const error = useChat(controller, (s) => s.roomsError);
  const openId = useChat(controller, (s) => s.openId);
  return (
    <nav className="chat-rooms" aria-label="Rooms">
      <div className="chat-rooms-head">
        <h1 tabIndex={-1}>Chat</h1>
        <div className="chat-rooms-actions">
          <button type="button" className="primary small" onClick={onNewRoom}>
            New room
          </button>
          <button type="button" className="small" onClick={onDirect}>
            Message someone
          </button>
        </div>
      </div>
      {error && (
        <div className="banner banner-error" role="alert">
          <span>{error} </span>
          <button type="button" className="small" onClick={() => void controller.loadRooms()}>
            Retry
          </button>
        </div>
      )}
      {rooms === null && !error && (
        <p className="muted chat-loading" role="status">
          Loading your rooms…
        </p>
      )}
      {rooms?.length === 0 && (
        <div className="chat-empty-rooms">
          <p>You are in no room yet.</p>
          <p className="muted">Create one and invite people, or send someone a direct message.</p>
        </div>
      )}
      <ul>
        {rooms?.map((room) => (
          <li key={room.id}>
            <RoomButton room={room} username={username} current={room.id === openId} onPick={onPick} />
          </li>
        ))}
      </ul>
    </nav>
  );
}

function RoomButton({ room, username, current, onPick }: { room: RoomSummary; username: string; current: boolean; onPick: (id: string) => void }) {
  const title = roomTitle(room, username);
  return (
    <button type="button" className={`chat-room${room.unread > 0 ? ' has-unread' : ''}`} aria-current={current ? 'true' : undefined} data-room-id={room.id} onClick={() => onPick(room.id)}>
      <span className={`room-mark${room.kind === 'direct' ? ' direct' : ''}`} aria-hidden="true">
        {room.kind === 'direct' ? title.slice(1, 2).toUpperCase() : '#'}
      </span>
      <span className="chat-room-name">{title}</span>
      {room.archived && <span className="tag">archived</span>}
      {room.mentions > 0 && (
        <span className="badge badge-mention" aria-label={`${room.mentions} mention${room.mentions === 1 ? '' : 's'}`}>
          @
        </span>
      )}
      {room.unread > 0 && (
        <span className="badge" aria-label={`${room.unread} unread`} data-testid={`unread-${room.id}`}>
          {badgeText(room.unread)}
        </span>
      )}
    </button>
  );
}
