import { afterEach, describe, expect, it, vi } from 'vitest';
import { LiveClient, resolveWsUrl } from './live';

class FakeSocket {
  static OPEN = 1;
  static all: FakeSocket[] = [];
  readyState = 1;
  sent: Record<string, unknown>[] = [];
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: ((c: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(public url: string) {
    FakeSocket.all.push(this);
  }
  send(text: string) {
    this.sent.push(JSON.parse(text) as Record<string, unknown>);
  }
  close() {
    this.readyState = 3;
  }
  deliver(frame: unknown) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
}

const event = (seq: number) => ({ type: 'event', channel: 'rooms', seq, event: { type: 'x.updated', doc_id: 'd' } });

describe('LiveClient', () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
    FakeSocket.all = [];
  });

  it('resumes with since, drops duplicates, backs off, and resyncs on recovered:false', () => {
    vi.useFakeTimers();
    vi.stubGlobal('WebSocket', FakeSocket);
    const seen: number[] = [];
    const resyncs: string[] = [];
    const states: string[] = [];
    const live = new LiveClient('ws://test/ws', { onStatus: (s) => states.push(s.state) });
    live.subscribe('rooms', { onEvent: (_, seq) => seen.push(seq), onResync: (r) => resyncs.push(r) });
    live.start();
    const first = FakeSocket.all[0]!;
    first.deliver({ type: 'connection_established', connection_id: 'c1' });
    expect(first.sent[0]).toEqual({ type: 'subscribe', channel: 'rooms' });
    first.deliver({ type: 'subscribed', channel: 'rooms', seq: 5 });
    for (const seq of [6, 7, 7, 6]) first.deliver(event(seq));
    first.onclose?.({ code: 1006 });
    expect(states.at(-1)).toBe('reconnecting');
    // The first retry waits 250 ms ± 20 %.
    vi.advanceTimersByTime(199);
    expect(FakeSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(101);
    const second = FakeSocket.all[1]!;
    second.deliver({ type: 'connection_established', connection_id: 'c2' });
    expect(second.sent[0]).toEqual({ type: 'subscribe', channel: 'rooms', since: 7 });
    second.deliver({ type: 'subscribed', channel: 'rooms', seq: 7, recovered: false });
    for (const seq of [7, 8]) second.deliver(event(seq));
    expect(seen).toEqual([6, 7, 8]);
    expect(live.stats.duplicates).toBe(3);
    expect(resyncs).toEqual(['history_lost']);
    live.stop();
  });

  it('subscribes with a filter and the current token, hands match on, drops a replaced filter’s events', () => {
    vi.stubGlobal('WebSocket', FakeSocket);
    let token = 'tok-1';
    const seen: [number, string | undefined][] = [];
    const errors: [string, string | undefined][] = [];
    const live = new LiveClient('ws://test/ws');
    const handlers = {
      onEvent: (_: unknown, seq: number, match?: string) => seen.push([seq, match]),
      onError: (code: string, _message: string, field?: string) => errors.push([code, field]),
    };
    live.subscribe('notes', handlers, { token: () => token, filter: { pinned: true } });
    live.start();
    const socket = FakeSocket.all[0]!;
    socket.deliver({ type: 'connection_established', connection_id: 'c1' });
    expect(socket.sent[0]).toEqual({ type: 'subscribe', channel: 'notes', token: 'tok-1', filter: { pinned: true } });
    socket.deliver({ type: 'subscribed', channel: 'notes', seq: 10 });
    socket.deliver({ type: 'event', channel: 'notes', seq: 11, match: 'enter', event: { type: 'notes.updated', doc_id: 'n' } });
    socket.deliver({ type: 'event', channel: 'notes', seq: 12, match: 'leave', event: { type: 'notes.updated', doc_id: 'n', data: null } });
    // A new filter replaces the subscription: what is still in flight for the old one is dropped.
    token = 'tok-2';
    live.subscribe('notes', handlers, { token: () => token, filter: { pinned: false, title: { gte: 'm' } } });
    expect(socket.sent[1]).toEqual({ type: 'subscribe', channel: 'notes', token: 'tok-2', filter: { pinned: false, title: { gte: 'm' } } });
    socket.deliver({ type: 'event', channel: 'notes', seq: 13, match: 'stay', event: { type: 'notes.updated', doc_id: 'n' } });
    socket.deliver({ type: 'subscribed', channel: 'notes', seq: 13 });
    socket.deliver({ type: 'event', channel: 'notes', seq: 14, match: 'enter', event: { type: 'notes.created', doc_id: 'm' } });
    expect(seen).toEqual([
      [11, 'enter'],
      [12, 'leave'],
      [14, 'enter'],
    ]);
    // A refused filter names its field.
    live.subscribe('pets', handlers, { filter: { age: 'old' } });
    socket.deliver({ type: 'error', code: 'bad_filter', channel: 'pets', field: 'age', message: "'age' is a whole number" });
    expect(errors).toEqual([['bad_filter', 'age']]);
    // A refreshed token renews the token-admitted subscriptions in place.
    expect(live.authenticate('tok-3')).toBe(true);
    expect(socket.sent.at(-1)).toEqual({ type: 'authenticate', token: 'tok-3' });
    socket.deliver({ type: 'authenticated', exp: 1, channels: ['notes'] });
    expect(live.stats.renewals).toBe(1);
    live.stop();
  });

  it('resolves the broadcaster address', () => {
    const http = { protocol: 'http:', hostname: 'c.test', host: 'c.test:8000' };
    expect(resolveWsUrl('', http)).toBe('ws://c.test:8765/ws');
    expect(resolveWsUrl('/ws', { ...http, protocol: 'https:', host: 'c.test' })).toBe('wss://c.test/ws');
    expect(resolveWsUrl('wss://live.test/ws', http)).toBe('wss://live.test/ws');
  });
});
