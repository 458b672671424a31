// Browser tests of Courier's web app (services/web, embedded in the api), against a real stack started by
// tests/e2e/web_app.rs: api + broadcaster process + worker + nats-server + store.
//
//   COURIER_WEB_URL          the api (serves the app at /)                 (required)
//   COURIER_CHROMIUM         the browser (default /usr/bin/chromium)
//   COURIER_WEB_SCREENSHOTS  a directory: save screenshots there
//   COURIER_WEB_ONLY         run only scenarios whose name contains this
//   COURIER_TEST_CONTROL=stdio  the driver stops/restarts the broadcaster on request

import { createServer } from 'node:net';
import { assert, assertClean, control, env, eventually, http, runAll, scenario, screenshot } from './lib.mjs';

const PASSWORD = 'correct horse battery';
let counter = 0;
const unique = (prefix) => `${prefix}-${Date.now().toString(36)}-${(counter += 1)}`;

/** Console errors Chromium itself prints for expected 4xx answers and broadcaster outages. */
const HTTP_ERROR = (status) => new RegExp(`Failed to load resource: the server responded with a status of ${status}`);
const WS_FAILED = /WebSocket connection to .* failed/;
/** Sign-out asks the api to revoke the refresh token (POST /api/v1/auth/logout); an api without
 * that route answers 405, which the page takes as signed out anyway. */

async function openApp(open, hash = '#/products', options) {
  const page = await open(options);
  await page.goto(`${env.webUrl}/${hash}`);
  await page.locator('#connection[data-state="open"]').waitFor();
  await page.locator('.table-status', { hasText: /shown|yet|Sign in/ }).waitFor();
  return page;
}

const row = (page, id) => page.locator(`tbody tr[data-id="${id}"]`);
const cell = (page, id, field) => row(page, id).locator(`td[data-field="${field}"]`);
const dialog = (page) => page.locator('dialog[open]');
/** A row's Edit or Delete button (their accessible names are "Edit <title>", "Delete <title>"). */
const rowButton = (page, id, action) => row(page, id).getByRole('button', { name: new RegExp(`^${action} `) });
const logEvents = (page, type, id) => page.locator(`#event-log li.log-event[data-type="${type}"][data-doc-id="${id}"]`);

async function createViaHttp(collection, body, token) {
  const { status, data } = await http('POST', `/api/v1/${collection}`, { body, token });
  assert.equal(status, 201, JSON.stringify(data));
  return data;
}

async function signUp(page, username) {
  await page.getByRole('button', { name: 'Create account' }).click();
  await dialog(page).getByLabel('Username').fill(username);
  await dialog(page).getByLabel('Password').fill(PASSWORD);
  await dialog(page).getByRole('button', { name: 'Create account' }).click();
  await page.locator('.user-name', { hasText: username }).waitFor();
  await dialog(page).waitFor({ state: 'detached' });
}

async function signIn(page, username, password = PASSWORD) {
  await dialog(page).getByLabel('Username').fill(username);
  await dialog(page).getByLabel('Password').fill(password);
  await dialog(page).getByRole('button', { name: 'Sign in' }).click();
}

async function apiToken(username) {
  await http('POST', '/api/v1/auth/register', { body: { username, password: PASSWORD } });
  const { status, data } = await http('POST', '/api/v1/auth/login', { body: { username, password: PASSWORD } });
  assert.equal(status, 200, JSON.stringify(data));
  return data.access_token;
}

// --- scenarios -------------------------------------------------------------------------------

