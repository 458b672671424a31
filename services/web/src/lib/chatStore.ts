// The chat client's state and its rules, without React: my rooms (kept live through
// `user:<my id>` and each room's `chat:<room id>`), the open room's messages (history pages with
// `before=`, catching up with `after=`, each seq once), members, typing, presence, read markers,
// and the outbox of messages typed while offline (sent in order with their `client_msg_id`).
// The view (views/chat/*) renders the store and calls the actions.

import { createStore, type StoreApi } from 'zustand/vanilla';
import { ApiError } from './api';
import { describeError } from './format';
import type { LiveEvent, SubscriptionHandlers, TokenSource } from './live';
import {
  mergeMessages,
  roomAfterMessage,
  sortRooms,
  type ChatApi,
  type ChatMessage,
  type ChatUser,
  type Member,
  type MemberChange,
  type ReactionChange,
  type ReadMarker,
  type Role,
  type RoomSummary,
} from './chat';

/** The parts of LiveClient the chat uses (a fake in tests). */
export interface LiveLike {
  subscribe: (channel: string, handlers: SubscriptionHandlers, options?: { token?: TokenSource }) => void;
  unsubscribe: (channel: string) => void;
  send: (frame: Record<string, unknown>) => boolean;
  resume: (channel: string) => void;
}

export interface RoomMessages {
  items: ChatMessage[];
  /** The first page is on its way. */
  loading: boolean;
  /** Older history exists (the last `before` page had a `next`). */
  hasMore: boolean;
  loadingOlder: boolean;
  error: string | null;
}

export interface PendingMessage {
  clientMsgId: string;
  text: string;
  replyTo: number | null;
  /** queued: waiting (offline or backing off); sending: on its way; failed: refused, not retried. */
  state: 'queued' | 'sending' | 'failed';
  error?: string;
}

export interface ChatState {
  me: ChatUser | null;
  rooms: RoomSummary[] | null;
  roomsError: string | null;
  openId: string | null;
  messages: Record<string, RoomMessages>;
  members: Record<string, Member[]>;
  typing: Record<string, ChatUser[]>;
  presence: Record<string, ChatUser[]>;
  pending: Record<string, PendingMessage[]>;
  /** Emojis I reacted with, by message id (as far as this page has seen). */
  myReactions: Record<string, string[]>;
  /** One line for the person, e.g. "You were removed from general." */
  notice: { text: string; level: 'info' | 'warning' } | null;
  online: boolean;
}

const PAGE = 50;
/** At most this many rooms followed live (the broadcaster allows 100 subscriptions per connection). */
export const MAX_FOLLOWED = 90;
/** `typing` frames go out at most this often while the person types (the indicator lasts 5 s). */
export const TYPING_EVERY_MS = 3_000;
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10_000;
/** Pages of `after=` followed at most when catching up after lost history. */
const CATCH_UP_PAGES = 20;

const emptyMessages = (): RoomMessages => ({ items: [], loading: true, hasMore: false, loadingOlder: false, error: null });

let drafts = 0;
export const newClientMsgId = () => `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}-${(drafts += 1)}`;

/** A failure worth retrying (offline, api down, rate limited) rather than showing as refused. */
export function retriable(err: unknown): boolean {
  return err instanceof ApiError && (err.status === 0 || err.status === 429 || err.status >= 500);
}

export class ChatController {
  readonly store: StoreApi<ChatState>;
  private followed = new Set<string>();
  private lastTyping = new Map<string, number>();
  private reading = new Map<string, { inFlight: boolean; want: number }>();
  private flushing = new Set<string>();
  private retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private retryAttempts = new Map<string, number>();
  private userChannel: string | null = null;
  private ready = new Map<string, () => void>();
  private readyPromises = new Map<string, Promise<void>>();
  private onOnline = () => {
    this.store.setState({ online: true });
    for (const id of Object.keys(this.store.getState().pending)) this.flush(id);
  };
  private onOffline = () => this.store.setState({ online: false });

  constructor(
    private client: ChatApi,
    private live: LiveLike,
    private token: TokenSource,
    private refreshToken: () => Promise<boolean> = () => Promise.resolve(false),
  ) {
    this.store = createStore<ChatState>(() => ({
      me: null,
      rooms: null,
      roomsError: null,
      openId: null,
      messages: {},
      members: {},
      typing: {},
      presence: {},
      pending: {},
      myReactions: {},
      notice: null,
      online: typeof navigator === 'undefined' ? true : navigator.onLine !== false,
    }));
  }

