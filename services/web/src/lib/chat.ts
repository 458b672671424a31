// Chat data without React: the api's wire types (docs/chat.md), the REST client, and the pure
// rules the chat view applies — messages kept once each in seq order whatever order REST pages
// and live events arrive in, rooms by newest activity, badges, grouping by author and day, and
// the `@mention` rule the api uses.

import type { Api } from './api';

export type Role = 'owner' | 'admin' | 'member';

export interface ChatUser {
  id: string;
  username: string;
}

export interface RoomSummary {
  id: string;
  kind: 'group' | 'direct';
  name: string | null;
  topic?: string | null;
  archived: boolean;
  created_by?: ChatUser;
  created_at?: string;
  last_seq: number;
  last_activity_at: string;
  member_count: number;
  direct?: ChatUser[] | { username: string }[] | null;
  role?: Role;
  last_read_seq: number;
  unread: number;
  mentions: number;
}

export interface ChatMessage {
  id: string;
  room_id: string;
  seq: number;
  author: ChatUser;
  text: string;
  reply_to: number | null;
  mentions?: string[];
  mention_names?: string[];
  reactions?: Record<string, number>;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
}

export interface Member {
  user_id: string;
  username: string;
  role: Role;
  joined_at: string;
}

export interface ReadMarker {
  room_id: string;
  seq: number;
  unread: number;
  mentions: number;
}

export interface ReactionChange {
  room_id: string;
  message_id: string;
  seq: number;
  emoji: string;
  user_id: string;
  added: boolean;
  count: number;
}

export interface MemberChange {
  room_id: string;
  user_id: string;
  username: string;
  role: Role;
}

export interface MessagePage {
  items: ChatMessage[];
  next: number | null;
}

/** Most characters in one message (the api's limit, Unicode scalar values). */
export const MAX_MESSAGE_CHARS = 4000;
/** The api's bounds for a room's name and topic, and the members named at creation. */
export const MAX_ROOM_NAME = 100;
export const MAX_TOPIC = 500;
export const MAX_INITIAL_MEMBERS = 100;
/** The reactions offered in the picker (any emoji the api accepts works). */
export const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '👀'];

/**
 * Inserts or replaces messages by seq; the result is sorted by seq, each seq once. A message's
 * later states win over earlier ones whatever order they arrive in: a tombstone is final, and
 * a `chat.message` (the first state) never replaces one already there.
 */
