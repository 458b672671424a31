// Chat state without React: the api's room summaries and messages (docs/chat.md), and the pure
// rules the chat view applies to them — messages kept once each in seq order whatever order
// REST pages and live events arrive in, rooms by newest activity, unread badges.

import type { Api } from './api';

export interface RoomSummary {
  id: string;
  kind: 'group' | 'direct';
  name: string | null;
  topic?: string | null;
  archived: boolean;
  last_seq: number;
  last_activity_at: string;
  member_count: number;
  direct?: { username: string }[] | null;
  role?: string;
  last_read_seq: number;
  unread: number;
  mentions: number;
}

export interface ChatMessage {
  id: string;
  room_id: string;
  seq: number;
  author: { id: string; username: string };
  text: string;
  reply_to: number | null;
  mention_names?: string[];
  reactions?: Record<string, number>;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
}

/** Most characters in one message (the api's limit, Unicode scalar values). */
export const MAX_MESSAGE_CHARS = 4000;

/** Inserts or replaces messages by seq; the result is sorted by seq, each seq once. */
export function mergeMessages(current: ChatMessage[], incoming: ChatMessage[]): ChatMessage[] {
  const bySeq = new Map(current.map((m) => [m.seq, m]));
  for (const message of incoming) bySeq.set(message.seq, message);
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/** Rooms newest activity first (ties by id, as the api orders them). */
export function sortRooms(rooms: RoomSummary[]): RoomSummary[] {
  return [...rooms].sort((a, b) => b.last_activity_at.localeCompare(a.last_activity_at) || b.id.localeCompare(a.id));
}

/** A room's list entry after a message arrived in it; `mine` messages never count as unread. */
export function roomAfterMessage(room: RoomSummary, message: ChatMessage, mine: boolean, open: boolean): RoomSummary {
  if (message.seq <= room.last_seq) return room;
  const unread = mine || open ? room.unread : room.unread + (message.seq - room.last_seq);
  return { ...room, last_seq: message.seq, last_activity_at: message.created_at, unread };
}

/** What the badge says: nothing for 0, the count, or 99+. */
export function badgeText(unread: number): string {
  if (unread <= 0) return '';
  return unread > 99 ? '99+' : String(unread);
}

/** The room's title: its name, or the other person of a direct room. */
export function roomTitle(room: RoomSummary, me: string | null): string {
  if (room.kind === 'direct') {
    const other = room.direct?.map((p) => p.username).find((name) => name !== me);
    return other ? `@${other}` : 'Direct messages';
  }
  return room.name ?? 'Untitled room';
}

/** Why a draft cannot be sent, or null. */
export function draftProblem(text: string): string | null {
  if (text.trim() === '') return 'Write something first.';
  if ([...text].length > MAX_MESSAGE_CHARS) return `At most ${MAX_MESSAGE_CHARS} characters.`;
  return null;
}

export function chatApi(api: Api) {
  const room = (id: string) => `/api/v1/chats/${encodeURIComponent(id)}`;
  return {
    async rooms(): Promise<RoomSummary[]> {
      return (await api.send<{ items: RoomSummary[] }>('GET', '/api/v1/chats?limit=100')).data.items;
    },
    async createRoom(name: string): Promise<RoomSummary> {
      return (await api.send<RoomSummary>('POST', '/api/v1/chats', { body: { name } })).data;
    },
    async messages(id: string): Promise<ChatMessage[]> {
      return (await api.send<{ items: ChatMessage[] }>('GET', `${room(id)}/messages?limit=50`)).data.items;
    },
    async send(id: string, text: string, clientMsgId: string): Promise<ChatMessage> {
      return (await api.send<ChatMessage>('POST', `${room(id)}/messages`, { body: { text, client_msg_id: clientMsgId } })).data;
    },
    async markRead(id: string, seq: number): Promise<{ unread: number; mentions: number }> {
      return (await api.send<{ unread: number; mentions: number }>('POST', `${room(id)}/read`, { body: { seq } })).data;
    },
  };
}

export type ChatApi = ReturnType<typeof chatApi>;
