// The chat section (#/chat): the room list (a drawer at phone widths) and the open room. The
// state and its rules live in lib/chatStore.ts (ChatController); these components render it.

import { useEffect, useState } from 'react';
import type { ChatController } from '../lib/chatStore';
import { useApp } from '../store';
import { DirectDialog, NewRoomDialog } from './chat/RoomDialogs';
import { RoomList } from './chat/RoomList';
import { RoomView } from './chat/RoomView';
import { chatController, useChat } from './chat/useChat';

export function ChatView({ controller = chatController() }: { controller?: ChatController }) {
  const username = useApp((s) => s.username);
  const userId = useApp((s) => s.userId);
  const openAuth = useApp((s) => s.openAuth);
  const rooms = useChat(controller, (s) => s.rooms);
  const openId = useChat(controller, (s) => s.openId);
  const notice = useChat(controller, (s) => s.notice);
  const [dialog, setDialog] = useState<'room' | 'direct' | null>(null);
  const [drawer, setDrawer] = useState(false);

  useEffect(() => {
    if (username !== null && userId !== null) controller.start({ id: userId, username });
  }, [controller, username, userId]);

  // The newest room opens by itself on a wide screen; on a phone the list shows first.
  const first = rooms?.[0]?.id ?? null;
  useEffect(() => {
    if (openId === null && first !== null && window.matchMedia?.('(min-width: 761px)').matches !== false) controller.open(first);
  }, [controller, openId, first]);

  useEffect(() => {
    if (!drawer) return;
    const onKey = (event: KeyboardEvent) => event.key === 'Escape' && setDrawer(false);
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [drawer]);

  if (username === null) {
    return (
      <div className="chat chat-signed-out">
        <h1 tabIndex={-1}>Chat</h1>
        <div className="notice" role="status">
          <span>Chat requires signing in. </span>
          <button type="button" className="link" onClick={() => openAuth('login')}>
            Sign in
          </button>
        </div>
      </div>
    );
  }
  const open = rooms?.find((r) => r.id === openId) ?? null;
  const unreadElsewhere = (rooms ?? []).filter((r) => r.id !== openId).reduce((n, r) => n + r.unread, 0);
  const pick = (id: string) => {
    controller.open(id);
    setDrawer(false);
  };
  return (
    <div className={`chat${open ? ' has-room' : ''}${drawer ? ' rooms-open' : ''}`}>
      <RoomList controller={controller} username={username} onPick={pick} onNewRoom={() => setDialog('room')} onDirect={() => setDialog('direct')} />
      {drawer && <button type="button" className="drawer-backdrop chat-backdrop" aria-label="Close the room list" onClick={() => setDrawer(false)} />}
      <div className="chat-main">
        {notice && (
          <div className={`banner ${notice.level === 'warning' ? 'banner-warning' : 'banner-info'} chat-notice`} role="status">
            <span>{notice.text}</span>
            <button type="button" className="icon" aria-label="Dismiss" onClick={() => controller.dismissNotice()}>
              ×
            </button>
          </div>
        )}
        {open ? (
          <RoomView key={open.id} controller={controller} room={open} username={username} unreadElsewhere={unreadElsewhere} onRooms={() => setDrawer(true)} />
        ) : (
          <div className="chat-pick">
            {rooms && rooms.length > 0 ? <p className="muted">Pick a room on the left.</p> : rooms && <p className="muted">Your conversations will appear here.</p>}
          </div>
        )}
      </div>
      {dialog === 'room' && <NewRoomDialog controller={controller} onClose={() => setDialog(null)} />}
      {dialog === 'direct' && <DirectDialog controller={controller} onClose={() => setDialog(null)} />}
    </div>
  );
}
