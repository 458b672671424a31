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

  it('resolves the broadcaster address', () => {
    const http = { protocol: 'http:', hostname: 'c.test', host: 'c.test:8000' };
    expect(resolveWsUrl('', http)).toBe('ws://c.test:8765/ws');
    expect(resolveWsUrl('/ws', { ...http, protocol: 'https:', host: 'c.test' })).toBe('wss://c.test/ws');
    expect(resolveWsUrl('wss://live.test/ws', http)).toBe('wss://live.test/ws');
  });
});
