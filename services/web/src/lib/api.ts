// The REST client: JSON in and out, the access token when signed in, one refresh-and-retry on
// an expired token, and errors as ApiError with the api's code, message and failing fields.

export interface FieldError {
  field: string;
  reason: string;
}

/** An error answer of the api (`{"error": {code, message, fields?}}`) or a network failure. */
export class ApiError extends Error {
  constructor(
    /** HTTP status; 0 when the api could not be reached. */
    public status: number,
    public code: string,
    message: string,
    /** `[{field, reason}]` for 422s. */
    public fields: FieldError[] = [],
    /** Seconds, for 429s. */
    public retryAfter: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type Doc = { id: string } & Record<string, Json>;

export interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  required?: string[];
  enum?: Json[];
  readOnly?: boolean;
  description?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  maxItems?: number;
  format?: string;
}

/** An access rule: one alternative, or a list of them any of which admits the caller. */
export type AccessRule = string | string[];

export interface Collection {
  name: string;
  schema?: JsonSchema;
  /**
   * `public`, `authenticated`, `owner`, `field:<name>` or `role:<name>`, or several of these
   * (any of which admits), comma separated (`owner, field:shared_with`) or as a list; absent
   * means public.
   */
  access?: { read?: AccessRule; write?: AccessRule };
  tasks?: { kind: string }[];
}

/** A rule's alternatives: the api writes a rule of several as text (`owner, field:shared_with`). */
export function alternatives(rule: AccessRule | undefined): string[] {
  if (rule === undefined) return ['public'];
  const parts = (Array.isArray(rule) ? rule : rule.split(',')).map((part) => part.trim()).filter((part) => part !== '');
  return parts.length > 0 ? parts : ['public'];
}

/** Whether an access rule asks for a signed-in user: no `public` among its alternatives. */
export function needsSignIn(rule: AccessRule | undefined): boolean {
  return !alternatives(rule).includes('public');
}

/**
 * Whether a read rule admits per document (`owner`, `field:<name>`) rather than the whole
 * collection: each user then sees their own documents and those shared with them.
 */
export function perDocument(rule: AccessRule | undefined): boolean {
  const all = alternatives(rule);
  return !all.includes('public') && !all.includes('authenticated') && all.some((a) => a === 'owner' || a.startsWith('field:'));
}

/** The field names a rule shares through (`field:shared_with` → `shared_with`). */
export function sharingFields(rule: AccessRule | undefined): string[] {
  return alternatives(rule)
    .filter((a) => a.startsWith('field:'))
    .map((a) => a.slice('field:'.length));
}

/** A rule as the console shows it: `owner, field:shared_with`. */
export function ruleText(rule: AccessRule | undefined): string {
  return alternatives(rule).join(', ');
}

export interface Page<T> {
  items: T[];
  next: string | null;
  /** id → version of each listed document (lists only; what live events reconcile with). */
  versions?: Record<string, number>;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type?: string;
  expires_in?: number;
}

export interface Auth {
  token: () => string | null;
  refresh: () => Promise<boolean>;
}

interface SendOptions {
  body?: unknown;
  ifMatch?: string | null;
  contentType?: string;
  signal?: AbortSignal;
  retried?: boolean;
  anonymous?: boolean;
}

/** `/app-config.json`: where the broadcaster is, and whether the api takes web telemetry. */
export interface AppConfig {
  ws_url?: string;
  version?: string;
  telemetry?: boolean;
}

export interface Reply<T> {
  status: number;
  data: T;
  etag: string | null;
}

/** One finished api call, as the browser saw it (`status` 0: no answer), for telemetry. */
export type ObserveCall = (path: string, method: string, status: number, ms: number) => void;

export function createApi(auth: Auth, observe: ObserveCall = () => {}) {
  async function send<T>(method: string, path: string, options: SendOptions = {}): Promise<Reply<T>> {
    const { body, ifMatch, contentType = 'application/json', signal, retried = false, anonymous = false } = options;
    const headers: Record<string, string> = { accept: 'application/json' };
    const token = anonymous ? null : auth.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (ifMatch) headers['if-match'] = ifMatch;
    if (body !== undefined) headers['content-type'] = contentType;
    let response: Response;
    const started = performance.now();
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ?? null,
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (err) {
      if (err instanceof DOMException && err.name === 'AbortError') throw err;
      observe(path, method, 0, performance.now() - started);
      throw new ApiError(0, 'network', 'Cannot reach the Courier api. Check your connection and retry.');
    }
    observe(path, method, response.status, performance.now() - started);
    // An access token that expired meanwhile: refresh once, then repeat the request.
    if (response.status === 401 && token && !retried && (await auth.refresh())) {
      return send<T>(method, path, { ...options, retried: true });
    }
    const text = await response.text();
    let data: unknown = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = (data as { error?: { code?: string; message?: string; fields?: FieldError[] } } | null)?.error ?? {};
      const retryAfter = Number(response.headers.get('retry-after')) || null;
      throw new ApiError(
        response.status,
        error.code || `http_${response.status}`,
        error.message || `The api answered ${response.status} ${response.statusText}`.trim(),
        Array.isArray(error.fields) ? error.fields : [],
        retryAfter,
      );
    }
    return { status: response.status, data: data as T, etag: response.headers.get('etag') };
  }

