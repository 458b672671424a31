// The signed-in session: tokens in memory, mirrored to sessionStorage (this tab only, gone when
// it closes; never localStorage), the access token refreshed shortly before it expires.

import type { ApiError, TokenPair } from './api';

const STORAGE_KEY = 'courier.session';
/** Refresh this long before expiry (or at 80% of a very short lifetime). */
const REFRESH_MARGIN_MS = 60_000;
/** After a failed refresh that may be temporary (network), try again after this. */
const RETRY_MS = 10_000;

export interface SessionState {
  accessToken: string;
  refreshToken: string;
  expiresAt: number;
  lifetimeMs: number;
  username: string | null;
  /** The token's `sub`: the user id (`user:<id>` is this user's own channel). */
  userId: string | null;
  roles: string[];
}

export type SessionReason = 'restored' | 'signed-in' | 'refreshed' | 'signed-out' | 'expired';

export interface SessionApi {
  login(username: string, password: string): Promise<TokenPair>;
  register(username: string, password: string): Promise<unknown>;
  refresh(refreshToken: string): Promise<TokenPair>;
  /** Revokes the refresh token on the server (404 from an api without it is fine). */
  logout?(refreshToken: string): Promise<unknown>;
}

/** The payload of a JWT (not verified: only to read `exp`, `name` and `roles` for display). */
export function jwtClaims(token: string): Record<string, unknown> {
  try {
    const part = (token.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
    );
    const claims: unknown = JSON.parse(json);
    return claims && typeof claims === 'object' ? (claims as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

export class Session {
  state: SessionState | null = null;
  private listeners = new Set<(reason: SessionReason) => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private refreshing: Promise<boolean> | null = null;

  constructor(public api: SessionApi | null = null) {}

  get signedIn(): boolean {
    return this.state !== null;
  }

  get username(): string | null {
    return this.state?.username ?? null;
  }

  get userId(): string | null {
    return this.state?.userId ?? null;
  }

  /** The access token, or null when signed out. */
  token(): string | null {
    return this.state?.accessToken ?? null;
  }

  /** Calls `listener(reason)` on sign-in, refresh and sign-out; returns the unsubscribe. */
  onChange(listener: (reason: SessionReason) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(reason: SessionReason) {
    for (const listener of this.listeners) listener(reason);
  }

  /** Takes the session kept by this tab, refreshing it first when its access token expired. */
  async restore(): Promise<boolean> {
    let saved: SessionState | null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null') as SessionState | null;
    } catch {
      saved = null;
    }
    if (!saved || typeof saved.refreshToken !== 'string') return false;
    const userId = typeof saved.userId === 'string' ? saved.userId : jwtClaims(saved.accessToken).sub;
    this.state = { ...saved, userId: typeof userId === 'string' ? userId : null, roles: Array.isArray(saved.roles) ? saved.roles : [] };
    if (saved.expiresAt - Date.now() < REFRESH_MARGIN_MS / 2) {
      return this.refresh();
    }
    this.schedule();
    this.emit('restored');
    return true;
  }

  async login(username: string, password: string): Promise<void> {
    this.accept(await this.requireApi().login(username, password));
    this.emit('signed-in');
  }

  /** Registers, then signs in with the same credentials. */
  async register(username: string, password: string): Promise<void> {
    await this.requireApi().register(username, password);
    await this.login(username, password);
  }

  /**
   * Signs out: asks the api to revoke the refresh token (`POST /api/v1/auth/logout`; an api
   * without it answers 404, and an unreachable one cannot be helped), then forgets the tokens
   * whatever the answer. Resolves when both are done.
   */
  async logout(): Promise<void> {
    const refreshToken = this.state?.refreshToken;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (refreshToken && this.api?.logout) {
      try {
        await this.api.logout(refreshToken);
      } catch {
        // 404 (no server-side sign-out yet), 401 (already expired) or offline: forget anyway.
      }
    }
    this.signOut();
  }

  /** Forgets the tokens in this tab, without asking the api. */
  signOut(reason: SessionReason = 'signed-out'): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const was = this.state !== null;
    this.state = null;
    sessionStorage.removeItem(STORAGE_KEY);
    if (was) this.emit(reason);
  }

  /**
   * Exchanges the refresh token for a new pair. Concurrent callers share one request (refresh
   * tokens are single-use: sending one twice would end the session). Resolves true on success.
   */
  refresh(): Promise<boolean> {
    if (!this.state) return Promise.resolve(false);
    if (!this.refreshing) {
      const refreshToken = this.state.refreshToken;
      this.refreshing = this.requireApi()
        .refresh(refreshToken)
        .then((pair) => {
          this.accept(pair);
          this.emit('refreshed');
          return true;
        })
        .catch((err: ApiError) => {
          if (err.status === 0 || err.status >= 500) {
            // Temporary: keep the session, try again soon.
            this.schedule(RETRY_MS);
            return false;
          }
          this.signOut('expired');
          return false;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  private requireApi(): SessionApi {
    if (!this.api) throw new Error('Session has no api');
    return this.api;
  }

  accept(pair: TokenPair): void {
    const claims = jwtClaims(pair.access_token);
    const lifetimeMs = (Number(pair.expires_in) || 0) * 1000;
    const exp = typeof claims.exp === 'number' ? claims.exp : 0;
    // expires_in is relative, so a skewed local clock does not matter; `exp` is the fallback.
    const expiresAt = lifetimeMs > 0 ? Date.now() + lifetimeMs : exp * 1000 || Date.now() + 60_000;
    this.state = {
      accessToken: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresAt,
      lifetimeMs: lifetimeMs || expiresAt - Date.now(),
      username: typeof claims.name === 'string' ? claims.name : (this.state?.username ?? null),
      userId: typeof claims.sub === 'string' ? claims.sub : (this.state?.userId ?? null),
      roles: Array.isArray(claims.roles) ? claims.roles.filter((r): r is string => typeof r === 'string') : [],
    };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.state));
    this.schedule();
  }

  /** Plans the next refresh: a minute before expiry, or at 80% of a shorter lifetime. */
  schedule(delay: number | null = null): void {
    if (this.timer) clearTimeout(this.timer);
    if (!this.state) return;
    const margin = Math.min(REFRESH_MARGIN_MS, (this.state.lifetimeMs || 0) * 0.2);
    const wait = delay ?? Math.max(1_000, this.state.expiresAt - margin - Date.now());
    this.timer = setTimeout(() => void this.refresh(), wait);
  }
}