scenario('the page loads with its security headers, no console errors and no CSP violations', async ({ open }) => {
  const index = await fetch(`${env.webUrl}/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type'), /^text\/html/);
  assert.match(index.headers.get('content-security-policy'), /default-src 'self'.*connect-src 'self' ws: wss:/);
  assert.equal(index.headers.get('x-content-type-options'), 'nosniff');
  assert.ok(index.headers.get('referrer-policy'));
  // The page's script is a hashed bundle file, cached for good; the page itself revalidates.
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const script = (await index.text()).match(/<script type="module"[^>]* src="(\/static\/assets\/[^"]+\.js)"/)?.[1];
  assert.ok(script, 'index.html loads a hashed bundle');
  const bundle = await fetch(`${env.webUrl}${script}`);
  assert.equal(bundle.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(bundle.headers.get('cache-control'), 'public, max-age=31536000, immutable');

  const page = await openApp(open, '');
  assert.equal(await page.locator('h1').textContent(), 'desks', 'the first collection opens by default');
  const names = await page.locator('#collection-list a .nav-name').allTextContents();
  assert.deepEqual(names, ['desks', 'memos', 'notes', 'pets', 'products']);
  await page.getByRole('link', { name: 'products' }).click();
  await page.locator('h1', { hasText: 'products' }).waitFor();
  assert.match(page.url(), /#\/products$/);
  assert.deepEqual(await page.locator('thead th').allTextContents(), ['id', 'nombre', 'precio', 'talla', 'Actions']);
  await screenshot(page, 'products-empty');

  // The broadcaster address: configured (absolute or a path) or the page's host on :8765.
  const urls = await page.evaluate(async () => {
    const { resolveWsUrl } = window.courier;
    const http = { protocol: 'http:', hostname: 'courier.test', host: 'courier.test:8000' };
    const https = { protocol: 'https:', hostname: 'courier.test', host: 'courier.test' };
    return [resolveWsUrl('', http), resolveWsUrl('', https), resolveWsUrl('/ws', https), resolveWsUrl('/ws', http), resolveWsUrl('wss://live.test/ws', http)];
  });
  assert.deepEqual(urls, ['ws://courier.test:8765/ws', 'wss://courier.test:8765/ws', 'wss://courier.test/ws', 'ws://courier.test:8000/ws', 'wss://live.test/ws']);
  await assertClean(page);

  // The policy is in force: an injected inline script does not run and is reported.
  const ran = await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.__inline = true';
    document.body.append(script);
    return window.__inline === true;
  });
  assert.equal(ran, false, 'inline script must be blocked by the CSP');
  await eventually('the CSP violation report', () => page.evaluate(() => window.__csp.length === 1));
  await page.evaluate(() => (window.__csp = []));
  page.problems.console.length = 0;
});

scenario('register, sign out, sign in (tokens in sessionStorage only)', async ({ open }) => {
  const page = await openApp(open);
  const username = unique('web');

  // A weak password: the api's 422 is shown next to the password field.
  await page.getByRole('button', { name: 'Create account' }).click();
  await dialog(page).getByLabel('Username').fill(username);
  await dialog(page).getByLabel('Password').fill('short');
  await dialog(page).getByRole('button', { name: 'Create account' }).click();
  await dialog(page).locator('#auth-password-error', { hasText: 'password must be at least 8 characters' }).waitFor();
  assert.equal(await dialog(page).getByLabel('Password').getAttribute('aria-invalid'), 'true');
  await dialog(page).getByRole('button', { name: 'Close' }).click();

  await signUp(page, username);
  const storage = await page.evaluate(() => ({ session: sessionStorage.getItem('courier.session'), local: localStorage.length }));
  assert.ok(JSON.parse(storage.session).refreshToken, 'the session is kept in sessionStorage');
  assert.equal(storage.local, 0, 'nothing in localStorage');
  const me = await http('GET', '/api/v1/auth/me', { token: JSON.parse(storage.session).accessToken });
  assert.equal(me.data.username, username);

  // A reload keeps the session (same tab).
  await page.reload();
  await page.locator('.user-name', { hasText: username }).waitFor();

  // Sign-out asks the api to revoke the refresh token, then forgets the session either way.
  const { refreshToken } = JSON.parse(await page.evaluate(() => sessionStorage.getItem('courier.session')));
  const logout = page.waitForResponse((r) => r.url().endsWith('/api/v1/auth/logout') && r.request().method() === 'POST');
  await page.getByRole('button', { name: 'Sign out' }).click();
  const answer = await logout;
  assert.equal(answer.request().postDataJSON().refresh_token, refreshToken);
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('courier.session')), null);
  assert.ok(answer.ok(), `logout answered ${answer.status()}`);
  const reuse = await http('POST', '/api/v1/auth/refresh', { body: { refresh_token: refreshToken } });
  assert.equal(reuse.status, 401, 'the api revoked the refresh token at sign-out');

  await page.getByRole('button', { name: 'Sign in' }).click();
  await signIn(page, username, 'wrong password!');
  await dialog(page).locator('.banner-error', { hasText: 'Invalid username or password' }).waitFor();
  await signIn(page, username);
  await page.locator('.user-name', { hasText: username }).waitFor();
  await assertClean(page, [HTTP_ERROR(401), HTTP_ERROR(422)]);
});

scenario('the access token is refreshed before it expires', async ({ open }) => {
  const page = await openApp(open);
  const username = unique('refresh');
  await signUp(page, username);
  const first = await page.evaluate(() => JSON.parse(sessionStorage.getItem('courier.session')));
  // Pretend the token expires in 62 s: the refresh is planned a minute before, so in ~2 s.
  await page.evaluate(() => {
    const saved = JSON.parse(sessionStorage.getItem('courier.session'));
    saved.expiresAt = Date.now() + 62_000;
    sessionStorage.setItem('courier.session', JSON.stringify(saved));
  });
  await page.reload();
  await page.locator('.user-name', { hasText: username }).waitFor();
  const second = await eventually('a new token pair', async () => {
    const now = await page.evaluate(() => JSON.parse(sessionStorage.getItem('courier.session')));
    return now && now.refreshToken !== first.refreshToken ? now : null;
  });
  assert.notEqual(second.accessToken, first.accessToken);
  assert.ok(second.expiresAt > Date.now() + 5 * 60_000, 'the new token has a full lifetime');
  assert.equal((await http('GET', '/api/v1/auth/me', { token: second.accessToken })).data.username, username);
  // The old refresh token was used up by the rotation (presenting it again is refused).
  const reuse = await http('POST', '/api/v1/auth/refresh', { body: { refresh_token: first.refreshToken } });
  assert.equal(reuse.status, 401);
  await assertClean(page);
});

scenario('a product created in the UI appears in the table and the log once', async ({ open }) => {
  const page = await openApp(open);
  const name = unique('Camiseta');
  await page.getByRole('button', { name: 'New product' }).click();
  const form = dialog(page);
  await form.getByLabel('nombre').fill(name);
  await form.getByLabel('precio').fill('25.99');
  await form.getByLabel('talla').fill('M');
  await form.getByRole('button', { name: 'Create' }).click();
  await form.waitFor({ state: 'detached' });
  const id = await page.locator('tbody tr', { hasText: name }).getAttribute('data-id');
  assert.match(id, /^[0-9a-f]{24}$/);
  assert.equal(await cell(page, id, 'precio').textContent(), '25.99');
  const stored = await http('GET', `/api/v1/products/${id}`);
  assert.deepEqual(stored.data, { id, nombre: name, precio: 25.99, talla: 'M' });
  await logEvents(page, 'products.created', id).waitFor();
  await page.waitForTimeout(300);
  assert.equal(await row(page, id).count(), 1, 'one row');
  assert.equal(await logEvents(page, 'products.created', id).count(), 1, 'one log entry');
  await screenshot(page, 'products-created');
  await assertClean(page);
});

scenario('a 422 shows each field’s message next to it', async ({ open }) => {
  const page = await openApp(open);
  await page.getByRole('button', { name: 'New product' }).click();
  const form = dialog(page);
  await form.getByLabel('precio').fill('-5');
  await form.getByRole('button', { name: 'Create' }).click();
  const precioError = form.locator('[data-field="precio"] .field-error');
  await precioError.waitFor();
  assert.match(await precioError.textContent(), /minimum of 0/);
  assert.match(await form.locator('[data-field="nombre"] .field-error').textContent(), /nombre is required/);
  assert.equal(await form.getByLabel('precio').getAttribute('aria-invalid'), 'true');
  assert.equal(await form.locator('[data-field="talla"] .field-error').isVisible(), false, 'talla is fine');
  await screenshot(page, 'products-422');
  // Fixing the fields clears the errors and creates the product.
  await form.getByLabel('nombre').fill(unique('Fixed'));
  await form.getByLabel('precio').fill('5');
  await form.getByRole('button', { name: 'Create' }).click();
  await form.waitFor({ state: 'detached' });
  await assertClean(page, [HTTP_ERROR(422)]);
});

scenario('changes by another client appear live, without reload', async ({ open }) => {
  const page = await openApp(open);
  const created = await createViaHttp('products', { nombre: unique('Remote'), precio: 10, talla: 'S' });
  await row(page, created.id).waitFor({ timeout: 5_000 });
  await logEvents(page, 'products.created', created.id).waitFor();

  const patched = await http('PATCH', `/api/v1/products/${created.id}`, { body: { precio: 12.5 }, contentType: 'application/merge-patch+json' });
  assert.equal(patched.status, 200);
  await eventually('the live update', async () => (await cell(page, created.id, 'precio').textContent()) === '12.5');

  const deleted = await http('DELETE', `/api/v1/products/${created.id}`);
  assert.equal(deleted.status, 204);
  await row(page, created.id).waitFor({ state: 'detached' });
  await logEvents(page, 'products.deleted', created.id).waitFor();
  for (const type of ['products.created', 'products.updated', 'products.deleted']) {
    assert.equal(await logEvents(page, type, created.id).count(), 1, type);
  }
  await assertClean(page);
});

scenario('edit and delete through the UI', async ({ open }) => {
  const created = await createViaHttp('products', { nombre: unique('Editable'), precio: 30, talla: 'L' });
  const page = await openApp(open);
  await row(page, created.id).waitFor();

  await rowButton(page, created.id, 'Edit').click();
  const form = dialog(page);
  assert.equal(await form.getByLabel('precio').inputValue(), '30');
  await form.getByLabel('precio').fill('31.5');
  await form.getByLabel('talla').fill('');
  await form.getByRole('button', { name: 'Save' }).click();
  await form.waitFor({ state: 'detached' });
  await eventually('the edited cell', async () => (await cell(page, created.id, 'precio').textContent()) === '31.5');
  const stored = await http('GET', `/api/v1/products/${created.id}`);
  assert.deepEqual(stored.data, { id: created.id, nombre: created.nombre, precio: 31.5 }, 'PATCH changed precio and removed talla');
  assert.equal(stored.headers.get('etag'), '"2"');

  await rowButton(page, created.id, 'Delete').click();
  await dialog(page).getByRole('button', { name: 'Delete' }).click();
  await row(page, created.id).waitFor({ state: 'detached' });
  assert.equal((await http('GET', `/api/v1/products/${created.id}`)).status, 404);
  await assertClean(page);
});

scenario('an If-Match conflict is explained, and can be resolved keeping both changes', async ({ open }) => {
  const created = await createViaHttp('products', { nombre: unique('Contested'), precio: 40, talla: 'M' });
  const page = await openApp(open);
  await rowButton(page, created.id, 'Edit').click();
  const form = dialog(page);
  await form.getByLabel('precio').fill('41');

  // Meanwhile another client renames it.
  const theirs = `${created.nombre} (renamed)`;
  const other = await http('PATCH', `/api/v1/products/${created.id}`, { body: { nombre: theirs }, contentType: 'application/merge-patch+json' });
  assert.equal(other.status, 200);
  await form.locator('.banner-warning', { hasText: 'Someone else just changed this document' }).waitFor();

  await form.getByRole('button', { name: 'Save' }).click();
  const conflict = form.locator('.banner-error[data-code="conflict"]');
  await conflict.waitFor();
  assert.match(await conflict.textContent(), /changed by someone else.*not saved.*412/s);
  await screenshot(page, 'products-412');
  assert.equal((await http('GET', `/api/v1/products/${created.id}`)).data.nombre, theirs, 'their change was not overwritten');

  await form.getByRole('button', { name: 'Keep my edits on top of theirs' }).click();
  await form.locator('.etag', { hasText: '"2"' }).waitFor();
  assert.equal(await form.getByLabel('nombre').inputValue(), theirs);
  assert.equal(await form.getByLabel('precio').inputValue(), '41');
  await form.getByRole('button', { name: 'Save' }).click();
  await form.waitFor({ state: 'detached' });
  const stored = await http('GET', `/api/v1/products/${created.id}`);
  assert.deepEqual({ nombre: stored.data.nombre, precio: stored.data.precio }, { nombre: theirs, precio: 41 });
  await assertClean(page, [HTTP_ERROR(412)]);
});

scenario('pets need sign-in to write; a new pet is enriched live by the workers', async ({ open }) => {
  const page = await openApp(open, '#/pets');
  await page.locator('.notice', { hasText: 'requires signing in' }).waitFor();
  assert.equal(await page.getByRole('button', { name: 'New pet' }).isDisabled(), true);
  const username = unique('petowner');
  await apiToken(username);
  await page.locator('.notice').getByRole('button', { name: 'Sign in' }).click();
  await signIn(page, username);
  await page.locator('.user-name', { hasText: username }).waitFor();
  await eventually('the New pet button', () => page.getByRole('button', { name: 'New pet' }).isEnabled());
  assert.equal(await page.locator('.notice').isVisible(), false);

  const name = unique('Rex');
  await page.getByRole('button', { name: 'New pet' }).click();
  const form = dialog(page);
  assert.equal(await form.locator('[data-field="enrichment"]').count(), 0, 'read-only fields are not in the create form');
  await form.getByLabel('name').fill(name);
  await form.getByLabel('species').fill('Dog');
  await form.getByLabel('age').fill('3');
  await form.getByLabel('vaccinated').selectOption({ label: 'No' });
  assert.equal(await form.locator('[data-field="owner"]').count(), 0, 'owner is read-only: the api records the creator');
  await form.getByRole('button', { name: 'Create' }).click();
  await form.waitFor({ state: 'detached' });
  const id = await page.locator('tbody tr', { hasText: name }).getAttribute('data-id');

  // The worker's pets.enrich result arrives as pets.enriched and fills the read-only column.
  await logEvents(page, 'pets.enriched', id).waitFor({ timeout: 20_000 });
  await eventually('the enrichment cell', async () => /alert/.test(await cell(page, id, 'enrichment').textContent()));
  const stored = await http('GET', `/api/v1/pets/${id}`);
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('courier.session')).accessToken);
  const me = await http('GET', '/api/v1/auth/me', { token });
  assert.equal(stored.data.created_by, me.data.id, 'the creator, from the token');
  assert.equal(stored.data.vaccinated, false);
  assert.ok(stored.data.enrichment, 'stored with its enrichment');

  // Editing shows the enrichment read-only and never sends it.
  await rowButton(page, id, 'Edit').click();
  assert.match(await dialog(page).locator('[data-field="enrichment"] pre').textContent(), /not_vaccinated/);
  await dialog(page).getByLabel('vaccinated').selectOption({ label: 'Yes' });
  await dialog(page).getByRole('button', { name: 'Save' }).click();
  await dialog(page).waitFor({ state: 'detached' });
  await eventually('the re-enriched pet', async () => {
    const { data } = await http('GET', `/api/v1/pets/${id}`);
    return data.vaccinated === true && data.enrichment.alerts.every((a) => a.code !== 'not_vaccinated');
  }, 20_000);
  await screenshot(page, 'pets');

  // Signed out, writes are refused in the UI again.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await eventually('disabled buttons', () => rowButton(page, id, 'Edit').isDisabled());
  assert.equal(await page.getByRole('button', { name: 'New pet' }).isDisabled(), true);
  await assertClean(page);
});

scenario('a collection that needs sign-in to read: list and live channel use the token', async ({ open }) => {
  const page = await openApp(open, '#/memos');
  await page.locator('.notice', { hasText: 'Reading memos requires signing in' }).waitFor();
  assert.equal(await page.locator('tbody tr').count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Reload' }).isDisabled(), true);
  const username = unique('reader');
  const token = await apiToken(username);
  await page.locator('.notice').getByRole('button', { name: 'Sign in' }).click();
  await signIn(page, username);
  await page.locator('.table-status', { hasText: /No memos yet|shown/ }).waitFor();
  assert.equal(await page.locator('.notice').isVisible(), false);

  // Another client's note arrives live: the subscription carried the token.
  const theirs = await createViaHttp('memos', { title: unique('From the api'), priority: 'low' }, token);
  await row(page, theirs.id).waitFor();
  assert.equal(await cell(page, theirs.id, 'priority').textContent(), 'low');

  // The enum is a choice, the boolean a yes/no.
  await page.getByRole('button', { name: 'New memo' }).click();
  const form = dialog(page);
  const options = await form.getByLabel('priority').locator('option').allTextContents();
  assert.deepEqual(options, ['— not set —', 'low', 'normal', 'high']);
  const title = unique('Mine');
  await form.getByLabel('title').fill(title);
  await form.getByLabel('priority').selectOption({ label: 'high' });
  await form.getByLabel('done').selectOption({ label: 'Yes' });
  await form.getByRole('button', { name: 'Create' }).click();
  await form.waitFor({ state: 'detached' });
  const id = await page.locator('tbody tr', { hasText: title }).getAttribute('data-id');
  const stored = await http('GET', `/api/v1/memos/${id}`, { token });
  const me = await http('GET', '/api/v1/auth/me', { token });
  // The api records the creator from the token (docs/security.md, ownership).
  assert.deepEqual(stored.data, { id, title, priority: 'high', done: true, created_by: me.data.id });
  await logEvents(page, 'memos.created', id).waitFor();

  // Signed out, the memos disappear from the page.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await eventually('the rows to go', async () => (await page.locator('tbody tr').count()) === 0);
  await page.locator('.notice', { hasText: 'Reading memos requires signing in' }).waitFor();
  await assertClean(page);
});

/** The JSON frames a page's WebSockets send and receive (`[direction, frame]`), from now on. */
function recordFrames(page) {
  const frames = [];
  page.on('websocket', (ws) => {
    ws.on('framesent', (f) => frames.push(['sent', JSON.parse(f.payload)]));
    ws.on('framereceived', (f) => frames.push(['received', JSON.parse(f.payload)]));
  });
  return frames;
}

/**
 * Opens `#/notes` and signs in there as `username` (already registered): private notes ask for
 * it. `page.wsFrames` records its WebSocket frames.
 */
async function notesAs(open, username) {
  const page = await open();
  page.wsFrames = recordFrames(page);
  await page.goto(`${env.webUrl}/#/notes`);
  await page.locator('#connection[data-state="open"]').waitFor();
  await page.locator('.notice', { hasText: 'Your notes are private: sign in to see yours and those shared with you.' }).waitFor();
  assert.equal(await page.locator('.table-status').textContent(), 'Sign in to see your notes.');
  assert.equal(await page.locator('tbody tr').count(), 0);
  await page.locator('.notice').getByRole('button', { name: 'Sign in' }).click();
  await signIn(page, username);
  await page.locator('.user-name', { hasText: username }).waitFor();
  await page.locator('.table-status', { hasText: /No notes yet|shown/ }).waitFor();
  return page;
}

const patchNote = async (id, body, token) => {
  const { status, data } = await http('PATCH', `/api/v1/notes/${id}`, { body, token, contentType: 'application/merge-patch+json' });
  assert.equal(status, 200, JSON.stringify(data));
  return data;
};
const logMatch = (page, id, match) => page.locator(`#event-log li.log-event[data-doc-id="${id}"][data-match="${match}"]`);

scenario('private notes, two users: a note shared and unshared live, a filter narrows the table and its live updates', async ({ open }) => {
  const ana = unique('ana');
  const bob = unique('bob');
  const anaToken = await apiToken(ana);
  const bobToken = await apiToken(bob);
  const anaPage = await notesAs(open, ana);
  const bobPage = await notesAs(open, bob);
  // Bob's id, as his page offers it for sharing.
  const bobId = (await bobPage.locator('#my-user-id').textContent()).trim();
  assert.equal(bobId, (await http('GET', '/api/v1/auth/me', { token: bobToken })).data.id);

  // Ana writes a pinned note shared with bob in her form (shared_with: one user id per line).
  const title = unique('Plan');
  await anaPage.getByRole('button', { name: 'New note' }).click();
  const form = dialog(anaPage);
  await form.getByLabel('title').fill(title);
  await form.getByLabel('body').fill('Meet at noon');
  await form.getByLabel('pinned').selectOption({ label: 'Yes' });
  assert.match(await form.locator('[data-field="shared_with"] .hint').textContent(), /one per line, or separated by commas · up to 50 items/);
  await form.getByLabel('shared_with').fill(`${bobId}\n`);
  await screenshot(anaPage, 'notes-form');
  await form.getByRole('button', { name: 'Create' }).click();
  await form.waitFor({ state: 'detached' });
  const id = await anaPage.locator('tbody tr', { hasText: title }).getAttribute('data-id');
  assert.deepEqual((await http('GET', `/api/v1/notes/${id}`, { token: anaToken })).data.shared_with, [bobId]);

  // Bob's page shows it live, marked as shared with him; only ana may change it.
  await row(bobPage, id).waitFor();
  await row(bobPage, id).locator('.badge-shared', { hasText: 'shared with you' }).waitFor();
  assert.equal(await rowButton(bobPage, id, 'Edit').isDisabled(), true);
  await logEvents(bobPage, 'notes.created', id).waitFor();

  // Bob filters on pinned = Yes: the list asks for it, and so does the subscription.
  const listed = bobPage.waitForRequest((r) => /\/api\/v1\/notes\?.*pinned=true/.test(r.url()));
  await bobPage.locator('#filter-field').selectOption('pinned');
  assert.deepEqual(await bobPage.locator('#filter-op option').allTextContents(), ['=', '≠']);
  await bobPage.locator('#filter-value').selectOption({ label: 'Yes' });
  await bobPage.getByRole('button', { name: 'Apply' }).click();
  await listed;
  const subscribe = await eventually('the filtered subscribe frame', () =>
    bobPage.wsFrames.find(([way, f]) => way === 'sent' && f.type === 'subscribe' && f.channel === 'notes' && f.filter),
  );
  assert.deepEqual(subscribe[1].filter, { pinned: true });
  assert.ok(subscribe[1].token, 'the subscription carries the access token');
  await bobPage.locator('.chip', { hasText: 'pinned = Yes' }).waitFor();
  await bobPage.locator('.table-status', { hasText: '1 document shown (filtered)' }).waitFor();
  await row(bobPage, id).waitFor();

  // Ana shares an unpinned note, then a pinned one: only the pinned one reaches bob's page.
  const loose = await createViaHttp('notes', { title: unique('Loose'), pinned: false, shared_with: [bobId] }, anaToken);
  const pinned = await createViaHttp('notes', { title: unique('Pinned'), pinned: true, shared_with: [bobId] }, anaToken);
  await row(bobPage, pinned.id).waitFor();
  // One channel's events arrive in stream order: had the unpinned note been sent, it would be here.
  assert.equal(await logEvents(bobPage, 'notes.created', loose.id).count(), 0, 'the broadcaster left the unpinned note out');
  assert.equal(await row(bobPage, loose.id).count(), 0);
  // Pinning it brings it into bob's view (enter); unpinning takes it out again (leave).
  await patchNote(loose.id, { pinned: true }, anaToken);
  await row(bobPage, loose.id).waitFor();
  await logMatch(bobPage, loose.id, 'enter').waitFor();
  await patchNote(loose.id, { pinned: false }, anaToken);
  await row(bobPage, loose.id).waitFor({ state: 'detached' });
  await logMatch(bobPage, loose.id, 'leave').waitFor();
  await bobPage.locator('.table-status', { hasText: '2 documents shown (filtered)' }).waitFor();
  await screenshot(bobPage, 'notes-bob-filtered');

  // Ana unshares the first note in her edit form: it leaves bob's page live.
  await rowButton(anaPage, id, 'Edit').click();
  const edit = dialog(anaPage);
  assert.equal(await edit.getByLabel('shared_with').inputValue(), bobId);
  await edit.getByLabel('shared_with').fill('');
  await edit.getByRole('button', { name: 'Save' }).click();
  await edit.waitFor({ state: 'detached' });
  await row(bobPage, id).waitFor({ state: 'detached' });
  await logMatch(bobPage, id, 'leave').waitFor();
  assert.match(await logMatch(bobPage, id, 'leave').textContent(), /left the view/);
  assert.equal((await http('GET', `/api/v1/notes/${id}`, { token: bobToken })).status, 404, 'bob can no longer read it');
  await eventually('ana’s row without shared_with', async () => (await cell(anaPage, id, 'shared_with').textContent()) === '—');
  assert.equal(await row(anaPage, id).count(), 1, 'still ana’s');

  // Without the filter bob's page lists every note shared with him, and only those.
  await bobPage.getByRole('button', { name: 'Remove filter pinned = Yes' }).click();
  await row(bobPage, loose.id).waitFor();
  await bobPage.locator('.table-status', { hasText: '2 documents shown' }).waitFor();
  assert.equal(await row(bobPage, id).count(), 0);
  assert.equal(await row(bobPage, pinned.id).count(), 1);
  await screenshot(bobPage, 'notes-bob');
  await screenshot(anaPage, 'notes-ana');

  // The quick filters: shared with me (both), only mine (none of them is bob's).
  await bobPage.getByRole('button', { name: 'Shared with me', exact: true }).click();
  await eventually('the shared-with-me subscription', () =>
    bobPage.wsFrames.find(([way, f]) => way === 'sent' && f.type === 'subscribe' && f.filter?.shared_with === bobId),
  );
  await bobPage.locator('.table-status', { hasText: '2 documents shown (filtered)' }).waitFor();
  await bobPage.getByRole('button', { name: 'Shared with me', exact: true }).click();
  await bobPage.getByRole('button', { name: 'Only mine', exact: true }).click();
  await bobPage.locator('.table-status', { hasText: 'No notes match the filter.' }).waitFor();
  await bobPage.getByRole('button', { name: 'Only mine', exact: true }).click();
  await bobPage.locator('.table-status', { hasText: '2 documents shown · all loaded' }).waitFor();

  // A refreshed token renews bob's subscription in place (`authenticate`), without resubscribing.
  await bobPage.evaluate(() => {
    const saved = JSON.parse(sessionStorage.getItem('courier.session'));
    saved.expiresAt = Date.now() + 62_000; // the refresh is planned a minute before: in ~2 s
    sessionStorage.setItem('courier.session', JSON.stringify(saved));
  });
  bobPage.wsFrames.length = 0;
  await bobPage.reload();
  await row(bobPage, loose.id).waitFor();
  const renewed = await eventually('the authenticated answer', () => bobPage.wsFrames.find(([way, f]) => way === 'received' && f.type === 'authenticated'));
  assert.ok(renewed[1].channels.includes('notes'), JSON.stringify(renewed[1]));
  const sent = bobPage.wsFrames.filter(([way]) => way === 'sent').map(([, f]) => f);
  const fresh = JSON.parse(await bobPage.evaluate(() => sessionStorage.getItem('courier.session'))).accessToken;
  assert.ok(sent.some((f) => f.type === 'authenticate' && f.token === fresh), 'authenticate carries the new token');
  assert.equal(sent.filter((f) => f.type === 'subscribe' && f.channel === 'notes').length, 1, 'one subscribe: renewed, not resubscribed');
  // Still live after the renewal.
  const later = await createViaHttp('notes', { title: unique('After renewal'), shared_with: [bobId] }, anaToken);
  await row(bobPage, later.id).waitFor();
  await assertClean(anaPage);
  await assertClean(bobPage);
});

scenario('after a broadcaster restart the page resumes: every event exactly once', async ({ open }) => {
  const page = await openApp(open);
  const before = await createViaHttp('products', { nombre: unique('Before'), precio: 1 });
  await logEvents(page, 'products.created', before.id).waitFor();

  await control('stop-broadcaster');
  await page.locator('#connection[data-state="reconnecting"]').waitFor();
  await screenshot(page, 'resume-offline');
  const during = [];
  for (let i = 0; i < 5; i += 1) during.push(await createViaHttp('products', { nombre: unique(`During ${i}`), precio: 2 + i }));
  const patched = await http('PATCH', `/api/v1/products/${before.id}`, { body: { precio: 99 }, contentType: 'application/merge-patch+json' });
  assert.equal(patched.status, 200);
  await control('start-broadcaster');

  await page.locator('#connection[data-state="open"]').waitFor({ timeout: 30_000 });
  for (const doc of during) await row(page, doc.id).waitFor();
  await eventually('the update made while offline', async () => (await cell(page, before.id, 'precio').textContent()) === '99');
  await page.locator('#event-log .log-notice', { hasText: /Resumed products after #\d+/ }).waitFor();
  // Anything shown twice would have arrived by now.
  await page.waitForTimeout(1_000);
  for (const doc of [before, ...during]) {
    assert.equal(await row(page, doc.id).count(), 1, `one row for ${doc.nombre}`);
    assert.equal(await logEvents(page, 'products.created', doc.id).count(), 1, `one created entry for ${doc.nombre}`);
  }
  assert.equal(await logEvents(page, 'products.updated', before.id).count(), 1, 'one updated entry');
  const seqs = await page.locator('#event-log li.log-event').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
  assert.equal(new Set(seqs).size, seqs.length, `no seq twice in the log: ${seqs}`);
  assert.deepEqual([...seqs].sort((a, b) => b - a), seqs, 'newest first, in stream order');
  await screenshot(page, 'resume-back');
  await assertClean(page, [WS_FAILED]);
});

/** The sum of the api's /metrics samples of `name` that carry every label of `labels`. */
async function metricSum(name, labels = {}) {
  const text = await (await fetch(`${env.webUrl}/metrics`)).text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .filter((line) => wanted.every((label) => line.slice(0, line.lastIndexOf(' ')).includes(label)))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

scenario('browser-side telemetry: a page that cannot reach the broadcaster shows up in the api’s metrics', async ({ open }) => {
  const failures = () => metricSum('courier_web_ws_events_total', { event: 'failure' });
  const collectionsCalls = () =>
    metricSum('courier_web_api_requests_total', { route: '/api/v1/collections', method: 'GET', status_class: '2xx' });
  const reports = () => metricSum('courier_web_telemetry_reports_total', { outcome: 'accepted' });
  const before = { failures: await failures(), calls: await collectionsCalls(), reports: await reports() };

  // The broadcaster's port is blocked for this page: its configured address is a closed port.
  const closed = await new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
  const page = await open();
  await page.route('**/app-config.json', async (route) => {
    const config = await (await route.fetch()).json();
    assert.equal(config.telemetry, true, 'the api takes web telemetry by default');
    await route.fulfill({ json: { ...config, ws_url: `ws://127.0.0.1:${closed}/ws` } });
  });
  await page.goto(`${env.webUrl}/#/products`);
  await page.locator('#connection[data-state="reconnecting"]').waitFor();
  await page.locator('.table-status', { hasText: /shown|yet|Sign in/ }).waitFor();
  await screenshot(page, 'telemetry-no-broadcaster');
  // Leaving the page sends what it saw (sendBeacon on pagehide).
  await page.goto('about:blank');
  await eventually('the report to be counted', async () => (await reports()) > before.reports);
  assert.ok((await failures()) > before.failures, 'the WebSocket failures are counted');
  assert.ok((await collectionsCalls()) > before.calls, 'the page’s api calls are counted under their route template');
  const text = await (await fetch(`${env.webUrl}/metrics`)).text();
  assert.ok(!/courier_web_[a-z_]+\{[^}]*route="[^"]*[0-9a-f]{24}/.test(text), 'no raw ids in route labels');
  await assertClean(page, [WS_FAILED]);
});

scenario('the WebSocket client against a scripted server: resume point, duplicates, recovered:false, replay_failed', async ({ open }) => {
  const page = await openApp(open);
  const result = await page.evaluate(async () => {
    const { LiveClient } = window.courier;
    const sockets = [];
    class ScriptedSocket {
      static OPEN = 1;
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        sockets.push(this);
        setTimeout(() => {
          this.readyState = 1;
          this.deliver({ type: 'connection_established', connection_id: `c${sockets.length}`, protocol: 1 });
        }, 0);
      }
      send(text) {
        this.sent.push(JSON.parse(text));
      }
      close() {
        this.readyState = 3;
      }
      deliver(frame) {
        this.onmessage?.({ data: JSON.stringify(frame) });
      }
      drop(code) {
        this.readyState = 3;
        this.onclose?.({ code });
      }
    }
    const until = async (check) => {
      for (let i = 0; i < 200 && !check(); i += 1) await new Promise((r) => setTimeout(r, 20));
      return check();
    };
    const event = (seq) => ({ type: 'event', channel: 'products', seq, event: { id: `e${seq}`, type: 'products.updated', doc_id: 'd', data: {} } });
    const real = window.WebSocket;
    window.WebSocket = ScriptedSocket;
    const seen = { events: [], resyncs: [], subscribed: [], errors: [], states: [] };
    const live = new LiveClient('ws://scripted/ws', { onStatus: (s) => seen.states.push(s.state) });
    try {
      live.subscribe('products', {
        onEvent: (_, seq) => seen.events.push(seq),
        onResync: (reason) => seen.resyncs.push(reason),
        onSubscribed: (s) => seen.subscribed.push(s),
        onError: (code) => seen.errors.push(code),
      });
      live.start();
      await until(() => sockets[0]?.sent.length === 1);
      const first = sockets[0];
      first.deliver({ type: 'subscribed', channel: 'products', seq: 10 });
      for (const seq of [11, 12, 12, 11]) first.deliver(event(seq));
      first.drop(1006);
      await until(() => sockets[1]?.sent.length === 1);
      const second = sockets[1];
      const resumeFrame = second.sent[0];
      second.deliver({ type: 'subscribed', channel: 'products', seq: 12, recovered: false });
      for (const seq of [12, 13]) second.deliver(event(seq));
      second.deliver({ type: 'error', code: 'replay_failed', channel: 'products', message: 'too much history' });
      const afterReplayFailed = second.sent[1];
      second.deliver({ type: 'subscribed', channel: 'products', seq: 40 });
      second.deliver(event(39));
      second.deliver(event(41));
      second.deliver({ type: 'error', code: 'bad_channel', channel: 'products', message: 'nope' });
      return { firstFrame: first.sent[0], resumeFrame, afterReplayFailed, ...seen, duplicates: live.stats.duplicates };
    } finally {
      live.stop();
      window.WebSocket = real;
    }
  });
  assert.deepEqual(result.firstFrame, { type: 'subscribe', channel: 'products' }, 'a fresh subscription has no since');
  assert.deepEqual(result.resumeFrame, { type: 'subscribe', channel: 'products', since: 12 }, 'resumes after the last seq delivered');
  assert.deepEqual(result.events, [11, 12, 13, 41], 'each seq once, in order');
  assert.equal(result.duplicates, 4, '12, 11, then 12 after the resume, and 39 after the fresh start at 40');
  assert.deepEqual(result.resyncs, ['history_lost'], 'recovered:false makes the view reload');
  assert.deepEqual(result.afterReplayFailed, { type: 'subscribe', channel: 'products' }, 'replay_failed: subscribe afresh');
  assert.deepEqual(result.subscribed.map((s) => s.fresh), [true, false, true], 'the fresh subscription after replay_failed makes the view reload');
  assert.deepEqual(result.errors, ['bad_channel']);
  assert.deepEqual(result.states.slice(0, 4), ['connecting', 'open', 'reconnecting', 'connecting']);
  await assertClean(page);
});

scenario('the queues panel: needs sign-in, is for administrators, and shows the task queue as the api reports it', async ({ open }) => {
  const page = await openApp(open);
  const nav = page.getByRole('navigation', { name: 'Sections' });
  await nav.getByRole('link', { name: 'Queues' }).click();
  await page.waitForURL(/#\/queues$/);
  await page.locator('.notice', { hasText: 'The queues panel requires signing in' }).waitFor();
  // A signed-in user without the admin role: no Queues link, and the panel says why.
  await signUp(page, unique('queues'));
  await page.locator('[data-state="forbidden"]', { hasText: 'Administrators only' }).waitFor();
  await eventually('the Queues link hidden from a non-admin', async () => (await nav.getByRole('link', { name: 'Queues' }).count()) === 0);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#account').getByRole('button', { name: 'Sign in' }).click();
  await signIn(page, env.adminUsername, env.adminPassword);
  await page.locator('.user-name', { hasText: env.adminUsername }).waitFor();
  await nav.getByRole('link', { name: 'Queues' }).click();
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('courier.session')).accessToken);
  const before = await http('GET', '/api/v1/queues', { token });
  assert.equal(before.status, 200);
  const [tasks] = before.data.queues;
  await page.locator('section.queue h2', { hasText: tasks.name }).waitFor();
  const stat = (name) => page.locator(`.stat[data-stat="${name}"] dd`);
  await eventually('the dead count as the api reports it', async () => (await stat('dead').textContent()) === String(tasks.dead_lettered));
  // Refreshed every 2 s: the panel catches up with (or passes) what the api said just now.
  await eventually('the processed count', async () => Number(await stat('processed').textContent()) >= tasks.processed_total);
  await eventually('the tasks waiting for external workers', async () => (await stat('external').textContent()) === String(tasks.external.queued));
  assert.equal(await nav.getByRole('link', { name: 'Queues' }).getAttribute('aria-current'), 'page');
  await screenshot(page, 'queues');
  await assertClean(page, [HTTP_ERROR(403)]);
});

scenario('chat: rooms with unread badges, messages arrive live, the composer sends', async ({ open }) => {
  const ana = unique('ana');
  const bo = unique('bo');
  const boToken = await apiToken(bo);
  const page = await openApp(open);
  await signUp(page, ana);
  const general = await http('POST', '/api/v1/chats', { token: boToken, body: { name: 'general', members: [ana] } });
  assert.equal(general.status, 201, JSON.stringify(general.data));
  const quiet = await http('POST', '/api/v1/chats', { token: boToken, body: { name: 'quiet', members: [ana] } });
  assert.equal(quiet.status, 201, JSON.stringify(quiet.data));
  const said = await http('POST', `/api/v1/chats/${general.data.id}/messages`, { token: boToken, body: { text: 'before you came' } });
  assert.equal(said.status, 201, JSON.stringify(said.data));

  await page.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Chat' }).click();
  const rooms = page.getByRole('navigation', { name: 'Rooms' });
  await rooms.getByRole('button', { name: /general/ }).click();
  const messages = page.locator('.chat-messages');
  await messages.getByText('before you came').waitFor();
  await screenshot(page, 'chat');

  // Live: bo writes in the open room (shown) and in the other one (counted).
  await http('POST', `/api/v1/chats/${general.data.id}/messages`, { token: boToken, body: { text: 'live hello' } });
  await messages.getByText('live hello').waitFor();
  await http('POST', `/api/v1/chats/${quiet.data.id}/messages`, { token: boToken, body: { text: 'psst' } });
  await rooms.getByRole('button', { name: /quiet/ }).getByLabel('1 unread').waitFor();
  // The open room's messages are on screen: read, no badge.
  await eventually('the open room read', async () => (await rooms.getByRole('button', { name: /general/ }).locator('.badge').count()) === 0);

  await page.getByLabel('Message', { exact: true }).fill('hi bo');
  await page.getByRole('button', { name: 'Send' }).click();
  // Stored (it has its seq), not only shown as pending.
  await messages.locator('li[data-seq]', { hasText: 'hi bo' }).waitFor();
  const history = await http('GET', `/api/v1/chats/${general.data.id}/messages`, { token: boToken });
  assert.deepEqual(history.data.items.map((m) => m.text), ['before you came', 'live hello', 'hi bo']);
  assert.equal(await messages.locator('li[data-seq]').count(), 3, 'each message once');
  await assertClean(page);
});

/** The texts of the messages a page shows in the open room, in order. */
const shownTexts = (page) => page.locator('.chat-messages li[data-seq] .msg-text').evaluateAll((items) => items.map((p) => p.firstChild?.textContent ?? ''));
const shownSeqs = (page) => page.locator('.chat-messages li[data-seq]').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));

async function openChat(open, username, options) {
  const page = await open(options);
  await page.goto(`${env.webUrl}/#/chat`);
  await page.locator('#connection[data-state="open"]').waitFor();
  await page.locator('.notice', { hasText: 'Chat requires signing in' }).waitFor();
  await signUp(page, username);
  await page.locator('.chat-rooms-head h1').waitFor();
  return page;
}

async function typeAndSend(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByLabel('Message', { exact: true }).press('Enter');
}

scenario('chat, two users: a room made and shared in the page, live messages in order, typing, unread badges, a broadcaster restart, offline sends, removal', async ({ open }) => {
  const ana = unique('ana');
  const bo = unique('bo');
  const anaPage = await openChat(open, ana);
  const boPage = await openChat(open, bo);
  const anaRooms = anaPage.getByRole('navigation', { name: 'Rooms' });
  const boRooms = boPage.getByRole('navigation', { name: 'Rooms' });
  await boPage.getByText('You are in no room yet.').waitFor();
  await screenshot(boPage, 'chat-empty');

  // Ana creates a room with bo from the page; it appears in bo's list without a reload.
  const name = unique('plans');
  await anaPage.getByRole('button', { name: 'New room' }).click();
  await dialog(anaPage).getByLabel('Name').fill(name);
  await dialog(anaPage).getByLabel('Topic (optional)').fill('What we do next');
  await dialog(anaPage).getByLabel('Members (optional)').fill(bo);
  await dialog(anaPage).getByRole('button', { name: 'Create room' }).click();
  await anaPage.getByRole('heading', { name, exact: true }).waitFor();
  await boRooms.getByRole('button', { name: new RegExp(name) }).click();
  await boPage.getByRole('heading', { name, exact: true }).waitFor();
  await boPage.getByText('No messages yet.').waitFor();

  // Messages typed in one page appear in the other, in order, each once.
  const said = ['one', 'two', 'three', 'four'];
  for (const text of said) await typeAndSend(anaPage, text);
  await eventually('ana’s messages at bo’s, in order', async () => JSON.stringify(await shownTexts(boPage)) === JSON.stringify(said));
  await eventually('ana’s own view settled', async () => JSON.stringify(await shownTexts(anaPage)) === JSON.stringify(said));

  // Typing shows at the other side and clears when the message is sent.
  const typing = anaPage.getByTestId('typing');
  await boPage.getByLabel('Message', { exact: true }).pressSequentially('on my w', { delay: 20 });
  await anaPage.getByTestId('typing').filter({ hasText: `${bo} is typing…` }).waitFor();
  await screenshot(anaPage, 'chat-typing');
  await boPage.getByLabel('Message', { exact: true }).pressSequentially('ay', { delay: 20 });
  await boPage.getByLabel('Message', { exact: true }).press('Enter');
  await eventually('the typing indicator to clear', async () => (await typing.textContent()) === '');
  await anaPage.locator('.chat-messages li[data-seq]', { hasText: 'on my way' }).waitFor();

  // @mention autocomplete offers bo; presence shows both online.
  await anaPage.getByLabel('Message', { exact: true }).pressSequentially(`thanks @${bo.slice(0, 3)}`);
  await anaPage.getByRole('option', { name: new RegExp(`@${bo}`) }).waitFor();
  await anaPage.getByLabel('Message', { exact: true }).press('Enter');
  assert.equal(await anaPage.getByLabel('Message', { exact: true }).inputValue(), `thanks @${bo} `);
  await anaPage.getByLabel('Message', { exact: true }).press('Enter');
  await boPage.locator('.chat-messages .mention', { hasText: `@${bo}` }).waitFor();
  await anaPage.locator('.presence-count', { hasText: '2 online' }).waitFor();
  await screenshot(anaPage, 'chat-room');
  await anaPage.emulateMedia({ colorScheme: 'dark' });
  await screenshot(anaPage, 'chat-room-dark');
  await anaPage.emulateMedia({ colorScheme: 'light' });

  // A second room: bo has the first one open, so the second's badge rises and clears on reading.
  const other = unique('side');
  const created = await anaPage.evaluate(async ({ other, bo }) => {
    const token = JSON.parse(sessionStorage.getItem('courier.session')).accessToken;
    const r = await fetch('/api/v1/chats', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ name: other, members: [bo] }) });
    return { status: r.status, body: await r.json() };
  }, { other, bo });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const otherButton = boRooms.getByRole('button', { name: new RegExp(other) });
  await otherButton.waitFor();
  await anaRooms.getByRole('button', { name: new RegExp(other) }).click();
  await anaPage.getByRole('heading', { name: other, exact: true }).waitFor();
  await typeAndSend(anaPage, 'psst');
  await typeAndSend(anaPage, 'over here');
  await otherButton.getByLabel('2 unread').waitFor();
  await boPage.getByRole('navigation', { name: 'Sections' }).getByLabel(/unread/).waitFor();
  await screenshot(boPage, 'chat-unread');
  await otherButton.click();
  await boPage.locator('.chat-messages li[data-seq]', { hasText: 'over here' }).waitFor();
  await eventually('the badge to clear once read', async () => (await otherButton.locator('.badge').count()) === 0);
  // The marker is on the server too: a reload shows no unread.
  await boPage.reload();
  await boRooms.getByRole('button', { name: new RegExp(other) }).waitFor();
  assert.equal(await boRooms.getByRole('button', { name: new RegExp(other) }).locator('.badge').count(), 0, 'read on the server');
  await boRooms.getByRole('button', { name: new RegExp(other) }).click();
  await boPage.locator('.chat-messages li[data-seq]', { hasText: 'over here' }).waitFor();

  // The broadcaster dies mid-conversation; both keep writing over REST; when it is back, each
  // page has every message once, in seq order.
  await control('stop-broadcaster');
  await boPage.locator('#connection[data-state="reconnecting"]').waitFor();
  await boPage.locator('.chat-connection', { hasText: 'Reconnecting' }).waitFor();
  await screenshot(boPage, 'chat-reconnecting');
  for (const text of ['during 1', 'during 2']) await typeAndSend(anaPage, text);
  await typeAndSend(boPage, 'bo during');
  await typeAndSend(anaPage, 'during 3');
  await anaPage.locator('.chat-messages li[data-seq]', { hasText: 'during 3' }).waitFor();
  await control('start-broadcaster');
  await boPage.locator('#connection[data-state="open"]').waitFor({ timeout: 30_000 });
  await anaPage.locator('#connection[data-state="open"]').waitFor({ timeout: 30_000 });
  const expected = ['psst', 'over here', 'during 1', 'during 2', 'bo during', 'during 3'];
  await eventually('every message at bo’s after the restart', async () => JSON.stringify(await shownTexts(boPage)) === JSON.stringify(expected), 20_000);
  await typeAndSend(anaPage, 'after');
  await boPage.locator('.chat-messages li[data-seq]', { hasText: 'after' }).waitFor();
  // Anything shown twice would have arrived by now.
  await boPage.waitForTimeout(1_000);
  for (const page of [anaPage, boPage]) {
    assert.deepEqual(await shownTexts(page), [...expected, 'after'], 'each message once, in order');
    const seqs = await shownSeqs(page);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'seq order');
    assert.equal(new Set(seqs).size, seqs.length, 'no seq twice');
  }

  // Offline: bo's send waits, visible as pending, and goes out once (same client_msg_id) when back.
  await boPage.context().setOffline(true);
  await boPage.locator('.chat-connection', { hasText: 'You are offline' }).waitFor();
  await typeAndSend(boPage, 'sent while offline');
  await boPage.locator('.chat-msg.pending[data-state="queued"]', { hasText: 'sent while offline' }).waitFor();
  await screenshot(boPage, 'chat-offline');
  await boPage.context().setOffline(false);
  await anaPage.locator('.chat-messages li[data-seq]', { hasText: 'sent while offline' }).waitFor({ timeout: 20_000 });
  await boPage.locator('.chat-messages li[data-seq]', { hasText: 'sent while offline' }).waitFor({ timeout: 20_000 });
  assert.equal(await boPage.locator('.chat-msg.pending').count(), 0, 'nothing left pending');
  await anaPage.waitForTimeout(500);
  assert.equal(await anaPage.locator('.chat-messages li[data-seq]', { hasText: 'sent while offline' }).count(), 1, 'sent once');

  // Ana (owner) removes bo from the room: it leaves bo's list live, with a notice.
  const members = anaPage.getByRole('complementary', { name: 'Members' });
  if (!(await members.isVisible())) await anaPage.getByRole('button', { name: /online/ }).click();
  await members.locator(`li[data-username="${bo}"]`).waitFor();
  await screenshot(anaPage, 'chat-members');
  await members.getByRole('button', { name: `Remove ${bo}` }).click();
  await boPage.getByText(`You were removed from ${other}.`).waitFor();
  await eventually('the room gone from bo’s list', async () => (await boRooms.getByRole('button', { name: new RegExp(other) }).count()) === 0);
  await members.locator(`li[data-username="${bo}"]`).waitFor({ state: 'detached' });
  assert.equal(await boRooms.getByRole('button', { name: new RegExp(name) }).count(), 1, 'the other room stays');
  // Ana wrote more than the send limit (10 per 10 s) allows: the outbox waited out the 429s.
  await assertClean(anaPage, [WS_FAILED, HTTP_ERROR(429)]);
  await assertClean(boPage, [WS_FAILED, HTTP_ERROR(429), /ERR_INTERNET_DISCONNECTED|Failed to fetch|net::/]);
});