  get state(): ChatState {
    return this.store.getState();
  }

  private set(partial: Partial<ChatState> | ((s: ChatState) => Partial<ChatState>)): void {
    this.store.setState(partial);
  }

  private room(id: string): RoomSummary | undefined {
    return this.state.rooms?.find((r) => r.id === id);
  }

  private updateRoom(id: string, change: (room: RoomSummary) => RoomSummary): void {
    this.set((s) => ({ rooms: s.rooms && sortRooms(s.rooms.map((r) => (r.id === id ? change(r) : r))) }));
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /** Signed in as `me`: follows `user:<me.id>`, then loads and follows my rooms. */
  start(me: ChatUser): void {
    if (this.state.me?.id === me.id) return;
    this.stop();
    this.set({ me, rooms: null, roomsError: null });
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    const channel = `user:${me.id}`;
    this.userChannel = channel;
    const load = () => void this.loadRooms();
    this.live.subscribe(
      channel,
      {
        // The list is read after the subscription point: anything later arrives as an event.
        onSubscribed: ({ fresh }) => fresh && load(),
        onResync: load,
        onEvent: (event) => this.userEvent(event),
        onUnsubscribed: (reason) => {
          if (reason === 'token_expired') void this.refreshToken().then(() => this.live.resume(channel));
        },
        onError: () => {
          // Unavailable (retried by the client) or refused: load the list anyway.
          if (this.state.rooms === null) load();
        },
      },
      { token: this.token },
    );
  }

  stop(): void {
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    if (this.userChannel) this.live.unsubscribe(this.userChannel);
    this.userChannel = null;
    for (const id of this.followed) this.live.unsubscribe(`chat:${id}`);
    this.followed.clear();
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    this.ready.clear();
    this.readyPromises.clear();
    this.set({ me: null, rooms: null, openId: null, messages: {}, members: {}, typing: {}, presence: {}, pending: {}, myReactions: {}, notice: null });
  }

  /** Counts list loads; rooms added or removed by events remember the count they saw. */
  private listEpoch = 0;
  private joinedAt = new Map<string, number>();
  private leftAt = new Map<string, number>();

  async loadRooms(): Promise<void> {
    const epoch = (this.listEpoch += 1);
    try {
      const items = await this.client.rooms();
      this.set((s) => {
        // The answer was read at some point during the request: rooms that events added or
        // removed meanwhile keep what the events said; a room known with newer live state
        // keeps that state.
        const known = new Map((s.rooms ?? []).map((r) => [r.id, r]));
        const listed = new Set(items.map((r) => r.id));
        const merged = items
          .filter((r) => (this.leftAt.get(r.id) ?? 0) < epoch)
          .map((r) => {
            const had = known.get(r.id);
            return had && had.last_seq > r.last_seq ? { ...r, last_seq: had.last_seq, last_activity_at: had.last_activity_at, unread: had.unread } : r;
          });
        const joined = (s.rooms ?? []).filter((r) => !listed.has(r.id) && (this.joinedAt.get(r.id) ?? 0) >= epoch);
        return { rooms: sortRooms([...merged, ...joined]), roomsError: null };
      });
      this.followRooms();
      const { openId, rooms } = this.state;
      if (openId && !rooms?.some((r) => r.id === openId)) this.set({ openId: null });
    } catch (err) {
      this.set({ roomsError: `Could not load your rooms: ${describeError(err)}` });
    }
  }

  /** Follows the newest rooms live (and stops following rooms no longer in the list). */
  private followRooms(): void {
    const wanted = new Set((this.state.rooms ?? []).slice(0, MAX_FOLLOWED).map((r) => r.id));
    const open = this.state.openId;
    if (open) wanted.add(open);
    for (const id of this.followed) if (!wanted.has(id)) this.unfollow(id);
    for (const id of wanted) if (!this.followed.has(id)) this.follow(id);
  }

  private follow(id: string): void {
    this.followed.add(id);
    const channel = `chat:${id}`;
    let resolveReady: () => void = () => {};
    this.readyPromises.set(
      id,
      new Promise<void>((resolve) => {
        resolveReady = resolve;
        // Never wait for long: a slow broadcaster must not keep the history from loading.
        setTimeout(resolve, 3_000);
      }),
    );
    this.ready.set(id, resolveReady);
    this.live.subscribe(
      channel,
      {
        onSubscribed: ({ fresh }) => {
          this.ready.get(id)?.();
          // Presence and typing are not replayed: ask again after every (re)subscribe.
          this.set((s) => ({ typing: { ...s.typing, [id]: [] } }));
          this.live.send({ type: 'presence', channel });
          if (fresh && this.state.messages[id] && !this.state.messages[id].loading) void this.catchUp(id);
        },
        onResync: () => void this.catchUp(id),
        onEvent: (event) => this.roomEvent(id, event),
        onSignal: (frame) => this.signal(id, frame),
        onUnsubscribed: (reason) => {
          if (reason === 'membership_revoked') this.dropRoom(id, 'removed');
          if (reason === 'token_expired') void this.refreshToken().then(() => this.followed.has(id) && this.live.resume(channel));
        },
        onError: (code) => {
          this.ready.get(id)?.();
          if (code === 'forbidden') this.dropRoom(id, 'removed');
        },
      },
      { token: this.token },
    );
  }

  private unfollow(id: string): void {
    this.followed.delete(id);
    this.ready.delete(id);
    this.readyPromises.delete(id);
    this.live.unsubscribe(`chat:${id}`);
  }

  /** Takes a room out of the list (I left or was removed), and closes it if it was open. */
  private dropRoom(id: string, why: 'removed' | 'left'): void {
    this.leftAt.set(id, this.listEpoch);
    this.joinedAt.delete(id);
    const room = this.room(id);
    this.unfollow(id);
    if (!room) return;
    const name = room.kind === 'direct' ? 'a direct conversation' : room.name || 'a room';
    this.set((s) => {
      const rest = <T,>(record: Record<string, T>) => Object.fromEntries(Object.entries(record).filter(([key]) => key !== id));
      return {
        rooms: s.rooms?.filter((r) => r.id !== id) ?? null,
        openId: s.openId === id ? null : s.openId,
        messages: rest(s.messages),
        members: rest(s.members),
        typing: rest(s.typing),
        presence: rest(s.presence),
        pending: rest(s.pending),
        notice: why === 'removed' ? { text: `You were removed from ${name}.`, level: 'warning' } : { text: `You left ${name}.`, level: 'info' },
      };
    });
  }

  dismissNotice(): void {
    this.set({ notice: null });
  }

  // --- events --------------------------------------------------------------------------------

  private userEvent(event: LiveEvent): void {
    const data = event.data as Record<string, unknown> | undefined;
    if (!data) return;
    switch (event.type) {
      case 'chat.member_added': {
        const summary = data as unknown as RoomSummary;
        if (typeof summary.id !== 'string') return;
        this.joinedAt.set(summary.id, this.listEpoch);
        this.leftAt.delete(summary.id);
        this.set((s) => {
          const others = (s.rooms ?? []).filter((r) => r.id !== summary.id);
          return { rooms: sortRooms([...others, summary]) };
        });
        this.followRooms();
        break;
      }
      case 'chat.member_removed':
        if (typeof data.room_id === 'string') this.dropRoom(data.room_id, this.leaving.has(data.room_id) ? 'left' : 'removed');
        break;
      case 'chat.read': {
        const read = data as unknown as ReadMarker;
        this.applyRead(read);
        break;
      }
    }
  }

  /** A read marker moved (here or on another device): exact when nothing newer is known. */
  private applyRead(read: ReadMarker): void {
    const room = this.room(read.room_id);
    if (!room || read.seq < room.last_read_seq) return;
    if (room.last_seq <= read.seq) {
      this.updateRoom(read.room_id, (r) => ({ ...r, last_read_seq: read.seq, unread: read.unread, mentions: read.mentions }));
      return;
    }
    // Messages after the marker are known here: count the others' ones I have, at least.
    const me = this.state.me?.id;
    const after = (this.state.messages[read.room_id]?.items ?? []).filter((m) => m.seq > read.seq && m.author.id !== me);
    this.updateRoom(read.room_id, (r) => ({ ...r, last_read_seq: read.seq, unread: Math.max(read.unread, after.length), mentions: read.mentions }));
  }

  private roomEvent(id: string, event: LiveEvent): void {
    const data = event.data as Record<string, unknown> | undefined;
    if (!data) return;
    const me = this.state.me;
    switch (event.type) {
      case 'chat.message':
      case 'chat.message_edited':
      case 'chat.message_deleted': {
        const message = data as unknown as ChatMessage;
        this.takeMessages(id, [message]);
        if (event.type === 'chat.message') {
          this.updateRoom(id, (r) => roomAfterMessage(r, message, me?.id ?? null));
          // Sending ends the author's typing indicator (the broadcaster says so too).
          this.set((s) => ({ typing: { ...s.typing, [id]: (s.typing[id] ?? []).filter((u) => u.id !== message.author.id) } }));
        }
        break;
      }
      case 'chat.reaction': {
        const change = data as unknown as ReactionChange;
        this.set((s) => {
          const current = s.messages[id];
          const mine = s.myReactions[change.message_id] ?? [];
          const myReactions =
            change.user_id === me?.id
              ? { ...s.myReactions, [change.message_id]: change.added ? [...new Set([...mine, change.emoji])] : mine.filter((e) => e !== change.emoji) }
              : s.myReactions;
          if (!current) return { myReactions };
          const items = current.items.map((m) => {
            if (m.id !== change.message_id) return m;
            const reactions = { ...(m.reactions ?? {}) };
            if (change.count > 0) reactions[change.emoji] = change.count;
            else delete reactions[change.emoji];
            return { ...m, reactions };
          });
          return { myReactions, messages: { ...s.messages, [id]: { ...current, items } } };
        });
        break;
      }
      case 'chat.member_added':
      case 'chat.member_updated':
      case 'chat.member_removed': {
        const change = data as unknown as MemberChange;
        if (event.type === 'chat.member_removed' && change.user_id === me?.id) {
          this.dropRoom(id, this.leaving.has(id) ? 'left' : 'removed');
          return;
        }
        this.set((s) => {
          const list = s.members[id];
          const next = list ? memberListAfter(list, event.type, change) : undefined;
          return next ? { members: { ...s.members, [id]: next } } : {};
        });
        if (event.type === 'chat.member_updated' && change.user_id === me?.id) this.updateRoom(id, (r) => ({ ...r, role: change.role }));
        if (event.type !== 'chat.member_updated') {
          const list = this.state.members[id];
          this.updateRoom(id, (r) => ({ ...r, member_count: list ? list.length : Math.max(0, r.member_count + (event.type === 'chat.member_added' ? 1 : -1)) }));
        }
        break;
      }
      case 'chat.room_updated': {
        const room = data as unknown as Partial<RoomSummary>;
        this.updateRoom(id, (r) => ({
          ...r,
          name: room.name ?? r.name,
          topic: room.topic ?? r.topic ?? null,
          archived: room.archived ?? r.archived,
          member_count: room.member_count ?? r.member_count,
        }));
        break;
      }
    }
  }

  private signal(id: string, frame: Record<string, unknown>): void {
    const me = this.state.me?.id;
    if (frame.type === 'typing') {
      const user = frame.user as ChatUser | undefined;
      if (!user || user.id === me) return;
      this.set((s) => {
        const others = (s.typing[id] ?? []).filter((u) => u.id !== user.id);
        return { typing: { ...s.typing, [id]: frame.active === true ? [...others, user] : others } };
      });
    } else if (frame.type === 'presence') {
      const users = Array.isArray(frame.users) ? (frame.users as ChatUser[]) : [];
      this.set((s) => ({ presence: { ...s.presence, [id]: users } }));
    } else if (frame.type === 'presence_diff') {
      const joined = Array.isArray(frame.joined) ? (frame.joined as ChatUser[]) : [];
      const left = new Set((Array.isArray(frame.left) ? (frame.left as ChatUser[]) : []).map((u) => u.id));
      this.set((s) => {
        const kept = (s.presence[id] ?? []).filter((u) => !left.has(u.id) && !joined.some((j) => j.id === u.id));
        const typing = (s.typing[id] ?? []).filter((u) => !left.has(u.id));
        return { presence: { ...s.presence, [id]: [...kept, ...joined] }, typing: { ...s.typing, [id]: typing } };
      });
    }
  }

  private takeMessages(id: string, incoming: ChatMessage[]): void {
    this.set((s) => {
      const current = s.messages[id];
      if (!current) return {};
      return { messages: { ...s.messages, [id]: { ...current, items: mergeMessages(current.items, incoming) } } };
    });
  }

  // --- a room --------------------------------------------------------------------------------

  /** Opens a room: its newest page (after its live subscription started), members, presence. */
  open(id: string | null): void {
    if (this.state.openId === id) return;
    this.set({ openId: id });
    if (!id) return;
    if (!this.followed.has(id)) this.follow(id);
    if (!this.state.messages[id] || this.state.messages[id].error) void this.loadLatest(id);
    if (!this.state.members[id]) void this.loadMembers(id);
  }

  async loadLatest(id: string): Promise<void> {
    this.set((s) => ({ messages: { ...s.messages, [id]: { ...(s.messages[id] ?? emptyMessages()), loading: true, error: null } } }));
    await this.readyPromises.get(id);
    try {
      const page = await this.client.messages(id, { limit: PAGE });
      this.set((s) => {
        const current = s.messages[id] ?? emptyMessages();
        return { messages: { ...s.messages, [id]: { ...current, items: mergeMessages(current.items, page.items), loading: false, hasMore: page.next !== null } } };
      });
    } catch (err) {
      this.set((s) => ({ messages: { ...s.messages, [id]: { ...(s.messages[id] ?? emptyMessages()), loading: false, error: `Could not load the messages: ${describeError(err)}` } } }));
    }
  }

  /** The page before the oldest message shown (infinite scroll back). */
  async loadOlder(id: string): Promise<void> {
    const current = this.state.messages[id];
    if (!current || current.loading || current.loadingOlder || !current.hasMore) return;
    const oldest = current.items[0]?.seq;
    if (oldest === undefined) return;
    this.set((s) => ({ messages: { ...s.messages, [id]: { ...current, ...s.messages[id], loadingOlder: true } } }));
    try {
      const page = await this.client.messages(id, { before: oldest, limit: PAGE });
      this.set((s) => {
        const now = s.messages[id];
        if (!now) return {};
        return { messages: { ...s.messages, [id]: { ...now, items: mergeMessages(now.items, page.items), loadingOlder: false, hasMore: page.next !== null } } };
      });
    } catch (err) {
      this.set((s) => {
        const now = s.messages[id];
        return now ? { messages: { ...s.messages, [id]: { ...now, loadingOlder: false, error: `Could not load older messages: ${describeError(err)}` } } } : {};
      });
    }
  }

  /** After lost history (`recovered: false`): pages forward from the newest seq I have. */
  async catchUp(id: string): Promise<void> {
    void this.client.room(id).then(
      (summary) => this.updateRoom(id, (r) => (summary.last_seq >= r.last_seq ? { ...r, ...summary } : r)),
      () => {},
    );
    const current = this.state.messages[id];
    if (!current) return;
    let after = current.items.at(-1)?.seq;
    if (after === undefined) {
      await this.loadLatest(id);
      return;
    }
    try {
      for (let i = 0; i < CATCH_UP_PAGES && after !== undefined; i += 1) {
        const page = await this.client.messages(id, { after, limit: PAGE });
        this.takeMessages(id, page.items);
        if (page.next === null) break;
        after = page.next;
      }
    } catch {
      // The next resubscribe or event brings the rest.
    }
  }

  async loadMembers(id: string): Promise<void> {
    try {
      const items = await this.client.members(id);
      this.set((s) => ({ members: { ...s.members, [id]: items } }));
    } catch {
      // Shown as "members unknown"; mentions then offer nobody.
    }
  }

  /** My read marker moves to `seq` (never back); requests coalesce to the highest seq seen. */
  markRead(id: string, seq: number): void {
    const room = this.room(id);
    if (!room || seq <= room.last_read_seq || seq > room.last_seq) return;
    const state = this.reading.get(id) ?? { inFlight: false, want: 0 };
    state.want = Math.max(state.want, seq);
    this.reading.set(id, state);
    if (state.inFlight) return;
    const run = (target: number) => {
      state.inFlight = true;
      this.client.markRead(id, target).then(
        (read) => {
          state.inFlight = false;
          this.applyRead({ ...read, room_id: id });
          if (state.want > target) run(state.want);
        },
        () => {
          state.inFlight = false;
        },
      );
    };
    // The badge clears at once; the answer makes it exact.
    this.updateRoom(id, (r) => {
      const me = this.state.me?.id;
      const stillUnread = (this.state.messages[id]?.items ?? []).filter((m) => m.seq > seq && m.author.id !== me).length;
      return { ...r, last_read_seq: seq, unread: seq >= r.last_seq ? 0 : Math.min(r.unread, stillUnread), mentions: seq >= r.last_seq ? 0 : r.mentions };
    });
    run(state.want);
  }

  /** Says "I am typing" in the room, at most every few seconds. */
  typing(id: string): void {
    const now = Date.now();
    if (now - (this.lastTyping.get(id) ?? 0) < TYPING_EVERY_MS) return;
    if (this.live.send({ type: 'typing', channel: `chat:${id}` })) this.lastTyping.set(id, now);
  }

  // --- sending (the outbox) ------------------------------------------------------------------

  /** Queues a message and sends it (now, or when the api can be reached again). */
  send(id: string, text: string, replyTo: number | null = null): string {
    const clientMsgId = newClientMsgId();
    this.lastTyping.delete(id);
    this.set((s) => ({ pending: { ...s.pending, [id]: [...(s.pending[id] ?? []), { clientMsgId, text, replyTo, state: 'queued' }] } }));
    this.flush(id);
    return clientMsgId;
  }

  private setPending(id: string, clientMsgId: string, change: Partial<PendingMessage> | null): void {
    this.set((s) => {
      const list = s.pending[id] ?? [];
      const next = change === null ? list.filter((p) => p.clientMsgId !== clientMsgId) : list.map((p) => (p.clientMsgId === clientMsgId ? { ...p, ...change } : p));
      return { pending: { ...s.pending, [id]: next } };
    });
  }

  /** Sends the room's queued messages one at a time, in order. */
  flush(id: string): void {
    if (this.flushing.has(id)) return;
    clearTimeout(this.retryTimers.get(id));
    this.retryTimers.delete(id);
    const next = (this.state.pending[id] ?? []).find((p) => p.state === 'queued');
    if (!next) return;
    if (!this.state.online) return;
    this.flushing.add(id);
    this.setPending(id, next.clientMsgId, { state: 'sending', error: undefined });
    this.client.send(id, next.text, next.clientMsgId, next.replyTo).then(
      (message) => {
        this.flushing.delete(id);
        this.retryAttempts.delete(id);
        this.setPending(id, next.clientMsgId, null);
        this.takeMessages(id, [message]);
        this.updateRoom(id, (r) => roomAfterMessage(r, message, this.state.me?.id ?? null));
        this.flush(id);
      },
      (err: unknown) => {
        this.flushing.delete(id);
        if (retriable(err)) {
          // Offline, the api away or rate limited: keep it queued and try again with backoff
          // (at once when the browser is back online). The same client_msg_id makes a retry of a
          // send that did arrive answer with that message instead of a second one.
          const attempt = this.retryAttempts.get(id) ?? 0;
          this.retryAttempts.set(id, attempt + 1);
          const wait = err instanceof ApiError && err.retryAfter ? err.retryAfter * 1000 : Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** attempt) * (0.8 + Math.random() * 0.4);
          this.setPending(id, next.clientMsgId, { state: 'queued', error: describeError(err, 'Sending') });
          this.retryTimers.set(
            id,
            setTimeout(() => this.flush(id), Math.round(wait)),
          );
        } else {
          this.setPending(id, next.clientMsgId, { state: 'failed', error: describeError(err, 'Sending') });
          this.flush(id);
        }
      },
    );
  }

