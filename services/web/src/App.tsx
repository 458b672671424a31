// The app shell: top bar (brand, sections, connection, account), the collections navigation,
// the open view (by the URL hash: #/<collection>, #/queues) and the event log.

import { useEffect, useState } from 'react';
import { needsSignIn, type Collection } from './lib/api';
import { describeError } from './lib/format';
import { api, useApp } from './store';
import { AccountBar, AuthDialog } from './components/Account';
import { ConnectionBadge, EventLog, Toasts } from './components/Live';
import { CollectionView } from './views/CollectionView';
import { QueuesView } from './views/QueuesView';
import { ChatView } from './views/ChatView';
import { chatController, useChat } from './views/chat/useChat';

const QUEUES = 'queues';
const CHAT = 'chat';

function useHash(): string {
  const [hash, setHash] = useState(() => decodeURIComponent(location.hash.replace(/^#\/?/, '')));
  useEffect(() => {
    const changed = () => setHash(decodeURIComponent(location.hash.replace(/^#\/?/, '')));
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return hash;
}

function Lock() {
  return (
    <svg viewBox="0 0 16 16" width="12" height="12" className="icon-lock" role="img" aria-label="needs sign-in">
      <title>needs sign-in</title>
      <rect x="3" y="7" width="10" height="7" rx="1.5" fill="currentColor" />
      <path d="M5 7V5a3 3 0 0 1 6 0v2" stroke="currentColor" strokeWidth="1.6" fill="none" />
    </svg>
  );
}

export function App() {
  const [collections, setCollections] = useState<Collection[] | null>(null);
  const [fatal, setFatal] = useState<string | null>(null);
  const [drawer, setDrawer] = useState(false);
  const hash = useHash();
  const authDialog = useApp((s) => s.authDialog);
  const openAuth = useApp((s) => s.openAuth);
  const username = useApp((s) => s.username);
  const userId = useApp((s) => s.userId);
  const meRoles = useApp((s) => s.meRoles);
  // The queues panel is for admins: hidden once the api says (GET /auth/me `roles`) I am not one.
  const queuesAllowed = meRoles === null || meRoles.includes('admin');
  const chat = chatController();
  const chatUnread = useChat(chat, (s) => (s.rooms ?? []).reduce((n, r) => n + r.unread, 0));

  // Chat follows my rooms while I am signed in, so the Chat link's badge is live everywhere.
  useEffect(() => {
    if (username !== null && userId !== null) chat.start({ id: userId, username });
    else chat.stop();
  }, [chat, username, userId]);

  useEffect(() => {
    api.collections().then(setCollections, (err: unknown) => setFatal(`Could not load the collections: ${describeError(err)}`));
  }, []);

  const section = hash === QUEUES ? QUEUES : hash === CHAT ? CHAT : 'collections';
  const current = collections?.find((c) => c.name === hash) ?? collections?.[0];
  useEffect(() => {
    document.title = section === QUEUES ? 'Queues · Courier' : section === CHAT ? 'Chat · Courier' : current ? `${current.name} · Courier` : 'Courier';
    setDrawer(false);
  }, [section, current]);
  useEffect(() => {
    if (!drawer) return;
    const onKey = (event: KeyboardEvent) => {
      if (event.key === 'Escape') setDrawer(false);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [drawer]);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to the content
      </a>
      <header className="topbar">
        <button type="button" className="icon drawer-toggle" hidden={section !== 'collections'} aria-expanded={drawer} aria-controls="sidebar" aria-label="Collections menu" onClick={() => setDrawer((d) => !d)}>
          ☰
        </button>
        <a className="brand" href="#/">
          <svg className="brand-mark" viewBox="0 0 32 32" width="26" height="26" aria-hidden="true" focusable="false">
            <rect width="32" height="32" rx="7" fill="currentColor" />
            <path d="M9 16h9m-4-5 5 5-5 5" stroke="#fff" strokeWidth="2.6" fill="none" strokeLinecap="round" strokeLinejoin="round" />
            <circle cx="23" cy="16" r="2.2" fill="#fff" />
          </svg>
          <span>Courier</span>
        </a>
        <nav className="sections" aria-label="Sections">
          <a href="#/" aria-current={section === 'collections' ? 'page' : undefined}>
            Collections
          </a>
          <a href={`#/${CHAT}`} aria-current={section === CHAT ? 'page' : undefined}>
            Chat
            {chatUnread > 0 && (
              <span className="badge nav-badge" aria-label={`${chatUnread} unread`}>
                {chatUnread > 99 ? '99+' : chatUnread}
              </span>
            )}
          </a>
          {queuesAllowed && (
            <a href={`#/${QUEUES}`} aria-current={section === QUEUES ? 'page' : undefined}>
              Queues
            </a>
          )}
        </nav>
        <ConnectionBadge />
        <AccountBar />
      </header>
      <div className={`layout layout-${section}${drawer ? ' drawer-open' : ''}`}>
        <nav id="sidebar" className="sidebar" aria-labelledby="nav-title">
          <h2 id="nav-title" className="sidebar-title">
            Collections
          </h2>
          <ul id="collection-list" className="collection-list">
            {collections?.map((c) => (
              <li key={c.name}>
                <a href={`#/${encodeURIComponent(c.name)}`} aria-current={section === 'collections' && c.name === current?.name ? 'page' : undefined}>
                  <span className="nav-name">{c.name}</span>
                  {(needsSignIn(c.access?.write) || needsSignIn(c.access?.read)) && <Lock />}
                </a>
              </li>
            ))}
          </ul>
          <p className="sidebar-links">
            <a href="/docs">API reference</a> · <a href="/openapi.json">OpenAPI</a>
          </p>
        </nav>
        {drawer && <button type="button" className="drawer-backdrop" aria-label="Close the collections menu" onClick={() => setDrawer(false)} />}
        <main id="main" className="content" tabIndex={-1}>
          {fatal ? (
            <div className="banner banner-error" role="alert">
              <span>{fatal} </span>
              <button type="button" onClick={() => location.reload()}>
                Retry
              </button>
            </div>
          ) : collections === null ? (
            <p className="muted">Loading…</p>
          ) : section === QUEUES ? (
            <QueuesView />
          ) : section === CHAT ? (
            <ChatView />
          ) : current ? (
            <CollectionView key={current.name} collection={current} />
          ) : (
            <p className="empty">No collections are declared (collections.yaml).</p>
          )}
        </main>
        <EventLog />
      </div>
      <Toasts />
      {authDialog && <AuthDialog initial={authDialog} onClose={() => openAuth(null)} />}
    </>
  );
}