scenario('chat at phone width: the room list is a drawer, a direct message from the page', async ({ open }) => {
  const ana = unique('ana');
  const bo = unique('bo');
  await apiToken(bo);
  // Signed up at full width (the phone's top bar keeps only Sign in), then a phone.
  const page = await openChat(open, ana);
  await page.setViewportSize({ width: 375, height: 812 });
  const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  // The top bar stays one line.
  const bar = await page.locator('.topbar').boundingBox();
  assert.ok(bar && bar.height < 60, `the top bar is one line at 375 px: ${JSON.stringify(bar)}`);
  await page.getByRole('button', { name: 'Message someone' }).click();
  await dialog(page).getByLabel('Username').fill(bo);
  await dialog(page).getByRole('button', { name: 'Open conversation' }).click();
  await page.getByRole('heading', { name: `@${bo}` }).waitFor();
  const rooms = page.getByRole('navigation', { name: 'Rooms' });
  assert.equal(await rooms.isVisible(), false, 'with a room open the list is a closed drawer');
  await typeAndSend(page, 'hello from a phone');
  await page.locator('.chat-messages li[data-seq]', { hasText: 'hello from a phone' }).waitFor();
  assert.ok((await overflow()) <= 0, 'no horizontal scrolling');
  await screenshot(page, 'chat-phone');
  await page.getByRole('button', { name: /^Rooms/ }).click();
  await rooms.waitFor({ state: 'visible' });
  await screenshot(page, 'chat-phone-drawer');
  await page.keyboard.press('Escape');
  await rooms.waitFor({ state: 'hidden' });
  // The members panel overlays the room on a phone; Esc closes it too.
  const members = page.getByRole('complementary', { name: 'Members' });
  await page.getByRole('button', { name: /online/ }).click();
  await members.waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await members.waitFor({ state: 'detached' });
  // The same direct room again, whoever asks.
  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('courier.session')).accessToken);
  const again = await http('POST', '/api/v1/chats', { token, body: { direct: bo } });
  assert.equal(again.status, 200);
  await assertClean(page);
});

