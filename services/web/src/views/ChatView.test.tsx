import { afterEach, describe, expect, it, vi } from 'vitest';
import { act, cleanup, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ChatApi, ChatMessage, RoomSummary } from '../lib/chat';
import type { LiveClient, SubscriptionHandlers } from '../lib/live';
import { useApp } from '../store';
import { ChatView } from './ChatView';

const room = (id: string, name: string, last_seq: number, unread: number, at: string): RoomSummary => ({
  id,
  kind: 'group',
  name,
  archived: false,
  last_seq,
  last_activity_at: at,
  member_count: 2,
  last_read_seq: last_seq - unread,
  unread,
  mentions: 0,
});

const message = (room_id: string, seq: number, username: string, text: string): ChatMessage => ({
  id: `${room_id}-${seq}`,
  room_id,
  seq,
  author: { id: `u-${username}`, username },
  text,
  reply_to: null,
  created_at: `2026-12-01T10:00:${String(seq).padStart(2, '0')}Z`,
  edited_at: null,
  deleted: false,
});

/** A LiveClient stand-in that keeps the handlers, so the test can deliver events. */
function fakeLive() {
  const channels = new Map<string, SubscriptionHandlers>();
  const client = {
    subscribe: (channel: string, handlers: SubscriptionHandlers) => channels.set(channel, handlers),
    unsubscribe: (channel: string) => channels.delete(channel),
  } as unknown as LiveClient;
  const deliver = (channel: string, m: ChatMessage) =>
    act(() => channels.get(channel)?.onEvent?.({ type: 'chat.message', data: m }, m.seq));
  return { client, channels, deliver };
}

describe('ChatView', () => {
  afterEach(() => {
    cleanup();
    vi.restoreAllMocks();
    useApp.setState({ username: null });
  });

  it('lists rooms with unread badges, shows live messages and sends from the composer', async () => {
    useApp.setState({ username: 'ana' });
    const general = room('r1', 'general', 2, 0, '2026-12-01T10:00:02Z');
    const random = room('r2', 'random', 5, 2, '2026-12-01T09:00:00Z');
    const client: ChatApi = {
      rooms: vi.fn().mockResolvedValue([random, general]),
      createRoom: vi.fn(),
      messages: vi.fn().mockResolvedValue([message('r1', 1, 'bo', 'hello'), message('r1', 2, 'ana', 'hi bo')]),
      send: vi.fn().mockImplementation((id: string, text: string) => Promise.resolve(message(id, 4, 'ana', text))),
      markRead: vi.fn().mockResolvedValue({ unread: 0, mentions: 0 }),
    };
    const live = fakeLive();
    render(<ChatView client={client} liveClient={live.client} />);

    // Newest activity first; the first room opens with its history; the other shows 2 unread.
    const rooms = within(await screen.findByRole('navigation', { name: 'Rooms' }));
    const buttons = await rooms.findAllByRole('button');
    expect(buttons.map((b) => b.textContent)).toEqual(['general', 'random2']);
    expect(rooms.getByLabelText('2 unread').textContent).toBe('2');
    await screen.findByText('hi bo');
    expect(client.markRead).toHaveBeenCalledWith('r1', 2);
    expect([...live.channels.keys()].sort()).toEqual(['chat:r1', 'chat:r2']);

    // A message in the other room raises its badge; one in the open room appears (once).
    live.deliver('chat:r2', message('r2', 6, 'bo', 'elsewhere'));
    expect(rooms.getByLabelText('3 unread').textContent).toBe('3');
    expect(screen.queryByText('elsewhere')).toBeNull();
    live.deliver('chat:r1', message('r1', 3, 'bo', 'live one'));
    live.deliver('chat:r1', message('r1', 3, 'bo', 'live one'));
    expect(screen.getAllByText('live one')).toHaveLength(1);
    expect(client.markRead).toHaveBeenCalledWith('r1', 3);

    // An empty draft is refused next to the field without a request; a real one is sent.
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'Send' }));
    expect(screen.getByText('Write something first.')).toBeTruthy();
    expect(screen.getByLabelText('Message').getAttribute('aria-invalid')).toBe('true');
    expect(client.send).not.toHaveBeenCalled();
    await user.type(screen.getByLabelText('Message'), 'on my way');
    await user.click(screen.getByRole('button', { name: 'Send' }));
    await screen.findByText('on my way');
    expect(client.send).toHaveBeenCalledWith('r1', 'on my way', expect.stringMatching(/^web-/));
    expect((screen.getByLabelText('Message') as HTMLTextAreaElement).value).toBe('');
    const seqs = [...document.querySelectorAll('.chat-messages li')].map((li) => li.getAttribute('data-seq'));
    expect(seqs).toEqual(['1', '2', '3', '4']);

    // Opening the other room loads it.
    await user.click(rooms.getByRole('button', { name: /random/ }));
    expect(client.messages).toHaveBeenLastCalledWith('r2');
  });

  it('asks to sign in first', () => {
    render(<ChatView client={{} as ChatApi} liveClient={fakeLive().client} />);
    expect(screen.getByText(/Chat requires signing in/)).toBeTruthy();
  });
});
