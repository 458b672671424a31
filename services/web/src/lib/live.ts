// The broadcaster client (WebSocket protocol v1, docs/protocol.md): subscribes to channels
// (with a token and a filter where given), reconnects with exponential backoff and resumes every
// channel with `since` = the last seq it delivered, so nothing is missed and nothing is delivered
// twice; renews token-admitted subscriptions with `authenticate`.

import type { FilterJson } from './filter';

/** Browsers answer the server's WebSocket pings by themselves; this app-level ping (answered by
 * `pong`) lets the client notice a dead connection that never closed. */
const PING_EVERY_MS = 20_000;
/** No frame at all for this long: the connection is dead, reconnect. */
const DEAD_AFTER_MS = 50_000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 10_000;

/**
 * The broadcaster's URL for this page: `configured` from /app-config.json (absolute ws[s]://,
 * or a path like `/ws` on the page's own host), or by default the page's host on port 8765.
 * `wss:` when the page is https.
 */
export interface Where {
  protocol: string;
  hostname: string;
  host: string;
}

export function resolveWsUrl(configured: string | null | undefined, location: Where = window.location): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const value = (configured || '').trim();
  if (!value) return `${scheme}//${location.hostname}:8765/ws`;
  if (value.startsWith('/') && !value.startsWith('//')) return `${scheme}//${location.host}${value}`;
  return value;
}

/** What a close code means for the person looking at the page. */
export function describeClose(code: number): string {
  switch (code) {
    case 1000:
      return 'closed';
    case 1001:
      return 'the broadcaster is restarting';
    case 1006:
      return 'connection lost';
    case 1009:
      return 'a message was too large';
    case 4000:
      return 'the broadcaster heard nothing from this page for too long';
    case 4008:
      return 'this page fell too far behind';
    default:
      return `closed with code ${code}`;
  }
}

export type LiveState = 'idle' | 'connecting' | 'open' | 'reconnecting';

export interface LiveStatus {
  state: LiveState;
  attempt: number;
  url: string;
  retryInMs?: number;
  reason?: string;
  connectionId?: string;
}

export interface LiveEvent {
  id?: string;
  type: string;
  collection?: string;
  doc_id?: string;
  data?: unknown;
  time?: string;
  [key: string]: unknown;
}

/** How an event of a filtered or rule-checked subscription relates to the view: the document
 * entered it, stayed in it, or left it (a `leave` after an update has no `data`). */
export type Match = 'enter' | 'stay' | 'leave';

export interface SubscriptionHandlers {
  onSubscribed?: (info: { seq: number; fresh: boolean; recovered: boolean | null }) => void;
  /** `match` is set on filtered and rule-checked subscriptions (docs/protocol.md). */
  onEvent?: (event: LiveEvent, seq: number, match?: Match) => void;
  /** The view must reload over REST (history lost). */
  onResync?: (reason: string) => void;
  /** `field`: the filter field a `bad_filter` is about. */
  onError?: (code: string, message: string, field?: string) => void;
  /** The server ended the subscription (`membership_revoked`, `token_expired`). */
  onUnsubscribed?: (reason: string) => void;
  /** Frames of this channel that are not events: `typing`, `presence`, `presence_diff`. */
  onSignal?: (frame: Record<string, unknown>) => void;
}

export interface LiveHooks {
  onStatus?: (status: LiveStatus) => void;
  onNotice?: (text: string, level: 'info' | 'warning' | 'error') => void;
  /** Frames that belong to no channel subscription (e.g. typing, presence). */
  onFrame?: (frame: Record<string, unknown>) => void;
  /** A resume whose history was no longer all available (`recovered: false`). */
  onUnrecovered?: (channel: string) => void;
}

/** A token, or a function giving the current one (read at every (re)subscribe). */
export type TokenSource = string | null | (() => string | null);

interface Sub {
  handlers: SubscriptionHandlers;
  token: TokenSource;
  filter: FilterJson | null;
  lastSeq: number | null;
  sentSince: number | null;
  active: boolean;
  /** Subscribed afresh (new, or replacing another filter) and not yet answered `subscribed`:
   * events on the channel belong to the replaced subscription and are dropped. */
  awaiting: boolean;
  /** `unavailable` answers in a row (the retry's backoff). */
  unavailable: number;
  retry?: ReturnType<typeof setTimeout>;
}

type Frame = Record<string, unknown> & { type?: unknown; channel?: unknown };

export class LiveClient {
  ws: WebSocket | null = null;
  subs = new Map<string, Sub>();
  attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastFrameAt = 0;
  private stopped = true;
  state: LiveState = 'idle';
  stats = { connects: 0, events: 0, duplicates: 0, resumes: 0, reloads: 0, renewals: 0 };
  private onOnline = () => {
    if (this.state === 'reconnecting') this.reconnectNow();
  };

  constructor(
    public url: string,
    public hooks: LiveHooks = {},
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    this.drop();
    this.setState('idle');
  }