scenario('narrow screens: no horizontal scrolling, documents as cards', async ({ open }) => {
  await createViaHttp('products', { nombre: unique('Narrow'), precio: 7, talla: 'XS' });
  const page = await openApp(open, '#/products', { width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  assert.equal(await page.locator('thead').evaluate((el) => el.getBoundingClientRect().height <= 1), true, 'table header hidden');
  await screenshot(page, 'narrow');
  // The collections are a drawer: closed at first, opened by the menu button, closed again by
  // picking a collection, by Esc and by the backdrop.
  const menu = page.getByRole('button', { name: 'Collections menu', exact: true });
  const drawer = page.locator('#sidebar');
  assert.equal(await drawer.isVisible(), false, 'the drawer starts closed');
  await menu.click();
  await drawer.waitFor({ state: 'visible' });
  assert.equal(await menu.getAttribute('aria-expanded'), 'true');
  const box = await drawer.boundingBox();
  assert.ok(box && box.x === 0 && box.width <= 390 * 0.9, `the drawer is a panel on the left: ${JSON.stringify(box)}`);
  await screenshot(page, 'narrow-drawer');
  await page.keyboard.press('Escape');
  await drawer.waitFor({ state: 'hidden' });
  await menu.click();
  await page.getByRole('button', { name: 'Close the collections menu' }).click({ position: { x: 380, y: 400 } });
  await drawer.waitFor({ state: 'hidden' });
  await menu.click();
  await drawer.getByRole('link', { name: /pets/ }).click();
  await page.waitForURL(/#\/pets$/);
  await drawer.waitFor({ state: 'hidden' });
  assert.equal(await menu.getAttribute('aria-expanded'), 'false');
  await assertClean(page);
});

await runAll();