  retryPending(id: string, clientMsgId: string): void {
    this.retryAttempts.delete(id);
    this.setPending(id, clientMsgId, { state: 'queued', error: undefined });
    this.flush(id);
  }

  discardPending(id: string, clientMsgId: string): void {
    this.setPending(id, clientMsgId, null);
  }

  // --- message actions -----------------------------------------------------------------------

  async edit(id: string, message: ChatMessage, text: string): Promise<void> {
    this.takeMessages(id, [await this.client.edit(id, message.id, text)]);
  }

  async remove(id: string, message: ChatMessage): Promise<void> {
    await this.client.remove(id, message.id);
    this.takeMessages(id, [{ ...message, text: '', deleted: true, reactions: {}, mentions: [], mention_names: [], edited_at: message.edited_at }]);
  }

  /** Adds my reaction, or takes it back when I had already reacted so. */
  async toggleReaction(id: string, message: ChatMessage, emoji: string): Promise<void> {
    const mine = this.state.myReactions[message.id]?.includes(emoji) ?? false;
    let updated: ChatMessage;
    let have: boolean;
    if (mine) {
      updated = await this.client.unreact(id, message.id, emoji);
      have = false;
    } else {
      const { message: answer, added } = await this.client.react(id, message.id, emoji);
      // Already mine from an earlier visit: the click means "take it back".
      updated = added ? answer : await this.client.unreact(id, message.id, emoji);
      have = added;
    }
    this.set((s) => {
      const list = s.myReactions[message.id] ?? [];
      return { myReactions: { ...s.myReactions, [message.id]: have ? [...new Set([...list, emoji])] : list.filter((e) => e !== emoji) } };
    });
    this.takeMessages(id, [updated]);
  }