export function mergeMessages(current: ChatMessage[], incoming: ChatMessage[]): ChatMessage[] {
  const bySeq = new Map(current.map((m) => [m.seq, m]));
  for (const message of incoming) {
    const had = bySeq.get(message.seq);
    if (had && newness(had) > newness(message)) continue;
    bySeq.set(message.seq, message);
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/** How late in a message's life this state is: created < edited (by time) < deleted. */
function newness(m: ChatMessage): number {
  if (m.deleted) return Number.MAX_SAFE_INTEGER;
  return m.edited_at ? Date.parse(m.edited_at) || 1 : 0;
}

/** Rooms newest activity first (ties by id, as the api orders them). */
export function sortRooms(rooms: RoomSummary[]): RoomSummary[] {
  return [...rooms].sort((a, b) => b.last_activity_at.localeCompare(a.last_activity_at) || b.id.localeCompare(a.id));
}

/**
 * A room's list entry after a message arrived in it. Others' messages after my marker count as
 * unread (and as a mention when they name me); each seq counts once.
 */
export function roomAfterMessage(room: RoomSummary, message: ChatMessage, meId: string | null): RoomSummary {
  if (message.seq <= room.last_seq) return room;
  const counts = message.author.id !== meId && message.seq > room.last_read_seq;
  const mentioned = counts && meId !== null && (message.mentions ?? []).includes(meId);
  return {
    ...room,
    last_seq: message.seq,
    last_activity_at: message.created_at > room.last_activity_at ? message.created_at : room.last_activity_at,
    unread: counts ? room.unread + 1 : room.unread,
    mentions: mentioned ? room.mentions + 1 : room.mentions,
  };
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
  return room.name || 'Untitled room';
}

/** Why a draft cannot be sent, or null. */
export function draftProblem(text: string): string | null {
  if (text.trim() === '') return 'Write something first.';
  if ([...text].length > MAX_MESSAGE_CHARS) return `At most ${MAX_MESSAGE_CHARS} characters (this is ${[...text].length}).`;
  return null;
}

/** Who may do what in a room (docs/chat.md, Roles). */
export const can = {
  manage: (role: Role | undefined) => role === 'owner' || role === 'admin',
  changeRoles: (role: Role | undefined) => role === 'owner',
  remove: (mine: Role | undefined, theirs: Role) => mine === 'owner' || (mine === 'admin' && theirs === 'member'),
  deleteMessage: (role: Role | undefined, own: boolean) => own || role === 'owner' || role === 'admin',
};

/** A character that can be part of a username (the api's `@mention` rule). */
const NAME_CHAR = /[A-Za-z0-9_.-]/;

/**
 * The `@mention` being typed at `caret`: the partial name and where its `@` is, or null. Like the
 * api, an `@` counts only at the start or after a character that cannot be part of a name.
 */
export function mentionAt(text: string, caret: number): { query: string; start: number } | null {
  let i = caret;
  while (i > 0 && NAME_CHAR.test(text[i - 1] ?? '')) i -= 1;
  if (i === 0 || text[i - 1] !== '@') return null;
  const at = i - 1;
  if (at > 0 && (NAME_CHAR.test(text[at - 1] ?? '') || text[at - 1] === '@')) return null;
  return { query: text.slice(i, caret), start: at };
}

/** Members whose name starts with `query` (case-insensitive), me excluded, at most `limit`. */
export function mentionMatches(members: Member[], query: string, me: string | null, limit = 8): Member[] {
  const q = query.toLowerCase();
  return members.filter((m) => m.username !== me && m.username.toLowerCase().startsWith(q)).slice(0, limit);
}

/** Splits text into plain parts and `@name` parts for the names the api found mentioned. */
export function textParts(text: string, names: string[]): { text: string; mention: boolean }[] {
  if (names.length === 0) return [{ text, mention: false }];
  const wanted = new Set(names.map((n) => n.toLowerCase()));
  const parts: { text: string; mention: boolean }[] = [];
  const re = /@([A-Za-z0-9_.-]+)/g;
  let last = 0;
  for (let match = re.exec(text); match; match = re.exec(text)) {
    const before = match.index > 0 ? (text[match.index - 1] ?? '') : '';
    let name = match[1] ?? '';
    if (!wanted.has(name.toLowerCase()) && name.endsWith('.')) name = name.replace(/\.+$/, '');
    if ((before && (NAME_CHAR.test(before) || before === '@')) || !wanted.has(name.toLowerCase())) continue;
    if (match.index > last) parts.push({ text: text.slice(last, match.index), mention: false });
    parts.push({ text: `@${name}`, mention: true });
    last = match.index + 1 + name.length;
    re.lastIndex = last;
  }
  if (last < text.length) parts.push({ text: text.slice(last), mention: false });
  return parts;
}

/** Local calendar day of an RFC 3339 time, as `YYYY-MM-DD`. */
function dayKey(time: string): string {
  const d = new Date(time);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

/** "Today", "Yesterday" or a date. */
export function dayLabel(time: string, now = new Date()): string {
  const key = dayKey(time);
  if (key === dayKey(now.toISOString())) return 'Today';
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (key === dayKey(yesterday.toISOString())) return 'Yesterday';
  return new Date(time).toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' });
}

/** 14:05 */
export function timeLabel(time: string): string {
  return new Date(time).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
}

export interface MessageGroup {
  key: string;
  author: ChatUser;
  messages: ChatMessage[];
}

export interface DayGroup {
  day: string;
  label: string;
  groups: MessageGroup[];
}

/** Consecutive messages of one author within this long share one header. */
const GROUP_GAP_MS = 5 * 60_000;

/** Messages by day, and within a day by runs of one author (a gap of 5 minutes starts a new run). */
export function groupMessages(messages: ChatMessage[], now = new Date()): DayGroup[] {
  const days: DayGroup[] = [];
  for (const m of messages) {
    const day = dayKey(m.created_at);
    let current = days.at(-1);
    if (!current || current.day !== day) {
      current = { day, label: dayLabel(m.created_at, now), groups: [] };
      days.push(current);
    }
    const group = current.groups.at(-1);
    const previous = group?.messages.at(-1);
    if (group && previous && group.author.id === m.author.id && Date.parse(m.created_at) - Date.parse(previous.created_at) < GROUP_GAP_MS) {
      group.messages.push(m);
    } else {
      current.groups.push({ key: `g${m.seq}`, author: m.author, messages: [m] });
    }
  }
  return days;
}

/** `general, ana , bo` → `['general', 'ana', 'bo']` without blanks or repeats. */
export function parseNames(text: string): string[] {
  const seen = new Set<string>();
  return text
    .split(/[\s,]+/)
    .map((n) => n.trim().replace(/^@/, ''))
    .filter((n) => n !== '' && !seen.has(n.toLowerCase()) && seen.add(n.toLowerCase()));
}

export function chatApi(api: Api) {
  const room = (id: string) => `/api/v1/chats/${encodeURIComponent(id)}`;
  const message = (id: string, msg: string) => `${room(id)}/messages/${encodeURIComponent(msg)}`;
  return {
    async rooms(): Promise<RoomSummary[]> {
      return (await api.send<{ items: RoomSummary[] }>('GET', '/api/v1/chats?limit=100')).data.items;
    },
    async room(id: string): Promise<RoomSummary> {
      return (await api.send<RoomSummary>('GET', room(id))).data;
    },
    async createRoom(body: { name: string; topic?: string; members?: string[] }): Promise<RoomSummary> {
      return (await api.send<RoomSummary>('POST', '/api/v1/chats', { body })).data;
    },
    async direct(username: string): Promise<RoomSummary> {
      return (await api.send<RoomSummary>('POST', '/api/v1/chats', { body: { direct: username } })).data;
    },
    /** A page of history: the newest without `before`/`after`. */
    async messages(id: string, page: { before?: number; after?: number; limit?: number } = {}): Promise<MessagePage> {
      const query = new URLSearchParams({ limit: String(page.limit ?? 50) });
      if (page.before !== undefined) query.set('before', String(page.before));
      if (page.after !== undefined) query.set('after', String(page.after));
      const data = (await api.send<MessagePage>('GET', `${room(id)}/messages?${query}`)).data;
      return { items: data.items, next: data.next ?? null };
    },
    async send(id: string, text: string, clientMsgId: string, replyTo: number | null = null): Promise<ChatMessage> {
      const body: Record<string, unknown> = { text, client_msg_id: clientMsgId };
      if (replyTo !== null) body.reply_to = replyTo;
      return (await api.send<ChatMessage>('POST', `${room(id)}/messages`, { body })).data;
    },
    async edit(id: string, msg: string, text: string): Promise<ChatMessage> {
      return (await api.send<ChatMessage>('PATCH', message(id, msg), { body: { text } })).data;
    },
    async remove(id: string, msg: string): Promise<void> {
      await api.send('DELETE', message(id, msg));
    },
    /** Adds my reaction; `added` is false when I had already reacted so. */
    async react(id: string, msg: string, emoji: string): Promise<{ message: ChatMessage; added: boolean }> {
      const reply = await api.send<ChatMessage>('PUT', `${message(id, msg)}/reactions/${encodeURIComponent(emoji)}`);
      return { message: reply.data, added: reply.status === 201 };
    },
    async unreact(id: string, msg: string, emoji: string): Promise<ChatMessage> {
      return (await api.send<ChatMessage>('DELETE', `${message(id, msg)}/reactions/${encodeURIComponent(emoji)}`)).data;
    },
    async markRead(id: string, seq: number): Promise<ReadMarker> {
      return (await api.send<ReadMarker>('POST', `${room(id)}/read`, { body: { seq } })).data;
    },
    async members(id: string): Promise<Member[]> {
      return (await api.send<{ items: Member[] }>('GET', `${room(id)}/members`)).data.items;
    },
    async addMember(id: string, username: string, role: Role = 'member'): Promise<Member> {
      return (await api.send<Member>('POST', `${room(id)}/members`, { body: { username, role } })).data;
    },
    async setRole(id: string, username: string, role: Role): Promise<Member> {
      return (await api.send<Member>('PATCH', `${room(id)}/members/${encodeURIComponent(username)}`, { body: { role } })).data;
    },
    async removeMember(id: string, username: string): Promise<void> {
      await api.send('DELETE', `${room(id)}/members/${encodeURIComponent(username)}`);
    },
  };
}

export type ChatApi = ReturnType<typeof chatApi>;
