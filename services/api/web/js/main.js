// Courier console: wires the session, the REST client, the broadcaster client and the views,
// and routes between collections by the URL hash (#/products).

import { createApi } from './api.js';
import { AccountBar } from './account.js';
import { h, lockIcon, replaceChildren } from './dom.js';
import { LiveClient, resolveWsUrl } from './live.js';
import { Session } from './session.js';
import { CollectionView, ConnectionBadge, EventLog, describeError } from './views.js';

const session = new Session();
const api = createApi({ token: () => session.token(), refresh: () => session.refresh() });
session.api = api;

const main = document.getElementById('main');
const nav = document.getElementById('collection-list');
const log = new EventLog(document.getElementById('event-log'));
const badge = new ConnectionBadge(document.getElementById('connection'));
const account = new AccountBar(document.getElementById('account'), session);

let collections = [];
let view = null;
let live = null;

function showFatal(message, retry) {
  replaceChildren(
    main,
    h('div', { class: 'banner banner-error', role: 'alert' }, h('span', {}, message, ' '), h('button', { type: 'button', onclick: retry }, 'Retry')),
  );
}

function renderNav(current) {
  replaceChildren(
    nav,
    collections.map((c) =>
      h(
        'li',
        {},
        h(
          'a',
          { href: `#/${encodeURIComponent(c.name)}`, 'aria-current': c.name === current ? 'page' : null },
          h('span', { class: 'nav-name' }, c.name),
          c.access?.write === 'authenticated' || c.access?.read === 'authenticated'
            ? lockIcon('needs sign-in')
            : null,
        ),
      ),
    ),
  );
}

/** Shows the collection named by the URL hash (the first one by default). */
function route() {
  const wanted = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const collection = collections.find((c) => c.name === wanted) ?? collections[0];
  if (!collection) {
    replaceChildren(main, h('p', { class: 'empty' }, 'No collections are declared (collections.yaml).'));
    return;
  }
  if (view?.name === collection.name) return;
  view?.destroy();
  renderNav(collection.name);
  document.title = `${collection.name} · Courier`;
  view = new CollectionView({ root: main, api, session, live, log, collection, onSignIn: () => account.open('login') });
  view.mount();
}

async function start() {
  await session.restore().catch(() => false);
  let config = { ws_url: '' };
  try {
    config = await api.appConfig();
  } catch (err) {
    log.notice(`Could not read /app-config.json (${describeError(err)}); using the default broadcaster address.`, 'warning');
  }
  const url = resolveWsUrl(config.ws_url);
  let previous = 'idle';
  live = new LiveClient(url, {
    onStatus: (status) => {
      badge.update(status);
      if (status.state === 'open') log.notice(`Connected to ${url}.`);
      // One line per outage, not one per retry.
      if (status.state === 'reconnecting' && previous !== 'reconnecting') {
        log.notice(`Disconnected (${status.reason}); reconnecting with backoff.`, 'warning');
      }
      if (status.state !== 'connecting') previous = status.state;
    },
    onNotice: (text, level) => log.notice(text, level),
  });
  badge.attach(live);
  try {
    collections = await api.collections();
  } catch (err) {
    showFatal(`Could not load the collections: ${describeError(err)}`, () => location.reload());
    return;
  }
  session.onChange((reason) => view?.onSessionChange(reason));
  window.addEventListener('hashchange', route);
  live.start();
  route();
}

start();
