// The app's shared state (Zustand): who is signed in, the broadcaster connection, the event log
// and toasts. The long-lived clients (REST, session, WebSocket) are module singletons here.

import { create } from 'zustand';
import { createApi } from './lib/api';
import { LiveClient, type LiveEvent, type LiveStatus, type Match } from './lib/live';
import { Session, type SessionReason } from './lib/session';
import { Telemetry, beacon } from './lib/telemetry';

export const session = new Session();
/** Browser-side observations for the api's `courier_web_*` metrics (see lib/telemetry.ts). */
export const telemetry = new Telemetry(beacon);
export const api = createApi({ token: () => session.token(), refresh: () => session.refresh() }, (path, method, status, ms) =>
  telemetry.apiCall(path, method, status, ms),
);
session.api = api;

/** Set once /app-config.json is read (see main.tsx). */
export let live: LiveClient = new LiveClient('ws://127.0.0.1:8765/ws');
export function setLive(client: LiveClient): void {
  live = client;
}

export const LOG_LIMIT = 300;

export type LogEntry =
  | { kind: 'event'; key: number; seq: number; event: LiveEvent; channel: string; at: Date; match?: Match | undefined }
  | { kind: 'notice'; key: number; text: string; level: 'info' | 'warning' | 'error'; at: Date };

export interface Toast {
  key: number;
  text: string;
  kind: 'info' | 'success' | 'error';
}

interface AppState {
  username: string | null;
  /** The signed-in user's id (the token's `sub`). */
  userId: string | null;
  roles: string[];
  /** `roles` from `GET /api/v1/auth/me`; null until known or when the api does not say. */
  meRoles: string[] | null;
  /** The last session change (sign-in, refresh, sign-out). */
  sessionReason: SessionReason | null;
  sessionVersion: number;
  connection: LiveStatus;
  log: LogEntry[];
  received: number;
  toasts: Toast[];
  authDialog: 'login' | 'register' | null;
  logEvent: (event: LiveEvent, seq: number, channel: string, match?: Match) => void;
  logNotice: (text: string, level?: 'info' | 'warning' | 'error') => void;
  clearLog: () => void;
  toast: (text: string, kind?: Toast['kind']) => void;
  openAuth: (mode: 'login' | 'register' | null) => void;
}

let keys = 0;

export const useApp = create<AppState>((set) => ({
  username: null,
  userId: null,
  roles: [],
  meRoles: null,
  sessionReason: null,
  sessionVersion: 0,
  connection: { state: 'idle', attempt: 0, url: '' },
  log: [],
  received: 0,
  toasts: [],
  authDialog: null,
  logEvent: (event, seq, channel, match) =>
    set((s) => ({
      log: [{ kind: 'event' as const, key: (keys += 1), seq, event, channel, match, at: event.time ? new Date(event.time) : new Date() }, ...s.log].slice(0, LOG_LIMIT),
      received: s.received + 1,
    })),
  logNotice: (text, level = 'info') =>
    set((s) => ({ log: [{ kind: 'notice' as const, key: (keys += 1), text, level, at: new Date() }, ...s.log].slice(0, LOG_LIMIT) })),
  clearLog: () => set({ log: [] }),
  toast: (text, kind = 'info') => {
    const key = (keys += 1);
    set((s) => ({ toasts: [...s.toasts, { key, text, kind }] }));
    setTimeout(() => set((s) => ({ toasts: s.toasts.filter((t) => t.key !== key) })), 4000);
  },
  openAuth: (mode) => set({ authDialog: mode }),
}));

session.onChange((reason) => {
  useApp.setState((s) => ({
    username: session.username,
    userId: session.userId,
    roles: session.state?.roles ?? [],
    meRoles: reason === 'signed-out' || reason === 'expired' ? null : s.meRoles,
    sessionReason: reason,
    sessionVersion: s.sessionVersion + 1,
  }));
  if (reason === 'signed-in' || reason === 'restored') {
    api.me().then(
      (me) => session.signedIn && useApp.setState({ meRoles: Array.isArray(me.roles) ? me.roles.filter((r) => typeof r === 'string') : null }),
      () => {},
    );
  }
  // A fresh token renews every token-admitted subscription of the connection in place
  // (`authenticate`), so none ends at the old token's expiry.
  if (reason === 'refreshed') live.authenticate(session.token());
  if (reason === 'expired') useApp.getState().toast('Your session ended: sign in again to make changes.', 'error');
});
