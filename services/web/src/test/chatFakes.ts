// Test doubles for the chat: an in-memory chat api (rooms, history with before/after paging,
// sends that honour client_msg_id) and a LiveClient stand-in whose channels the test drives.

import { act } from '@testing-library/react';
import { vi } from 'vitest';
import { ApiError } from '../lib/api';
import type { ChatApi, ChatMessage, Member, MessagePage, RoomSummary } from '../lib/chat';
import type { LiveLike } from '../lib/chatStore';
import type { LiveEvent, SubscriptionHandlers } from '../lib/live';

export const ANA = { id: 'u-ana', username: 'ana' };
export const BO = { id: 'u-bo', username: 'bo' };
export const CY = { id: 'u-cy', username: 'cy' };

export const room = (id: string, name: string, last_seq: number, unread: number, at: string, extra: Partial<RoomSummary> = {}): RoomSummary => ({
  id,
  kind: 'group',
  name,
  archived: false,
  last_seq,
  last_activity_at: at,
  member_count: 2,
  role: 'owner',
  last_read_seq: last_seq - unread,
  unread,
  mentions: 0,
  ...extra,
});

export const message = (room_id: string, seq: number, author: { id: string; username: string }, text: string, extra: Partial<ChatMessage> = {}): ChatMessage => ({
  id: `${room_id}-m${seq}`,
  room_id,
  seq,
  author,
  text,
  reply_to: null,
  mentions: [],
  mention_names: [],
  reactions: {},
  created_at: new Date(Date.UTC(2026, 11, 1, 10, 0, seq)).toISOString(),
  edited_at: null,
  deleted: false,
  ...extra,
});

export const member = (user: { id: string; username: string }, role: Member['role'] = 'member'): Member => ({ user_id: user.id, username: user.username, role, joined_at: '2026-12-01T09:00:00Z' });