  // --- rooms and members ---------------------------------------------------------------------

  private leaving = new Set<string>();

  private acceptRoom(summary: RoomSummary): void {
    this.joinedAt.set(summary.id, this.listEpoch);
    this.leftAt.delete(summary.id);
    this.set((s) => ({ rooms: sortRooms([...(s.rooms ?? []).filter((r) => r.id !== summary.id), summary]) }));
    this.followRooms();
  }

  async createRoom(name: string, topic: string, members: string[]): Promise<RoomSummary> {
    const body: { name: string; topic?: string; members?: string[] } = { name };
    if (topic.trim()) body.topic = topic;
    if (members.length) body.members = members;
    const summary = await this.client.createRoom(body);
    this.acceptRoom(summary);
    this.open(summary.id);
    return summary;
  }

  async startDirect(username: string): Promise<RoomSummary> {
    const summary = await this.client.direct(username);
    this.acceptRoom(summary);
    this.open(summary.id);
    return summary;
  }

  async addMember(id: string, username: string, role: Role): Promise<void> {
    const member = await this.client.addMember(id, username, role);
    this.set((s) => {
      const list = s.members[id];
      return list ? { members: { ...s.members, [id]: memberListAfter(list, 'chat.member_added', { ...member, room_id: id }) } } : {};
    });
  }