  const collectionPath = (name: string) => `/api/v1/${encodeURIComponent(name)}`;
  const documentPath = (name: string, id: string) => `${collectionPath(name)}/${encodeURIComponent(id)}`;

  return {
    send,
    /** The declared collections. */
    async collections(): Promise<Collection[]> {
      return (await send<{ items: Collection[] }>('GET', '/api/v1/collections')).data.items;
    },
    /**
     * One page: `{items, next, versions}`. `filter` holds the list's filter parameters
     * (`[["species", "Dog"], ["age[gte]", "3"]]`, lib/filter.ts).
     */
    async list(
      name: string,
      { cursor = null, limit = 25, sort = '', filter = [], signal }: { cursor?: string | null; limit?: number; sort?: string; filter?: [string, string][]; signal?: AbortSignal } = {},
    ): Promise<Page<Doc>> {
      const query = new URLSearchParams({ limit: String(limit) });
      if (sort) query.set('sort', sort);
      if (cursor) query.set('cursor', cursor);
      for (const [key, value] of filter) query.append(key, value);
      return (await send<Page<Doc>>('GET', `${collectionPath(name)}?${query}`, signal ? { signal } : {})).data;
    },
    async get(name: string, id: string): Promise<{ doc: Doc; etag: string | null }> {
      const { data, etag } = await send<Doc>('GET', documentPath(name, id));
      return { doc: data, etag };
    },
    async create(name: string, doc: Record<string, Json>): Promise<{ doc: Doc; etag: string | null }> {
      const { data, etag } = await send<Doc>('POST', collectionPath(name), { body: doc });
      return { doc: data, etag };
    },
    /** JSON merge patch, only if the document still has `etag` (412 otherwise). */
    async patch(name: string, id: string, patch: Record<string, Json>, etag: string | null): Promise<{ doc: Doc; etag: string | null }> {
      const { data, etag: newEtag } = await send<Doc>('PATCH', documentPath(name, id), {
        body: patch,
        ifMatch: etag,
        contentType: 'application/merge-patch+json',
      });
      return { doc: data, etag: newEtag };
    },
    async remove(name: string, id: string, etag: string | null): Promise<void> {
      await send('DELETE', documentPath(name, id), { ifMatch: etag });
    },
    async register(username: string, password: string): Promise<unknown> {
      return (await send('POST', '/api/v1/auth/register', { body: { username, password }, anonymous: true })).data;
    },
    async login(username: string, password: string): Promise<TokenPair> {
      return (await send<TokenPair>('POST', '/api/v1/auth/login', { body: { username, password }, anonymous: true })).data;
    },
    async refresh(refreshToken: string): Promise<TokenPair> {
      return (await send<TokenPair>('POST', '/api/v1/auth/refresh', { body: { refresh_token: refreshToken }, anonymous: true })).data;
    },
    /** Revokes `refreshToken` on the server (the access token goes along to say who asks). */
    async logout(refreshToken: string): Promise<unknown> {
      return (await send('POST', '/api/v1/auth/logout', { body: { refresh_token: refreshToken }, retried: true })).data;
    },
    async me(): Promise<{ username: string; roles?: string[] }> {
      return (await send<{ username: string; roles?: string[] }>('GET', '/api/v1/auth/me')).data;
    },
    async appConfig(): Promise<AppConfig> {
      return (await send<AppConfig>('GET', '/app-config.json', { anonymous: true })).data;
    },
  };
}

export type Api = ReturnType<typeof createApi>;