/** A chat api over in-memory rooms; every method is a vi.fn so calls can be checked. */
export function fakeChatApi(init: { rooms: RoomSummary[]; history?: Record<string, ChatMessage[]>; members?: Record<string, Member[]>; me?: { id: string; username: string } }) {
  const me = init.me ?? ANA;
  const history: Record<string, ChatMessage[]> = { ...(init.history ?? {}) };
  const members: Record<string, Member[]> = { ...(init.members ?? {}) };
  const used = new Map<string, ChatMessage>();
  const state = { offline: false, sent: [] as { room: string; text: string; clientMsgId: string; replyTo: number | null }[] };
  const page = (id: string, q: { before?: number; after?: number; limit?: number }): MessagePage => {
    const all = history[id] ?? [];
    const limit = q.limit ?? 50;
    if (q.after !== undefined) {
      const items = all.filter((m) => m.seq > (q.after ?? 0)).slice(0, limit);
      const more = all.some((m) => m.seq > (items.at(-1)?.seq ?? Infinity));
      return { items, next: more ? (items.at(-1)?.seq ?? null) : null };
    }
    const older = all.filter((m) => q.before === undefined || m.seq < q.before);
    const items = older.slice(-limit);
    const first = items[0]?.seq;
    return { items, next: first !== undefined && older.some((m) => m.seq < first) ? first : null };
  };
  const client = {
    rooms: vi.fn(async () => init.rooms),
    room: vi.fn(async (id: string) => {
      const r = init.rooms.find((x) => x.id === id);
      if (!r) throw new ApiError(404, 'not_found', 'no such room');
      return r;
    }),
    createRoom: vi.fn(async (body: { name: string; topic?: string; members?: string[] }) => room(`r-${body.name}`, body.name, 0, 0, '2026-12-02T00:00:00Z', { topic: body.topic ?? '', member_count: 1 + (body.members?.length ?? 0) })),
    direct: vi.fn(async (username: string) => room(`d-${username}`, '', 0, 0, '2026-12-02T00:00:00Z', { kind: 'direct', direct: [me, { id: `u-${username}`, username }] })),
    messages: vi.fn(async (id: string, q: { before?: number; after?: number; limit?: number } = {}) => page(id, q)),
    send: vi.fn(async (id: string, text: string, clientMsgId: string, replyTo: number | null = null) => {
      if (state.offline) throw new ApiError(0, 'network', 'Cannot reach the Courier api.');
      state.sent.push({ room: id, text, clientMsgId, replyTo });
      const again = used.get(clientMsgId);
      if (again) return again;
      const list = (history[id] ??= []);
      const m = message(id, (list.at(-1)?.seq ?? 0) + 1, me, text, { reply_to: replyTo });
      list.push(m);
      used.set(clientMsgId, m);
      return m;
    }),
    edit: vi.fn(async (id: string, msg: string, text: string) => {
      const m = (history[id] ?? []).find((x) => x.id === msg);
      if (!m) throw new ApiError(404, 'not_found', 'gone');
      Object.assign(m, { text, edited_at: '2026-12-01T11:00:00Z' });
      return { ...m };
    }),
    remove: vi.fn(async () => {}),
    react: vi.fn(async (id: string, msg: string, emoji: string) => {
      const m = (history[id] ?? []).find((x) => x.id === msg);
      if (!m) throw new ApiError(404, 'not_found', 'gone');
      m.reactions = { ...m.reactions, [emoji]: (m.reactions?.[emoji] ?? 0) + 1 };
      return { message: { ...m }, added: true };
    }),
    unreact: vi.fn(async (id: string, msg: string, emoji: string) => {
      const m = (history[id] ?? []).find((x) => x.id === msg);
      if (!m) throw new ApiError(404, 'not_found', 'gone');
      const reactions = { ...m.reactions };
      const left = (reactions[emoji] ?? 1) - 1;
      if (left > 0) reactions[emoji] = left;
      else delete reactions[emoji];
      m.reactions = reactions;
      return { ...m };
    }),
    markRead: vi.fn(async (id: string, seq: number) => ({ room_id: id, seq, unread: 0, mentions: 0 })),
    members: vi.fn(async (id: string) => members[id] ?? [member(me, 'owner')]),
    addMember: vi.fn(async (id: string, username: string, role: Member['role'] = 'member') => {
      const m = member({ id: `u-${username}`, username }, role);
      (members[id] ??= []).push(m);
      return m;
    }),
    setRole: vi.fn(async (_id: string, username: string, role: Member['role']) => member({ id: `u-${username}`, username }, role)),
    removeMember: vi.fn(async () => {}),
  } satisfies ChatApi;
  return { client: client as ChatApi & typeof client, history, state };
}

/** A LiveClient stand-in: keeps each channel's handlers and the frames sent. */
export function fakeLive() {
  const channels = new Map<string, SubscriptionHandlers>();
  const frames: Record<string, unknown>[] = [];
  const client: LiveLike & { open: boolean } = {
    open: true,
    subscribe: (channel, handlers) => {
      channels.set(channel, handlers);
    },
    unsubscribe: (channel) => {
      channels.delete(channel);
    },
    send: (frame) => {
      if (!client.open) return false;
      frames.push(frame);
      return true;
    },
    resume: () => {},
  };
  let seq = 100;
  const on = (channel: string) => {
    const handlers = channels.get(channel);
    if (!handlers) throw new Error(`not subscribed to ${channel} (have ${[...channels.keys()].join(', ')})`);
    return handlers;
  };
  return {
    client,
    channels,
    frames,
    subscribed: (channel: string, fresh = true) => act(() => on(channel).onSubscribed?.({ seq, fresh, recovered: fresh ? null : true })),
    event: (channel: string, type: string, data: unknown) =>
      act(() => {
        seq += 1;
        on(channel).onEvent?.({ type, data } as LiveEvent, seq);
      }),
    signal: (channel: string, frame: Record<string, unknown>) => act(() => on(channel).onSignal?.({ channel, ...frame })),
    unsubscribed: (channel: string, reason: string) => act(() => on(channel).onUnsubscribed?.(reason)),
    resync: (channel: string) => act(() => on(channel).onResync?.('history_lost')),
  };
}
