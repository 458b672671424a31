import { afterEach, describe, expect, it, vi } from 'vitest';
import { waitFor } from '@testing-library/react';
import { ANA, BO, CY, fakeChatApi, fakeLive, message, room } from '../test/chatFakes';
import { ChatController } from './chatStore';
import { groupMessages, mentionAt, mergeMessages, textParts } from './chat';

async function started(rooms = [room('r1', 'general', 3, 0, '2026-12-01T10:00:03Z'), room('r2', 'random', 5, 2, '2026-12-01T09:00:00Z')], history = {}) {
  const api = fakeChatApi({ rooms, history });
  const live = fakeLive();
  const chat = new ChatController(api.client, live.client, () => 'token');
  chat.start(ANA);
  expect([...live.channels.keys()]).toEqual(['user:u-ana']);
  live.subscribed('user:u-ana');
  await waitFor(() => expect(chat.state.rooms).toHaveLength(rooms.length));
  return { api, live, chat };
}

describe('ChatController', () => {
  afterEach(() => vi.useRealTimers());

  it('loads my rooms once user:<me> is subscribed, and follows each room', async () => {
    const { chat, live } = await started();
    expect(chat.state.rooms?.map((r) => r.name)).toEqual(['general', 'random']);
    expect([...live.channels.keys()].sort()).toEqual(['chat:r1', 'chat:r2', 'user:u-ana']);
  });

  it('user:<me> events: a new room appears and is followed; a removal takes it away with a notice', async () => {
    const { chat, live } = await started();
    live.event('user:u-ana', 'chat.member_added', room('r3', 'new one', 0, 0, '2026-12-01T11:00:00Z'));
    expect(chat.state.rooms?.[0]?.name).toBe('new one');
    expect(live.channels.has('chat:r3')).toBe(true);
    // The same event again (replayed around a resume) changes nothing.
    live.event('user:u-ana', 'chat.member_added', room('r3', 'new one', 0, 0, '2026-12-01T11:00:00Z'));
    expect(chat.state.rooms).toHaveLength(3);

    chat.open('r2');
    live.event('user:u-ana', 'chat.member_removed', { room_id: 'r2' });
    expect(chat.state.rooms?.map((r) => r.id)).toEqual(['r3', 'r1']);
    expect(chat.state.openId).toBeNull();
    expect(chat.state.notice?.text).toBe('You were removed from random.');
    expect(live.channels.has('chat:r2')).toBe(false);
  });

  it('a room list read while events add and remove rooms keeps what the events said', async () => {
    const api = fakeChatApi({ rooms: [room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z'), room('r2', 'random', 0, 0, '2026-12-01T09:00:00Z')] });
    const live = fakeLive();
    const chat = new ChatController(api.client, live.client, () => 'token');
    let answer: (rooms: ReturnType<typeof room>[]) => void = () => {};
    api.client.rooms.mockImplementationOnce(() => new Promise((resolve) => (answer = resolve)));
    chat.start(ANA);
    live.subscribed('user:u-ana');
    // While the list is on its way: r3 is added, r2 removed.
    live.event('user:u-ana', 'chat.member_added', room('r3', 'new', 0, 0, '2026-12-01T11:00:00Z'));
    live.event('user:u-ana', 'chat.member_added', room('r2', 'random', 0, 0, '2026-12-01T09:00:00Z'));
    live.event('user:u-ana', 'chat.member_removed', { room_id: 'r2' });
    answer([room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z'), room('r2', 'random', 0, 0, '2026-12-01T09:00:00Z')]);
    await waitFor(() => expect(chat.state.rooms?.map((r) => r.id)).toEqual(['r3', 'r1']));
    expect(live.channels.has('chat:r3')).toBe(true);
    expect(live.channels.has('chat:r2')).toBe(false);
  });

  it('a revoked subscription (membership_revoked) drops the room too', async () => {
    const { chat, live } = await started();
    live.unsubscribed('chat:r1', 'membership_revoked');
    expect(chat.state.rooms?.map((r) => r.id)).toEqual(['r2']);
    expect(chat.state.notice?.level).toBe('warning');
  });

  it('unread: others’ messages raise the badge (each seq once), mine do not, chat.read sets it exactly', async () => {
    const { chat, live } = await started();
    const unread = () => chat.state.rooms?.find((r) => r.id === 'r2')?.unread;
    live.event('chat:r2', 'chat.message', message('r2', 6, BO, 'one', { mentions: [ANA.id] }));
    live.event('chat:r2', 'chat.message', message('r2', 6, BO, 'one'));
    live.event('chat:r2', 'chat.message', message('r2', 7, ANA, 'mine'));
    expect(unread()).toBe(3);
    expect(chat.state.rooms?.find((r) => r.id === 'r2')?.mentions).toBe(1);
    // Newest activity first.
    expect(chat.state.rooms?.[0]?.id).toBe('r2');
    live.event('user:u-ana', 'chat.read', { room_id: 'r2', seq: 7, unread: 0, mentions: 0 });
    expect(unread()).toBe(0);
    expect(chat.state.rooms?.find((r) => r.id === 'r2')?.last_read_seq).toBe(7);
  });

  it('history: the newest page, then older pages with before=, each seq once whatever the order', async () => {
    const history = { r1: Array.from({ length: 120 }, (_, i) => message('r1', i + 1, i % 2 ? BO : ANA, `m${i + 1}`)) };
    const { chat, live, api } = await started([room('r1', 'general', 120, 0, '2026-12-01T10:00:00Z')], history);
    live.subscribed('chat:r1');
    chat.open('r1');
    await waitFor(() => expect(chat.state.messages.r1?.loading).toBe(false));
    expect(chat.state.messages.r1?.items.map((m) => m.seq)).toEqual(Array.from({ length: 50 }, (_, i) => 71 + i));
    expect(chat.state.messages.r1?.hasMore).toBe(true);
    // A live event for a seq already shown, and one new.
    live.event('chat:r1', 'chat.message', history.r1[119]);
    api.history.r1?.push(message('r1', 121, BO, 'new'));
    live.event('chat:r1', 'chat.message', message('r1', 121, BO, 'new'));
    await chat.loadOlder('r1');
    expect(api.client.messages).toHaveBeenLastCalledWith('r1', { before: 71, limit: 50 });
    await chat.loadOlder('r1');
    const seqs = chat.state.messages.r1?.items.map((m) => m.seq) ?? [];
    expect(seqs).toEqual(Array.from({ length: 121 }, (_, i) => i + 1));
    expect(chat.state.messages.r1?.hasMore).toBe(false);
    // Nothing more to load: no request.
    const calls = api.client.messages.mock.calls.length;
    await chat.loadOlder('r1');
    expect(api.client.messages.mock.calls.length).toBe(calls);
  });

  it('a message’s later states win: an edit or tombstone is not undone by an older event', () => {
    const original = message('r', 1, BO, 'hello');
    const edited = { ...original, text: 'hello!', edited_at: '2026-12-01T10:05:00Z' };
    const deleted = { ...original, text: '', deleted: true };
    expect(mergeMessages([edited], [original])[0]?.text).toBe('hello!');
    expect(mergeMessages([deleted], [edited])[0]?.deleted).toBe(true);
    expect(mergeMessages([original], [edited])[0]?.text).toBe('hello!');
  });

  it('after lost history (recovered: false) it catches up with after= from the newest seq it has', async () => {
    const history = { r1: [message('r1', 1, BO, 'a'), message('r1', 2, BO, 'b')] };
    const { chat, live, api } = await started([room('r1', 'general', 2, 0, '2026-12-01T10:00:00Z')], history);
    live.subscribed('chat:r1');
    chat.open('r1');
    await waitFor(() => expect(chat.state.messages.r1?.items).toHaveLength(2));
    api.history.r1?.push(message('r1', 3, BO, 'c'), message('r1', 4, CY, 'd'));
    live.resync('chat:r1');
    await waitFor(() => expect(chat.state.messages.r1?.items.map((m) => m.text)).toEqual(['a', 'b', 'c', 'd']));
    expect(api.client.messages).toHaveBeenLastCalledWith('r1', { after: 2, limit: 50 });
  });

  it('offline: sends wait in the outbox, in order, and go out with their client_msg_id when back', async () => {
    const { chat, api, live } = await started([room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z')], { r1: [] });
    live.subscribed('chat:r1');
    chat.open('r1');
    api.state.offline = true;
    const first = chat.send('r1', 'one');
    await waitFor(() => expect(chat.state.pending.r1?.[0]?.state).toBe('queued'));
    window.dispatchEvent(new Event('offline'));
    const second = chat.send('r1', 'two');
    expect(chat.state.pending.r1?.map((p) => [p.text, p.state])).toEqual([
      ['one', 'queued'],
      ['two', 'queued'],
    ]);
    api.state.offline = false;
    window.dispatchEvent(new Event('online'));
    await waitFor(() => expect(chat.state.pending.r1).toEqual([]));
    expect(api.state.sent.map((s) => [s.text, s.clientMsgId])).toEqual([
      ['one', first],
      ['two', second],
    ]);
    expect(chat.state.messages.r1?.items.map((m) => m.text)).toEqual(['one', 'two']);
    // The live event of a message already taken from the POST answer is not shown twice.
    live.event('chat:r1', 'chat.message', api.history.r1?.[0]);
    expect(chat.state.messages.r1?.items).toHaveLength(2);
  });

  it('a refused send stays visible as failed; retry and discard', async () => {
    const { chat, api, live } = await started([room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z')], { r1: [] });
    live.subscribed('chat:r1');
    const { ApiError } = await import('./api');
    api.client.send.mockRejectedValueOnce(new ApiError(409, 'archived', 'the room is archived'));
    const id = chat.send('r1', 'nope');
    await waitFor(() => expect(chat.state.pending.r1?.[0]?.state).toBe('failed'));
    expect(chat.state.pending.r1?.[0]?.error).toMatch(/archived/);
    chat.retryPending('r1', id);
    await waitFor(() => expect(chat.state.pending.r1).toEqual([]));
    expect(api.state.sent).toHaveLength(1);
  });

  it('typing and presence frames: shown per room, cleared by active:false, a send or a leave', async () => {
    const { chat, live } = await started();
    live.signal('chat:r1', { type: 'typing', user: BO, active: true });
    live.signal('chat:r1', { type: 'typing', user: CY, active: true });
    expect(chat.state.typing.r1?.map((u) => u.username)).toEqual(['bo', 'cy']);
    live.signal('chat:r1', { type: 'typing', user: BO, active: false });
    expect(chat.state.typing.r1?.map((u) => u.username)).toEqual(['cy']);
    live.event('chat:r1', 'chat.message', message('r1', 4, CY, 'done'));
    expect(chat.state.typing.r1).toEqual([]);

    live.signal('chat:r1', { type: 'presence', users: [ANA, BO] });
    live.signal('chat:r1', { type: 'presence_diff', joined: [CY], left: [BO] });
    expect(chat.state.presence.r1?.map((u) => u.username)).toEqual(['ana', 'cy']);
    // A (re)subscribe asks for presence again (it is not replayed).
    live.subscribed('chat:r1', false);
    expect(live.frames).toContainEqual({ type: 'presence', channel: 'chat:r1' });
  });

  it('typing frames go out at most every 3 s', async () => {
    const { chat, live } = await started();
    vi.useFakeTimers();
    chat.typing('r1');
    chat.typing('r1');
    expect(live.frames.filter((f) => f.type === 'typing')).toHaveLength(1);
    vi.advanceTimersByTime(3_100);
    chat.typing('r1');
    expect(live.frames.filter((f) => f.type === 'typing')).toHaveLength(2);
  });

  it('read markers only move forward and coalesce', async () => {
    const { chat, api } = await started([room('r1', 'general', 10, 4, '2026-12-01T10:00:00Z')]);
    chat.markRead('r1', 8);
    chat.markRead('r1', 7);
    chat.markRead('r1', 10);
    await waitFor(() => expect(api.client.markRead).toHaveBeenCalledTimes(2));
    expect(api.client.markRead.mock.calls).toEqual([
      ['r1', 8],
      ['r1', 10],
    ]);
    await waitFor(() => expect(chat.state.rooms?.[0]?.unread).toBe(0));
  });

  it('member events keep the member list; my own removal drops the room', async () => {
    const { chat, live } = await started();
    live.subscribed('chat:r1');
    chat.open('r1');
    await waitFor(() => expect(chat.state.members.r1).toBeDefined());
    live.event('chat:r1', 'chat.member_added', { room_id: 'r1', user_id: BO.id, username: 'bo', role: 'member' });
    live.event('chat:r1', 'chat.member_updated', { room_id: 'r1', user_id: BO.id, username: 'bo', role: 'admin' });
    expect(chat.state.members.r1?.map((m) => [m.username, m.role])).toEqual([
      ['ana', 'owner'],
      ['bo', 'admin'],
    ]);
    live.event('chat:r1', 'chat.member_removed', { room_id: 'r1', user_id: BO.id, username: 'bo', role: 'admin' });
    expect(chat.state.members.r1?.map((m) => m.username)).toEqual(['ana']);
    live.event('chat:r1', 'chat.member_removed', { room_id: 'r1', user_id: ANA.id, username: 'ana', role: 'owner' });
    expect(chat.state.rooms?.some((r) => r.id === 'r1')).toBe(false);
  });

  it('reactions: a click adds mine, another takes it back (also when I had reacted on another visit)', async () => {
    const history = { r1: [message('r1', 1, BO, 'hi', { reactions: { '👍': 1 } })] };
    const { chat, live, api } = await started([room('r1', 'general', 1, 0, '2026-12-01T10:00:00Z')], history);
    live.subscribed('chat:r1');
    chat.open('r1');
    await waitFor(() => expect(chat.state.messages.r1?.items).toHaveLength(1));
    const m = () => chat.state.messages.r1?.items[0];
    api.client.react.mockResolvedValueOnce({ message: { ...history.r1[0]! }, added: false });
    await chat.toggleReaction('r1', m()!, '👍');
    expect(api.client.unreact).toHaveBeenCalledWith('r1', 'r1-m1', '👍');
    expect(m()?.reactions).toEqual({});
    await chat.toggleReaction('r1', m()!, '🎉');
    expect(m()?.reactions).toEqual({ '🎉': 1 });
    expect(chat.state.myReactions['r1-m1']).toEqual(['🎉']);
    live.event('chat:r1', 'chat.reaction', { room_id: 'r1', message_id: 'r1-m1', seq: 1, emoji: '🎉', user_id: BO.id, added: true, count: 2 });
    expect(m()?.reactions).toEqual({ '🎉': 2 });
  });
});

describe('chat rules', () => {
  it('finds the @mention being typed like the api does', () => {
    expect(mentionAt('hi @b', 5)).toEqual({ query: 'b', start: 3 });
    expect(mentionAt('@', 1)).toEqual({ query: '', start: 0 });
    expect(mentionAt('mail ana@ex', 11)).toBeNull();
    expect(mentionAt('hi @bo there', 12)).toBeNull();
  });

  it('highlights only the names the api found mentioned', () => {
    expect(textParts('hi @bo and @nobody, thanks @bo.', ['bo'])).toEqual([
      { text: 'hi ', mention: false },
      { text: '@bo', mention: true },
      { text: ' and @nobody, thanks ', mention: false },
      { text: '@bo', mention: true },
      { text: '.', mention: false },
    ]);
  });

  it('groups by day and by runs of one author', () => {
    const at = (iso: string) => ({ created_at: iso });
    const days = groupMessages([
      message('r', 1, BO, 'a', at('2026-11-30T10:00:00Z')),
      message('r', 2, BO, 'b', at('2026-12-01T10:00:00Z')),
      message('r', 3, BO, 'c', at('2026-12-01T10:01:00Z')),
      message('r', 4, ANA, 'd', at('2026-12-01T10:02:00Z')),
      message('r', 5, ANA, 'e', at('2026-12-01T10:30:00Z')),
    ]);
    expect(days.map((d) => d.groups.map((g) => g.messages.map((m) => m.seq)))).toEqual([[[1]], [[2, 3], [4], [5]]]);
  });
});
