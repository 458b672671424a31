// The signed-in session: tokens in memory, mirrored to sessionStorage (this tab only, gone when
// it closes; never localStorage), the access token refreshed shortly before it expires.

const STORAGE_KEY = 'courier.session';
/** Refresh this long before expiry (or at 80% of a very short lifetime). */
const REFRESH_MARGIN_MS = 60_000;
/** After a failed refresh that may be temporary (network), try again after this. */
const RETRY_MS = 10_000;

/** The payload of a JWT (not verified: only to read `exp` and `name` for display). */
export function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(
      Array.from(atob(part), (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).join(''),
    );
    return JSON.parse(json);
  } catch {
    return {};
  }
}

export class Session {
  /** @param api the REST client (login, refresh, me). */
  constructor(api = null) {
    this.api = api;
    this.state = null; // {accessToken, refreshToken, expiresAt, username}
    this.listeners = new Set();
    this.timer = null;
    this.refreshing = null;
  }

  get signedIn() {
    return this.state !== null;
  }

  get username() {
    return this.state?.username ?? null;
  }

  /** The access token, or null when signed out. */
  token() {
    return this.state?.accessToken ?? null;
  }

  /** Calls `listener(reason)` on sign-in, refresh and sign-out. */
  onChange(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(reason) {
    for (const listener of this.listeners) listener(reason);
  }

  /** Takes the session kept by this tab, refreshing it first when its access token expired. */
  async restore() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || 'null');
    } catch {
      saved = null;
    }
    if (!saved || typeof saved.refreshToken !== 'string') return false;
    this.state = saved;
    if (saved.expiresAt - Date.now() < REFRESH_MARGIN_MS / 2) {
      return this.refresh();
    }
    this.schedule();
    this.emit('restored');
    return true;
  }

  async login(username, password) {
    this.accept(await this.api.login(username, password));
    this.emit('signed-in');
  }

  /** Registers, then signs in with the same credentials. */
  async register(username, password) {
    await this.api.register(username, password);
    await this.login(username, password);
  }

  /** Forgets the tokens (this api has no server-side sign-out; the refresh token expires). */
  signOut(reason = 'signed-out') {
    clearTimeout(this.timer);
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
  refresh() {
    if (!this.state) return Promise.resolve(false);
    if (!this.refreshing) {
      const refreshToken = this.state.refreshToken;
      this.refreshing = this.api
        .refresh(refreshToken)
        .then((pair) => {
          this.accept(pair);
          this.emit('refreshed');
          return true;
        })
        .catch((err) => {
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

  accept(pair) {
    const claims = jwtClaims(pair.access_token);
    const lifetimeMs = (Number(pair.expires_in) || 0) * 1000;
    // expires_in is relative, so a skewed local clock does not matter; `exp` is the fallback.
    const expiresAt = lifetimeMs > 0 ? Date.now() + lifetimeMs : (claims.exp ?? 0) * 1000 || Date.now() + 60_000;
    this.state = {
      accessToken: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresAt,
      lifetimeMs: lifetimeMs || expiresAt - Date.now(),
      username: claims.name ?? this.state?.username ?? null,
    };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.state));
    this.schedule();
  }

  /** Plans the next refresh: a minute before expiry, or at 80% of a shorter lifetime. */
  schedule(delay = null) {
    clearTimeout(this.timer);
    if (!this.state) return;
    const margin = Math.min(REFRESH_MARGIN_MS, (this.state.lifetimeMs || 0) * 0.2);
    const wait = delay ?? Math.max(1_000, this.state.expiresAt - margin - Date.now());
    this.timer = setTimeout(() => this.refresh(), wait);
  }
}
