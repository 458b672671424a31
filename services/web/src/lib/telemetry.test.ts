import { describe, expect, it } from 'vitest';
import { Telemetry, errorKind, type TelemetryReport } from './telemetry';

function setup() {
  const sent: TelemetryReport[] = [];
  let now = 0;
  const telemetry = new Telemetry(
    (json) => {
      sent.push(JSON.parse(json) as TelemetryReport);
      return true;
    },
    () => now,
  );
  return { telemetry, sent, advance: (ms: number) => (now += ms) };
}

describe('Telemetry', () => {
  it('batches api calls by path, method and status, without query strings', () => {
    const { telemetry, sent } = setup();
    telemetry.setEnabled(true);
    telemetry.apiCall('/api/v1/pets?species=Dog&limit=25', 'GET', 200, 12.34);
    telemetry.apiCall('/api/v1/pets?limit=25', 'GET', 200, 20);
    telemetry.apiCall('/api/v1/pets', 'POST', 0, 3000);
    telemetry.flush();
    expect(sent).toHaveLength(1);
    expect(sent[0]?.api).toEqual([
      { route: '/api/v1/pets', method: 'GET', status: 200, durations_ms: [12.3, 20] },
      { route: '/api/v1/pets', method: 'POST', status: 0, durations_ms: [3000] },
    ]);
    telemetry.flush();
    expect(sent).toHaveLength(1);
  });

  it('counts WebSocket failures, reconnects and the time spent disconnected', () => {
    const { telemetry, sent, advance } = setup();
    telemetry.setEnabled(true);
    telemetry.wsStatus('connecting');
    telemetry.wsStatus('open');
    telemetry.wsStatus('reconnecting');
    advance(1000);
    telemetry.wsStatus('connecting');
    telemetry.wsStatus('reconnecting');
    advance(500);
    telemetry.flush();
    // An outage still going on is counted so far.
    expect(sent[0]?.ws).toEqual({ connects: 1, failures: 2, reconnects: 0, unrecovered_resumes: 0, disconnected_ms: 1500 });
    advance(250);
    telemetry.wsStatus('open');
    telemetry.unrecoveredResume();
    telemetry.flush();
    expect(sent[1]?.ws).toEqual({ connects: 1, failures: 0, reconnects: 1, unrecovered_resumes: 1, disconnected_ms: 250 });
  });

  it('sends nothing until the api says yes, and forgets everything when it says no', () => {
    const { telemetry, sent } = setup();
    telemetry.apiCall('/app-config.json', 'GET', 200, 5);
    telemetry.flush();
    expect(sent).toHaveLength(0);
    telemetry.setEnabled(true);
    telemetry.flush();
    expect(sent[0]?.api[0]?.route).toBe('/app-config.json');

    const off = setup();
    off.telemetry.apiCall('/app-config.json', 'GET', 200, 5);
    off.telemetry.setEnabled(false);
    off.telemetry.error('type_error');
    off.telemetry.wsStatus('reconnecting');
    off.telemetry.flush();
    expect(off.sent).toHaveLength(0);
  });

  it('keeps each report within the api’s bounds', () => {
    const { telemetry, sent } = setup();
    telemetry.setEnabled(true);
    for (let i = 0; i < 300; i += 1) telemetry.apiCall('/api/v1/pets', 'GET', 200, i);
    for (let i = 0; i < 70; i += 1) telemetry.apiCall(`/api/v1/x${i}`, 'GET', 200, 1);
    telemetry.flush();
    expect(sent.every((r) => r.api.length <= 64 && r.api.every((e) => e.durations_ms.length <= 256))).toBe(true);
    const calls = sent.flatMap((r) => r.api).reduce((n, e) => n + e.durations_ms.length, 0);
    expect(calls).toBe(370);
  });

  it('reduces errors to a fixed list of kinds', () => {
    expect(errorKind(new TypeError('x is undefined'))).toBe('type_error');
    expect(errorKind(new Error('Failed to fetch dynamically imported module: /static/a.js'))).toBe('chunk_load');
    expect(errorKind(new Error('boom'))).toBe('error');
    expect(errorKind('a string', true)).toBe('unhandled_rejection');
    expect(errorKind({ user: 'ana' })).toBe('other');
  });
});