  /** Skips the remaining backoff. */
  reconnectNow(): void {
    if (this.stopped || this.state === 'open' || this.state === 'connecting') return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  /**
   * Joins `channel`. `token` is sent for channels that need one; `filter` (collection channels)
   * narrows the events to the matching documents, marked `enter` / `stay` / `leave`.
   * Subscribing again to the same channel replaces its handlers and filter and starts afresh:
   * events of the replaced subscription still in flight are dropped until the new `subscribed`.
   */
  subscribe(
    channel: string,
    handlers: SubscriptionHandlers,
    { token = null, filter = null }: { token?: TokenSource; filter?: FilterJson | null } = {},
  ): void {
    clearTimeout(this.subs.get(channel)?.retry);
    this.subs.set(channel, { handlers, token, filter, lastSeq: null, sentSince: null, active: false, awaiting: true, unavailable: 0 });
    this.sendSubscribe(channel);
  }

  /**
   * A fresh access token for every token-admitted subscription of this connection
   * (`authenticate`, docs/protocol.md): they keep running past the old token's expiry without
   * resubscribing. Not connected: nothing to do (the next subscribe sends the current token).
   */
  authenticate(token: string | null): boolean {
    if (!token) return false;
    const needsToken = [...this.subs.values()].some((sub) => sub.active && sub.token !== null);
    return needsToken && this.send({ type: 'authenticate', token });
  }

  unsubscribe(channel: string): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    clearTimeout(sub.retry);
    this.subs.delete(channel);
    this.send({ type: 'unsubscribe', channel });
  }

  /** Whether `channel` is subscribed right now (its `subscribed` came, nothing ended it since). */
  isActive(channel: string): boolean {
    return this.subs.get(channel)?.active ?? false;
  }

