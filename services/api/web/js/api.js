// The REST client: JSON in and out, the access token when signed in, one refresh-and-retry on
// an expired token, and errors as ApiError with the api's code, message and failing fields.

/** An error answer of the api (`{"error": {code, message, fields?}}`) or a network failure. */
export class ApiError extends Error {
  constructor(status, code, message, fields = [], retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    /** HTTP status; 0 when the api could not be reached. */
    this.status = status;
    this.code = code;
    /** `[{field, reason}]` for 422s. */
    this.fields = fields;
    /** Seconds, for 429s. */
    this.retryAfter = retryAfter;
  }
}

/**
 * @param {{token: () => string|null, refresh: () => Promise<boolean>}} auth  the session: its
 *   current access token, and a refresh that resolves true when a new token is in place.
 */
export function createApi(auth) {
  async function send(method, path, { body, ifMatch, contentType = 'application/json', signal, retried = false, anonymous = false } = {}) {
    const headers = { accept: 'application/json' };
    const token = anonymous ? null : auth.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (ifMatch) headers['if-match'] = ifMatch;
    if (body !== undefined) headers['content-type'] = contentType;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'network', 'Cannot reach the Courier api. Check your connection and retry.');
    }
    // An access token that expired meanwhile: refresh once, then repeat the request.
    if (response.status === 401 && token && !retried && (await auth.refresh())) {
      return send(method, path, { body, ifMatch, contentType, signal, retried: true });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      const retryAfter = Number(response.headers.get('retry-after')) || null;
      throw new ApiError(
        response.status,
        error.code || `http_${response.status}`,
        error.message || `The api answered ${response.status} ${response.statusText}`.trim(),
        Array.isArray(error.fields) ? error.fields : [],
        retryAfter,
      );
    }
    return { status: response.status, data, etag: response.headers.get('etag') };
  }

  const collectionPath = (name) => `/api/v1/${encodeURIComponent(name)}`;
  const documentPath = (name, id) => `${collectionPath(name)}/${encodeURIComponent(id)}`;

  return {
    /** The declared collections: `[{name, schema, access: {read, write}, tasks}]`. */
    async collections() {
      return (await send('GET', '/api/v1/collections')).data.items;
    },
    /** One page: `{items, next}`. */
    async list(name, { cursor = null, limit = 25, sort = '', signal } = {}) {
      const query = new URLSearchParams({ limit: String(limit) });
      if (sort) query.set('sort', sort);
      if (cursor) query.set('cursor', cursor);
      return (await send('GET', `${collectionPath(name)}?${query}`, { signal })).data;
    },
    /** `{doc, etag}`. */
    async get(name, id) {
      const { data, etag } = await send('GET', documentPath(name, id));
      return { doc: data, etag };
    },
    async create(name, doc) {
      const { data, etag } = await send('POST', collectionPath(name), { body: doc });
      return { doc: data, etag };
    },
    /** JSON merge patch, only if the document still has `etag` (412 otherwise). */
    async patch(name, id, patch, etag) {
      const { data, etag: newEtag } = await send('PATCH', documentPath(name, id), {
        body: patch,
        ifMatch: etag,
        contentType: 'application/merge-patch+json',
      });
      return { doc: data, etag: newEtag };
    },
    async remove(name, id, etag) {
      await send('DELETE', documentPath(name, id), { ifMatch: etag });
    },
    async register(username, password) {
      return (await send('POST', '/api/v1/auth/register', { body: { username, password }, anonymous: true })).data;
    },
    /** `{access_token, refresh_token, token_type, expires_in}`. */
    async login(username, password) {
      return (await send('POST', '/api/v1/auth/login', { body: { username, password }, anonymous: true })).data;
    },
    async refresh(refreshToken) {
      return (await send('POST', '/api/v1/auth/refresh', { body: { refresh_token: refreshToken }, anonymous: true })).data;
    },
    async me() {
      return (await send('GET', '/api/v1/auth/me')).data;
    },
    async appConfig() {
      return (await send('GET', '/app-config.json', { anonymous: true })).data;
    },
  };
}
