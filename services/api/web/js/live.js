// The broadcaster client (WebSocket protocol v1, docs/protocol.md): subscribes to channels,
// reconnects with exponential backoff and resumes every channel with `since` = the last seq it
// delivered, so nothing is missed and nothing is delivered twice.

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
export function resolveWsUrl(configured, location = window.location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const value = (configured || '').trim();
  if (!value) return `${scheme}//${location.hostname}:8765/ws`;
  if (value.startsWith('/') && !value.startsWith('//')) return `${scheme}//${location.host}${value}`;
  return value;
}

/** What a close code means for the person looking at the page. */
export function describeClose(code) {
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

export class LiveClient {
  /**
   * @param {string} url
   * @param {{onStatus?: Function, onNotice?: Function}} hooks  onStatus({state, attempt, retryInMs, reason});
   *   onNotice(text, level) for the event log.
   */
  constructor(url, hooks = {}) {
    this.url = url;
    this.hooks = hooks;
    this.ws = null;
    this.subs = new Map(); // channel → {handlers, token, lastSeq, sentSince, active}
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.stopped = true;
    this.state = 'idle';
    this.stats = { connects: 0, events: 0, duplicates: 0, resumes: 0, reloads: 0 };
    this.onOnline = () => {
      if (this.state === 'reconnecting') this.reconnectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    this.drop();
    this.setState('idle');
  }

  /** Skips the remaining backoff. */
  reconnectNow() {
    if (this.stopped || this.state === 'open' || this.state === 'connecting') return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  /**
   * Joins `channel`. handlers: onSubscribed({seq, fresh, recovered}), onEvent(event, seq),
   * onResync(reason) — the view must reload over REST —, onError(code, message).
   * `token` is sent for channels that need one.
   */
  subscribe(channel, handlers, { token = null } = {}) {
    this.subs.set(channel, { handlers, token, lastSeq: null, sentSince: null, active: false });
    this.sendSubscribe(channel);
  }

  unsubscribe(channel) {
    if (!this.subs.delete(channel)) return;
    this.send({ type: 'unsubscribe', channel });
  }

  /** A new token for `channel` (after a refresh): subscribe again, resuming after the last seq. */
  setToken(channel, token) {
    const sub = this.subs.get(channel);
    if (!sub) return;
    sub.token = token;
    this.sendSubscribe(channel);
  }

  /** The last seq delivered on `channel` (the resume point), or null. */
  lastSeq(channel) {
    return this.subs.get(channel)?.lastSeq ?? null;
  }

  // --- connection ------------------------------------------------------------------------

  open() {
    this.drop();
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.hooks.onNotice?.(`Cannot open ${this.url}: ${err.message}`, 'error');
      this.scheduleReconnect('invalid WebSocket URL');
      return;
    }
    this.ws = ws;
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect(describeClose(close.code));
    };
    // An error is always followed by close; nothing to do here.
    ws.onerror = () => {};
  }

  /** Forgets the current socket without waiting for its closing handshake. */
  drop() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    const ws = this.ws;
    this.ws = null;
    for (const sub of this.subs.values()) sub.active = false;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
    }
  }

  scheduleReconnect(reason) {
    this.drop();
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.setState('reconnecting', { retryInMs: delay, reason });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  setState(state, extra = {}) {
    this.state = state;
    this.hooks.onStatus?.({ state, attempt: this.attempt, url: this.url, ...extra });
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'open') {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Subscribes (again) with `since` = the last delivered seq when there is one. */
  sendSubscribe(channel) {
    const sub = this.subs.get(channel);
    if (!sub) return;
    const frame = { type: 'subscribe', channel };
    if (sub.lastSeq !== null) frame.since = sub.lastSeq;
    if (sub.token) frame.token = sub.token;
    if (this.send(frame)) sub.sentSince = sub.lastSeq;
  }

  heartbeat() {
    if (Date.now() - this.lastFrameAt > DEAD_AFTER_MS) {
      this.scheduleReconnect('no answer from the broadcaster');
      return;
    }
    this.send({ type: 'ping' });
  }

  // --- frames ----------------------------------------------------------------------------

  receive(text) {
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.hooks.onNotice?.('The broadcaster sent a frame that is not JSON; ignored.', 'error');
      return;
    }
    const sub = frame.channel !== undefined ? this.subs.get(frame.channel) : undefined;
    switch (frame.type) {
      case 'connection_established':
        this.attempt = 0;
        this.stats.connects += 1;
        this.setState('open', { connectionId: frame.connection_id });
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.heartbeat(), PING_EVERY_MS);
        for (const channel of this.subs.keys()) this.sendSubscribe(channel);
        break;
      case 'subscribed':
        if (sub) this.subscribed(frame.channel, sub, frame);
        break;
      case 'event':
        if (sub) this.event(sub, frame);
        break;
      case 'error':
        this.error(frame, sub);
        break;
      case 'unsubscribed':
        if (sub) sub.active = false;
        break;
      default:
        // pong, status: the frame itself was the sign of life.
        break;
    }
  }

  subscribed(channel, sub, frame) {
    sub.active = true;
    const resumed = sub.sentSince !== null;
    if (resumed) {
      this.stats.resumes += 1;
      if (frame.recovered === false) {
        // Part of the history left the stream: what follows is complete from here on, but the
        // view has to reload its state over REST.
        this.stats.reloads += 1;
        this.hooks.onNotice?.(`Events of ${channel} after #${sub.sentSince} are no longer all available; reloading the list.`, 'warning');
        sub.handlers.onResync?.('history_lost');
      } else {
        this.hooks.onNotice?.(`Resumed ${channel} after #${sub.sentSince}.`, 'info');
      }
    } else {
      sub.lastSeq = frame.seq;
    }
    sub.handlers.onSubscribed?.({ seq: frame.seq, fresh: !resumed, recovered: frame.recovered ?? null });
  }

  event(sub, frame) {
    if (typeof frame.seq !== 'number' || !frame.event) return;
    if (sub.lastSeq !== null && frame.seq <= sub.lastSeq) {
      // Already delivered (e.g. replayed and live around a resume): never twice.
      this.stats.duplicates += 1;
      return;
    }
    sub.lastSeq = frame.seq;
    this.stats.events += 1;
    sub.handlers.onEvent?.(frame.event, frame.seq);
  }

  error(frame, sub) {
    const code = String(frame.code ?? 'error');
    const message = String(frame.message ?? '');
    if (sub && code === 'replay_failed') {
      // The history could not be replayed: subscribe afresh; the fresh `subscribed` makes the
      // view reload over REST (after the new subscription point, so nothing falls in between).
      this.stats.reloads += 1;
      this.hooks.onNotice?.(`Could not replay ${frame.channel} (${message}); reloading the list.`, 'warning');
      sub.lastSeq = null;
      this.sendSubscribe(frame.channel);
      return;
    }
    if (sub) {
      sub.active = false;
      sub.handlers.onError?.(code, message);
      return;
    }
    this.hooks.onNotice?.(`Broadcaster: ${code}: ${message}`, 'error');
  }
}
