// What the app observes from the browser's side, batched for `POST /api/v1/telemetry/web`: api
// calls (path, method, status, duration), the WebSocket's connects, failures, reconnects,
// resumes that were not recovered and time spent disconnected, and uncaught errors by kind.
// The api counts paths under its OpenAPI route templates; nothing personal is sent (no user, no
// token, no message, no query string). A batch goes out every 30 s and when the page is hidden
// (sendBeacon, which survives the page closing); nothing is sent when the api turned it off.

import type { LiveState } from './live';

export const FLUSH_EVERY_MS = 30_000;
/** Bounds of one report (the api's schema refuses more). */
const MAX_ENTRIES = 64;
const MAX_DURATIONS = 256;

export const ERROR_KINDS = [
  'error',
  'type_error',
  'reference_error',
  'range_error',
  'syntax_error',
  'unhandled_rejection',
  'network',
  'chunk_load',
  'other',
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export interface ApiCallEntry {
  route: string;
  method: string;
  status: number;
  durations_ms: number[];
}

export interface TelemetryReport {
  api: ApiCallEntry[];
  ws: { connects: number; failures: number; reconnects: number; unrecovered_resumes: number; disconnected_ms: number };
  errors: { kind: ErrorKind; count: number }[];
}

/** The kind of an uncaught error (a fixed list: the message itself is never sent). */
export function errorKind(error: unknown, rejection = false): ErrorKind {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error ?? '');
  if (/Loading (CSS )?chunk|dynamically imported module/i.test(message)) return 'chunk_load';
  if (/Failed to fetch|NetworkError|Load failed/i.test(message)) return 'network';
  switch (name) {
    case 'TypeError':
      return 'type_error';
    case 'ReferenceError':
      return 'reference_error';
    case 'RangeError':
      return 'range_error';
    case 'SyntaxError':
      return 'syntax_error';
  }
  if (rejection) return 'unhandled_rejection';
  return error instanceof Error ? 'error' : 'other';
}

const METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);

export class Telemetry {
  private calls = new Map<string, ApiCallEntry>();
  private ws = { connects: 0, failures: 0, reconnects: 0, unrecovered_resumes: 0, disconnected_ms: 0 };
  private errors = new Map<ErrorKind, number>();
  private wsState: LiveState = 'idle';
  private disconnectedSince: number | null = null;
  /** Until the api says (`/app-config.json`), observations are kept but nothing is sent. */
  private enabled: boolean | null = null;

  constructor(
    /** Sends one report's JSON; false when it could not be handed over. */
    private readonly send: (json: string) => boolean,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Whether the api accepts reports; `false` drops what was kept and stops recording. */
  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
    if (!enabled) {
      this.take();
      this.disconnectedSince = null;
    }
  }

  /** One api call: `path` as called (its query is dropped here), `status` 0 when unreachable. */
  apiCall(path: string, method: string, status: number, ms: number): void {
    if (this.enabled === false || !METHODS.has(method) || path === TELEMETRY_PATH) return;
    const route = path.split(/[?#]/)[0] || '/';
    const key = `${method} ${status} ${route}`;
    let entry = this.calls.get(key);
    if (!entry) {
      if (this.calls.size >= MAX_ENTRIES) this.flush();
      entry = { route, method, status, durations_ms: [] };
      this.calls.set(key, entry);
    }
    entry.durations_ms.push(Math.min(600_000, Math.max(0, Math.round(ms * 10) / 10)));
    if (entry.durations_ms.length >= MAX_DURATIONS) this.flush();
  }

  /** The WebSocket client's state changes (`LiveClient`'s onStatus). */
  wsStatus(state: LiveState): void {
    if (this.enabled === false) return;
    const before = this.wsState;
    this.wsState = state;
    if (state === 'open') {
      this.ws.connects += 1;
      if (before === 'reconnecting' || this.disconnectedSince !== null) this.ws.reconnects += 1;
      this.closeOutage();
    } else if (state === 'reconnecting') {
      this.ws.failures += 1;
      if (this.disconnectedSince === null) this.disconnectedSince = this.now();
    } else if (state === 'idle') {
      this.closeOutage();
    }
  }

  unrecoveredResume(): void {
    if (this.enabled === false) return;
    this.ws.unrecovered_resumes += 1;
  }

  error(kind: ErrorKind): void {
    if (this.enabled === false) return;
    this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
  }

  /** What was observed since the last call, or null when nothing was. */
  take(): TelemetryReport | null {
    if (this.disconnectedSince !== null) {
      // An outage still going on: count its time so far, and go on from now.
      const now = this.now();
      this.ws.disconnected_ms += now - this.disconnectedSince;
      this.disconnectedSince = now;
    }
    const ws = { ...this.ws, disconnected_ms: Math.min(86_400_000, Math.round(this.ws.disconnected_ms)) };
    const empty = this.calls.size === 0 && this.errors.size === 0 && Object.values(ws).every((n) => n === 0);
    if (empty) return null;
    const report: TelemetryReport = {
      api: [...this.calls.values()],
      ws,
      errors: [...this.errors].map(([kind, count]) => ({ kind, count })),
    };
    this.calls.clear();
    this.errors.clear();
    this.ws = { connects: 0, failures: 0, reconnects: 0, unrecovered_resumes: 0, disconnected_ms: 0 };
    return report;
  }

  /** Sends what was observed, if anything. */
  flush(): void {
    if (this.enabled !== true) return;
    const report = this.take();
    if (report) this.send(JSON.stringify(report));
  }

  private closeOutage(): void {
    if (this.disconnectedSince === null) return;
    this.ws.disconnected_ms += this.now() - this.disconnectedSince;
    this.disconnectedSince = null;
  }
}

export const TELEMETRY_PATH = '/api/v1/telemetry/web';

/**
 * Hands a report to the browser: sendBeacon (delivered even as the page closes), else a
 * keepalive fetch. Sent as text/plain: the one body type every browser's sendBeacon accepts
 * without a CORS preflight (the api reads it as JSON).
 */
export function beacon(json: string): boolean {
  try {
    if (typeof navigator !== 'undefined' && typeof navigator.sendBeacon === 'function' && navigator.sendBeacon(TELEMETRY_PATH, json)) {
      return true;
    }
  } catch {
    /* fall back to fetch */
  }
  void fetch(TELEMETRY_PATH, { method: 'POST', body: json, keepalive: true, credentials: 'omit', headers: { 'content-type': 'text/plain;charset=UTF-8' } }).catch(() => {});
  return true;
}

/** Starts the batching: every 30 s, and when the page is hidden or left. Returns a stop function. */
export function startReporting(telemetry: Telemetry): () => void {
  const flush = () => telemetry.flush();
  const onVisibility = () => {
    if (document.visibilityState === 'hidden') flush();
  };
  const onError = (event: ErrorEvent) => telemetry.error(errorKind(event.error ?? event.message));
  const onRejection = (event: PromiseRejectionEvent) => telemetry.error(errorKind(event.reason, true));
  const timer = setInterval(flush, FLUSH_EVERY_MS);
  document.addEventListener('visibilitychange', onVisibility);
  window.addEventListener('pagehide', flush);
  window.addEventListener('error', onError);
  window.addEventListener('unhandledrejection', onRejection);
  return () => {
    clearInterval(timer);
    document.removeEventListener('visibilitychange', onVisibility);
    window.removeEventListener('pagehide', flush);
    window.removeEventListener('error', onError);
    window.removeEventListener('unhandledrejection', onRejection);
  };
}
