import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { act, cleanup, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { ApiError } from '../lib/api';
import { ChatController } from '../lib/chatStore';
import { useApp } from '../store';
import { ANA, BO, CY, fakeChatApi, fakeLive, member, message, room } from '../test/chatFakes';
import { ChatView } from './ChatView';

// jsdom has no modal dialogs.
HTMLDialogElement.prototype.showModal = function showModal(this: HTMLDialogElement) {
  this.open = true;
};

function setup(init: Parameters<typeof fakeChatApi>[0]) {
  const api = fakeChatApi(init);
  const live = fakeLive();
  const chat = new ChatController(api.client, live.client, () => 'token');
  render(<ChatView controller={chat} />);
  return { api, live, chat };
}

/** Starts the view: the user channel, then every room channel, subscribed. */
async function ready(live: ReturnType<typeof fakeLive>, rooms: string[]) {
  await waitFor(() => expect(live.channels.has('user:u-ana')).toBe(true));
  live.subscribed('user:u-ana');
  for (const id of rooms) {
    await waitFor(() => expect(live.channels.has(`chat:${id}`)).toBe(true));
    live.subscribed(`chat:${id}`);
  }
}

const shownSeqs = () => [...document.querySelectorAll('.chat-messages li[data-seq]')].map((li) => Number(li.getAttribute('data-seq')));

describe('ChatView', () => {
  beforeEach(() => useApp.setState({ username: 'ana', userId: ANA.id }));
  afterEach(() => {
    cleanup();
    vi.restoreAllMocks();
    useApp.setState({ username: null, userId: null });
  });

  it('room list: newest activity first, unread and mention badges that follow live events and clear on reading', async () => {
    const general = room('r1', 'general', 2, 0, '2026-12-01T10:00:02Z');
    const random = room('r2', 'random', 5, 2, '2026-12-01T09:00:00Z', { mentions: 1 });
    const { live, api } = setup({ rooms: [random, general], history: { r1: [message('r1', 1, BO, 'hello'), message('r1', 2, ANA, 'hi bo')], r2: [1, 2, 3, 4, 5].map((s) => message('r2', s, BO, `r${s}`)) } });
    await ready(live, ['r1', 'r2']);
    const rooms = within(screen.getByRole('navigation', { name: 'Rooms' }));
    await waitFor(() => expect(rooms.getAllByRole('button', { name: /general|random/ }).map((b) => b.querySelector('.chat-room-name')?.textContent)).toEqual(['general', 'random']));
    expect(rooms.getByLabelText('2 unread').textContent).toBe('2');
    expect(rooms.getByLabelText('1 mention')).toBeTruthy();

    // The newest room opened; a message elsewhere raises that badge and moves the room up.
    await screen.findByText('hi bo');
    api.history.r2?.push(message('r2', 6, BO, 'elsewhere'));
    live.event('chat:r2', 'chat.message', message('r2', 6, BO, 'elsewhere'));
    expect(rooms.getByLabelText('3 unread')).toBeTruthy();
    expect(rooms.getAllByRole('button', { name: /general|random/ })[0]?.textContent).toMatch(/random/);
    expect(screen.queryByText('elsewhere')).toBeNull();

    // Reading it (opening shows the newest: jsdom has no IntersectionObserver) clears the badge.
    await userEvent.setup().click(rooms.getByRole('button', { name: /random/ }));
    await screen.findByText('elsewhere');
    await waitFor(() => expect(api.client.markRead).toHaveBeenCalledWith('r2', 6));
    await waitFor(() => expect(rooms.queryByLabelText(/unread/)).toBeNull());
  });

  it('room view: messages grouped by author and day, history paged back with before=, each seq once', async () => {
    const history = { r1: Array.from({ length: 70 }, (_, i) => message('r1', i + 1, i < 60 ? BO : CY, `m${i + 1}`)) };
    const { live, api } = setup({ rooms: [room('r1', 'general', 70, 0, '2026-12-01T10:00:00Z')], history });
    await ready(live, ['r1']);
    await screen.findByText('m70');
    expect(shownSeqs()).toEqual(Array.from({ length: 50 }, (_, i) => 21 + i));
    // One header per run of one author: bo's run, then cy's.
    expect([...document.querySelectorAll('.chat-msg.head .msg-author')].map((e) => e.textContent)).toEqual(['bo', 'cy']);
    expect(screen.getByRole('separator', { name: /Tuesday|2026|Today|Yesterday/ })).toBeTruthy();

    // Live events, one of them a repeat of a seq already shown.
    live.event('chat:r1', 'chat.message', history.r1[69]);
    live.event('chat:r1', 'chat.message', message('r1', 71, CY, 'm71'));
    await userEvent.setup().click(screen.getByRole('button', { name: 'Load earlier messages' }));
    await screen.findByText('m1');
    expect(api.client.messages).toHaveBeenLastCalledWith('r1', { before: 21, limit: 50 });
    expect(shownSeqs()).toEqual(Array.from({ length: 71 }, (_, i) => i + 1));
    expect(screen.getByText(/The beginning of #general/)).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Load earlier messages' })).toBeNull();
  });

  it('composer: @ offers members, Enter picks one; the message is sent with a client_msg_id and a reply', async () => {
    const { live, api } = setup({
      rooms: [room('r1', 'general', 1, 0, '2026-12-01T10:00:00Z')],
      history: { r1: [message('r1', 1, BO, 'who is in?')] },
      members: { r1: [member(ANA, 'owner'), member(BO), member({ id: 'u-bea', username: 'bea' }), member(CY)] },
    });
    await ready(live, ['r1']);
    await screen.findByText('who is in?');
    const user = userEvent.setup();
    const box = screen.getByLabelText('Message');
    await user.type(box, 'hey @b');
    const options = within(screen.getByRole('listbox', { name: 'Members to mention' })).getAllByRole('option');
    expect(options.map((o) => o.textContent)).toEqual(['B@bo', 'B@bea']);
    expect(box.getAttribute('aria-expanded')).toBe('true');
    await user.keyboard('{ArrowDown}{Enter}');
    expect((box as HTMLTextAreaElement).value).toBe('hey @bea ');
    expect(screen.queryByRole('listbox')).toBeNull();
    // Typing was signalled (throttled).
    expect(live.frames.filter((f) => f.type === 'typing')).toEqual([{ type: 'typing', channel: 'chat:r1' }]);

    // Reply to bo's message, then send with Enter.
    await user.hover(screen.getByText('who is in?'));
    await user.click(screen.getByRole('button', { name: 'Reply' }));
    expect(screen.getByText(/Replying to/)).toBeTruthy();
    await user.type(box, 'come{Enter}');
    await waitFor(() => expect(api.client.send).toHaveBeenCalledWith('r1', 'hey @bea come', expect.stringMatching(/^web-/), 1));
    await screen.findByText('hey @bea come');
    expect(document.querySelector('.chat-msg[data-seq="2"] .msg-quote')?.textContent).toMatch(/bo.*who is in\?/);
    expect((box as HTMLTextAreaElement).value).toBe('');

    // An empty draft is refused next to the field, without a request.
    await user.click(screen.getByRole('button', { name: 'Send' }));
    expect(screen.getByText('Write something first.')).toBeTruthy();
    expect(api.client.send).toHaveBeenCalledTimes(1);
  });

  it('composer offline: the message shows as pending and goes out with the same client_msg_id when back online', async () => {
    const { live, api } = setup({ rooms: [room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z')], history: { r1: [] } });
    await ready(live, ['r1']);
    await screen.findByText('No messages yet.');
    api.state.offline = true;
    act(() => void window.dispatchEvent(new Event('offline')));
    const user = userEvent.setup();
    await user.type(screen.getByLabelText('Message'), 'while away{Enter}');
    const pending = await screen.findByText('while away');
    const item = pending.closest('li');
    expect(item?.getAttribute('data-state')).toBe('queued');
    expect(within(item as HTMLElement).getByText(/Waiting for the connection/)).toBeTruthy();
    expect(screen.getByText(/You are offline/)).toBeTruthy();
    expect(api.client.send).not.toHaveBeenCalled();

    api.state.offline = false;
    act(() => void window.dispatchEvent(new Event('online')));
    await waitFor(() => expect(document.querySelector('.chat-msg[data-seq="1"]')?.textContent).toMatch(/while away/));
    expect(document.querySelector('.chat-msg.pending')).toBeNull();
    expect(api.state.sent.map((s) => s.clientMsgId)).toEqual([item?.getAttribute('data-client-msg-id')]);
  });

  it('edit and delete my own message; others’ messages have neither for a member', async () => {
    const { live } = setup({
      rooms: [room('r1', 'general', 2, 0, '2026-12-01T10:00:00Z', { role: 'member' })],
      history: { r1: [message('r1', 1, BO, 'from bo'), message('r1', 2, ANA, 'typo hree')] },
    });
    await ready(live, ['r1']);
    const user = userEvent.setup();
    const mine = (await screen.findByText('typo hree')).closest('li') as HTMLElement;
    const theirs = screen.getByText('from bo').closest('li') as HTMLElement;
    expect(within(theirs).queryByRole('button', { name: 'Edit' })).toBeNull();
    expect(within(theirs).queryByRole('button', { name: 'Delete' })).toBeNull();

    await user.click(within(mine).getByRole('button', { name: 'Edit' }));
    const editor = within(mine).getByLabelText('Edit the message');
    await user.clear(editor);
    await user.type(editor, 'typo here{Enter}');
    await screen.findByText('typo here');
    expect(within(mine).getByText('(edited)')).toBeTruthy();

    await user.click(within(mine).getByRole('button', { name: 'Delete' }));
    await user.click(within(screen.getByRole('dialog')).getByRole('button', { name: 'Delete' }));
    await within(mine).findByText('message deleted');
  });

  it('typing indicator and presence: shown from the room’s frames, cleared by active:false', async () => {
    const { live } = setup({ rooms: [room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z', { member_count: 3 })], history: { r1: [] } });
    await ready(live, ['r1']);
    await screen.findByText('No messages yet.');
    live.signal('chat:r1', { type: 'typing', user: BO, active: true });
    expect(screen.getByTestId('typing').textContent).toBe('bo is typing…');
    live.signal('chat:r1', { type: 'typing', user: CY, active: true });
    expect(screen.getByTestId('typing').textContent).toBe('bo and cy are typing…');
    live.signal('chat:r1', { type: 'typing', user: BO, active: false });
    live.signal('chat:r1', { type: 'typing', user: CY, active: false });
    expect(screen.getByTestId('typing').textContent).toBe('');
    live.signal('chat:r1', { type: 'presence', users: [ANA, BO] });
    expect(screen.getByRole('button', { name: /2 online/ })).toBeTruthy();
  });

  it('new room: the api’s 422s appear next to their fields; then the room opens', async () => {
    const { live, api } = setup({ rooms: [], history: {} });
    await ready(live, []);
    await screen.findByText('You are in no room yet.');
    const user = userEvent.setup();
    await user.click(screen.getByRole('button', { name: 'New room' }));
    const dialog = within(screen.getByRole('dialog', { name: 'New room' }));
    await user.click(dialog.getByRole('button', { name: 'Create room' }));
    expect(dialog.getByText('Give the room a name.')).toBeTruthy();
    expect(api.client.createRoom).not.toHaveBeenCalled();

    api.client.createRoom.mockRejectedValueOnce(new ApiError(422, 'validation', 'invalid', [{ field: 'members', reason: 'nobody-here is not a user' }]));
    await user.type(dialog.getByLabelText('Name'), 'plans');
    await user.type(dialog.getByLabelText('Members (optional)'), 'bo, nobody-here');
    await user.click(dialog.getByRole('button', { name: 'Create room' }));
    expect(await dialog.findByText('nobody-here is not a user')).toBeTruthy();
    expect(dialog.getByLabelText('Members (optional)').getAttribute('aria-invalid')).toBe('true');

    await user.clear(dialog.getByLabelText('Members (optional)'));
    await user.type(dialog.getByLabelText('Members (optional)'), 'bo');
    await user.click(dialog.getByRole('button', { name: 'Create room' }));
    await waitFor(() => expect(api.client.createRoom).toHaveBeenLastCalledWith({ name: 'plans', members: ['bo'] }));
    await screen.findByRole('heading', { name: 'plans' });
  });

  it('a removed member loses the room live, with a notice', async () => {
    const { live } = setup({ rooms: [room('r1', 'general', 0, 0, '2026-12-01T10:00:00Z')], history: { r1: [] } });
    await ready(live, ['r1']);
    await screen.findByRole('heading', { name: 'general' });
    live.event('chat:r1', 'chat.member_removed', { room_id: 'r1', user_id: ANA.id, username: 'ana', role: 'member' });
    expect(screen.queryByRole('heading', { name: 'general' })).toBeNull();
    expect(screen.getByText('You were removed from general.')).toBeTruthy();
  });

  it('asks to sign in first', () => {
    useApp.setState({ username: null, userId: null });
    const live = fakeLive();
    render(<ChatView controller={new ChatController(fakeChatApi({ rooms: [] }).client, live.client, () => null)} />);
    expect(screen.getByText(/Chat requires signing in/)).toBeTruthy();
    expect(live.channels.size).toBe(0);
  });
});