  /** A new token for `channel` (after a refresh): subscribe again, resuming after the last seq. */
  setToken(channel: string, token: string | null): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    sub.token = token;
    this.sendSubscribe(channel);
  }

  /** Subscribes to `channel` again (e.g. after `token_expired`), resuming after the last seq. */
  resume(channel: string): void {
    const sub = this.subs.get(channel);
    if (sub && !sub.active) this.sendSubscribe(channel);
  }

  /** The last seq delivered on `channel` (the resume point), or null. */
  lastSeq(channel: string): number | null {
    return this.subs.get(channel)?.lastSeq ?? null;
  }

  // --- connection ------------------------------------------------------------------------

  private open(): void {
    this.drop();
    this.setState('connecting');
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.hooks.onNotice?.(`Cannot open ${this.url}: ${(err as Error).message}`, 'error');
      this.scheduleReconnect('invalid WebSocket URL');
      return;
    }
    this.ws = ws;
    ws.onmessage = (message: MessageEvent) => this.receive(String(message.data));
    ws.onclose = (close: CloseEvent) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect(describeClose(close.code));
    };
    // An error is always followed by close; nothing to do here.
    ws.onerror = () => {};
  }

  /** Forgets the current socket without waiting for its closing handshake. */
  private drop(): void {
    clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    const ws = this.ws;
    this.ws = null;
    for (const sub of this.subs.values()) sub.active = false;
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
  }

  private scheduleReconnect(reason: string): void {
    this.drop();
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.setState('reconnecting', { retryInMs: delay, reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  private setState(state: LiveState, extra: Partial<LiveStatus> = {}): void {
    this.state = state;
    this.hooks.onStatus?.({ state, attempt: this.attempt, url: this.url, ...extra });
  }

  /** Sends a frame when connected; false when it could not be sent. */
  send(frame: Record<string, unknown>): boolean {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'open') {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Subscribes (again) with `since` = the last delivered seq when there is one. */
  private sendSubscribe(channel: string): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    const frame: Record<string, unknown> = { type: 'subscribe', channel };
    if (sub.lastSeq !== null) frame.since = sub.lastSeq;
    const token = typeof sub.token === 'function' ? sub.token() : sub.token;
    if (token) frame.token = token;
    if (sub.filter) frame.filter = sub.filter;
    if (this.send(frame)) sub.sentSince = sub.lastSeq;
  }

  private heartbeat(): void {
    if (Date.now() - this.lastFrameAt > DEAD_AFTER_MS) {
      this.scheduleReconnect('no answer from the broadcaster');
      return;
    }
    this.send({ type: 'ping' });
  }

  // --- frames ----------------------------------------------------------------------------

  receive(text: string): void {
    this.lastFrameAt = Date.now();
    let frame: Frame;
    try {
      const parsed: unknown = JSON.parse(text);
      if (!parsed || typeof parsed !== 'object') throw new Error('not an object');
      frame = parsed as Frame;
    } catch {
      this.hooks.onNotice?.('The broadcaster sent a frame that is not JSON; ignored.', 'error');
      return;
    }
    const channel = typeof frame.channel === 'string' ? frame.channel : undefined;
    const sub = channel !== undefined ? this.subs.get(channel) : undefined;
    switch (frame.type) {
      case 'connection_established':
        this.attempt = 0;
        this.stats.connects += 1;
        this.setState('open', { connectionId: String(frame.connection_id ?? '') });
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.heartbeat(), PING_EVERY_MS);
        for (const name of this.subs.keys()) this.sendSubscribe(name);
        break;
      case 'subscribed':
        if (sub && channel !== undefined) this.subscribed(channel, sub, frame);
        break;
      case 'event':
        if (sub) this.event(sub, frame);
        break;
      case 'error':
        this.error(frame, sub);
        break;
      case 'unsubscribed':
        if (sub && channel !== undefined) {
          sub.active = false;
          const reason = typeof frame.reason === 'string' ? frame.reason : '';
          // Revoked access never comes back by resubscribing: forget the channel.
          if (reason === 'membership_revoked') this.subs.delete(channel);
          if (reason) sub.handlers.onUnsubscribed?.(reason);
        }
        break;
      case 'typing':
      case 'presence':
      case 'presence_diff':
        if (sub) sub.handlers.onSignal?.(frame);
        else this.hooks.onFrame?.(frame);
        break;
      case 'authenticated':
        this.stats.renewals += 1;
        break;
      case 'pong':
      case 'status':
        // The frame itself was the sign of life.
        break;
      default:
        this.hooks.onFrame?.(frame);
        break;
    }
  }

  private subscribed(channel: string, sub: Sub, frame: Frame): void {
    sub.active = true;
    sub.awaiting = false;
    sub.unavailable = 0;
    const resumed = sub.sentSince !== null;
    const seq = typeof frame.seq === 'number' ? frame.seq : 0;
    if (resumed) {
      this.stats.resumes += 1;
      if (frame.recovered === false) {
        // Part of the history left the stream: what follows is complete from here on, but the
        // view has to reload its state over REST.
        this.stats.reloads += 1;
        this.hooks.onUnrecovered?.(channel);
        this.hooks.onNotice?.(`Events of ${channel} after #${sub.sentSince} are no longer all available; reloading the list.`, 'warning');
        sub.handlers.onResync?.('history_lost');
      } else {
        this.hooks.onNotice?.(`Resumed ${channel} after #${sub.sentSince}.`, 'info');
      }
    } else {
      sub.lastSeq = seq;
    }
    const recovered = typeof frame.recovered === 'boolean' ? frame.recovered : null;
    sub.handlers.onSubscribed?.({ seq, fresh: !resumed, recovered });
  }

  private event(sub: Sub, frame: Frame): void {
    if (typeof frame.seq !== 'number' || !frame.event || typeof frame.event !== 'object') return;
    // Before our first `subscribed`: the frame belongs to a subscription this one replaced
    // (another filter), which the server keeps if ours is refused; ours follow `subscribed`.
    if (sub.awaiting) return;
    if (sub.lastSeq !== null && frame.seq <= sub.lastSeq) {
      // Already delivered (e.g. replayed and live around a resume): never twice.
      this.stats.duplicates += 1;
      return;
    }
    sub.lastSeq = frame.seq;
    this.stats.events += 1;
    const match = frame.match === 'enter' || frame.match === 'stay' || frame.match === 'leave' ? frame.match : undefined;
    sub.handlers.onEvent?.(frame.event as LiveEvent, frame.seq, match);
  }

  private error(frame: Frame, sub: Sub | undefined): void {
    const code = String(frame.code ?? 'error');
    const message = String(frame.message ?? '');
    const channel = String(frame.channel ?? '');
    if (sub && code === 'replay_failed') {
      // The history could not be replayed: subscribe afresh; the fresh `subscribed` makes the
      // view reload over REST (after the new subscription point, so nothing falls in between).
      this.stats.reloads += 1;
      this.hooks.onNotice?.(`Could not replay ${channel} (${message}); reloading the list.`, 'warning');
      sub.lastSeq = null;
      this.sendSubscribe(channel);
      return;
    }
    if (sub && code === 'unavailable') {
      // The broadcaster could not check access just now (fail closed): try again with backoff.
      sub.active = false;
      const delay = Math.min(BACKOFF_MAX_MS, 500 * 2 ** sub.unavailable) * (0.8 + Math.random() * 0.4);
      sub.unavailable += 1;
      clearTimeout(sub.retry);
      sub.retry = setTimeout(() => this.sendSubscribe(channel), Math.round(delay));
      sub.handlers.onError?.(code, message);
      return;
    }
    if (sub) {
      sub.active = false;
      sub.handlers.onError?.(code, message, typeof frame.field === 'string' ? frame.field : undefined);
      return;
    }
    this.hooks.onNotice?.(`Broadcaster: ${code}: ${message}`, 'error');
  }
}
