// The connection indicator of the top bar and the live event log.

import { useEffect, useState } from 'react';
import { actionOf, clock, shortId, titleOf } from '../lib/format';
import { live, useApp } from '../store';

export function ConnectionBadge() {
  const status = useApp((s) => s.connection);
  const [now, setNow] = useState(() => Date.now());
  const [until, setUntil] = useState(0);
  useEffect(() => {
    if (status.state !== 'reconnecting') return;
    setUntil(Date.now() + (status.retryInMs ?? 0));
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, [status]);
  let label = 'Not connected';
  let title = '';
  if (status.state === 'open') {
    label = 'Live';
    title = `Connected to ${status.url}`;
  } else if (status.state === 'connecting') {
    label = 'Connecting…';
    title = `Connecting to ${status.url}`;
  } else if (status.state === 'reconnecting') {
    label = `Offline — retrying in ${Math.max(0, Math.ceil((until - now) / 1000))} s`;
    title = `Disconnected (${status.reason ?? ''}); reconnecting to ${status.url}`;
  } else if (status.url === '') {
    label = 'Starting…';
  }
  return (
    <div id="connection" className="connection" data-state={status.state} role="status" aria-live="polite" title={title}>
      <span className="connection-dot" aria-hidden="true" />
      <span className="connection-label">{label}</span>
      <button type="button" className="link" hidden={status.state !== 'reconnecting'} onClick={() => live.reconnectNow()}>
        Reconnect now
      </button>
    </div>
  );
}

export function EventLog() {
  const log = useApp((s) => s.log);
  const received = useApp((s) => s.received);
  const clearLog = useApp((s) => s.clearLog);
  return (
    <aside id="event-log" className="log" aria-labelledby="log-title">
      <div className="log-head">
        <h2 id="log-title">Live events</h2>
        <span className="log-count muted">
          {received} event{received === 1 ? '' : 's'}
        </span>
        <button type="button" className="log-clear small ghost" onClick={clearLog}>
          Clear
        </button>
      </div>
      {log.length === 0 && <p className="log-empty muted">Events of the open collection appear here as they happen.</p>}
      <ol className="log-list" aria-live="polite" aria-relevant="additions" aria-label="Live events, newest first">
        {log.map((entry) =>
          entry.kind === 'event' ? (
            <li
              key={entry.key}
              className="log-entry log-event"
              data-seq={entry.seq}
              data-type={String(entry.event.type)}
              data-doc-id={String(entry.event.doc_id ?? '')}
              data-channel={entry.channel}
              data-match={entry.match}
            >
              <time dateTime={entry.event.time ?? ''}>{clock(entry.at)}</time>
              <span className="log-seq" title="stream sequence">
                #{entry.seq}
              </span>
              <span className={`pill pill-${actionOf(entry.event.type)}`}>{actionOf(entry.event.type)}</span>
              <span className="log-text">
                <span className="log-doc" title={String(entry.event.doc_id ?? '')}>
                  {`${entry.event.collection ?? entry.channel} ${shortId(entry.event.doc_id)}`}
                </span>
                {titleOf(entry.event.data) && <span className="log-title"> {titleOf(entry.event.data)}</span>}
                {/* A create entering or a delete leaving says nothing more than its type. */}
                {((entry.match === 'enter' && actionOf(entry.event.type) !== 'created') || (entry.match === 'leave' && actionOf(entry.event.type) !== 'deleted')) && (
                  <span className={`log-match log-match-${entry.match}`}>{entry.match === 'enter' ? ' entered the view' : ' left the view'}</span>
                )}
              </span>
            </li>
          ) : (
            <li key={entry.key} className={`log-entry log-notice log-${entry.level}`}>
              <time>{clock(entry.at)}</time>
              <span className="log-text">{entry.text}</span>
            </li>
          ),
        )}
      </ol>
    </aside>
  );
}

export function Toasts() {
  const toasts = useApp((s) => s.toasts);
  return (
    <div id="toasts" className="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.key} className={`toast toast-${t.kind}`} role={t.kind === 'error' ? 'alert' : undefined}>
          {t.text}
        </div>
      ))}
    </div>
  );
}