  async setRole(id: string, username: string, role: Role): Promise<void> {
    const member = await this.client.setRole(id, username, role);
    this.set((s) => {
      const list = s.members[id];
      return list ? { members: { ...s.members, [id]: memberListAfter(list, 'chat.member_updated', { ...member, room_id: id }) } } : {};
    });
  }

  async removeMember(id: string, username: string): Promise<void> {
    await this.client.removeMember(id, username);
    this.set((s) => {
      const list = s.members[id];
      return list ? { members: { ...s.members, [id]: list.filter((m) => m.username !== username) } } : {};
    });
  }

  async leave(id: string): Promise<void> {
    const me = this.state.me;
    if (!me) return;
    this.leaving.add(id);
    try {
      await this.client.removeMember(id, me.username);
      this.dropRoom(id, 'left');
    } finally {
      setTimeout(() => this.leaving.delete(id), 10_000);
    }
  }
}

/** A member list after an added / updated / removed event (idempotent). */
export function memberListAfter(list: Member[], type: string, change: MemberChange & { joined_at?: string }): Member[] {
  const others = list.filter((m) => m.user_id !== change.user_id);
  if (type === 'chat.member_removed') return others;
  const had = list.find((m) => m.user_id === change.user_id);
  const member: Member = { user_id: change.user_id, username: change.username, role: change.role, joined_at: had?.joined_at ?? change.joined_at ?? new Date().toISOString() };
  if (had) return list.map((m) => (m.user_id === change.user_id ? member : m));
  return [...others, member];
}
