// The queues panel (admin): the workers' queue numbers, refreshed every 2 s (pending, in
// flight, redelivered, dead, waiting for external workers), the dead-letter list with each
// reason, and retry.

import { useCallback, useEffect, useState } from 'react';
import { ApiError } from '../lib/api';
import { describeError } from '../lib/format';
import { api, useApp } from '../store';

interface Queue {
  name: string;
  pending: number;
  in_flight: number;
  redelivered: number;
  dead_lettered: number;
  consumers: number;
  enqueued_total: number;
  processed_total: number;
  /** Tasks waiting for your own workers (`external: true` triggers; docs/workers.md). */
  external?: { queued: number };
}

interface DeadLetter {
  id: number;
  kind: string | null;
  task_id: string | null;
  reason: string | null;
  attempts: number | null;
  worker: string | null;
  time: string | null;
}

const REFRESH_MS = 2_000;

export function QueuesView() {
  const username = useApp((s) => s.username);
  const openAuth = useApp((s) => s.openAuth);
  const toast = useApp((s) => s.toast);
  const [queues, setQueues] = useState<Queue[] | null>(null);
  const [dead, setDead] = useState<DeadLetter[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<number | null>(null);
  const [forbidden, setForbidden] = useState(false);
  const meRoles = useApp((s) => s.meRoles);
  const notAdmin = forbidden || (meRoles !== null && !meRoles.includes('admin'));

  const load = useCallback(async () => {
    try {
      const [overview, letters] = await Promise.all([
        api.send<{ queues: Queue[] }>('GET', '/api/v1/queues'),
        api.send<{ items: DeadLetter[] }>('GET', '/api/v1/queues/tasks/dead?limit=100'),
      ]);
      setQueues(overview.data.queues);
      setDead(letters.data.items);
      setError(null);
      setForbidden(false);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) setForbidden(true);
      else setError(describeError(err, 'Loading the queues'));
    }
  }, []);

  useEffect(() => {
    if (username === null || notAdmin) return;
    void load();
    const timer = setInterval(() => void load(), REFRESH_MS);
    return () => clearInterval(timer);
  }, [username, load, notAdmin]);

  const retry = async (id: number) => {
    setBusy(id);
    try {
      await api.send('POST', `/api/v1/queues/tasks/dead/${id}/retry`);
      toast(`Dead letter #${id} re-enqueued.`, 'success');
      await load();
    } catch (err) {
      toast(describeError(err, 'Retrying'), 'error');
    } finally {
      setBusy(null);
    }
  };

  if (username === null) {
    return (
      <>
        <h1 tabIndex={-1}>Queues</h1>
        <div className="notice" role="status">
          <span>The queues panel requires signing in. </span>
          <button type="button" className="link" onClick={() => openAuth('login')}>
            Sign in
          </button>
        </div>
      </>
    );
  }
  if (notAdmin) {
    return (
      <>
        <h1 tabIndex={-1}>Queues</h1>
        <div className="notice notice-forbidden" role="alert" data-state="forbidden">
          <strong>Administrators only.</strong>
          <span>
            {' '}
            The queues panel shows and retries every user’s background tasks, so it needs the <code>admin</code> role, which {username} does not have. Ask an administrator if you need it.
          </span>
        </div>
      </>
    );
  }
  return (
    <>
      <div className="view-head">
        <div>
          <h1 tabIndex={-1}>Queues</h1>
          <p className="view-meta muted">The workers’ task queue as JetStream sees it; refreshed every 2 s.</p>
        </div>
      </div>
      {error && (
        <div className="banner banner-error" role="alert">
          {error}
        </div>
      )}
      {queues === null && !error && <p className="muted">Loading…</p>}
      {queues?.map((q) => (
        <section key={q.name} className="queue" aria-labelledby={`queue-${q.name}`}>
          <h2 id={`queue-${q.name}`}>{q.name}</h2>
          <dl className="stats">
            {(
              [
                ['pending', q.pending],
                ['in flight', q.in_flight],
                ['redelivered', q.redelivered],
                ['dead', q.dead_lettered],
                ['external', q.external?.queued ?? 0],
                ['consumers', q.consumers],
                ['processed', q.processed_total],
              ] as const
            ).map(([label, value]) => (
              <div key={label} className="stat" data-stat={label.replaceAll(' ', '-')}>
                <dt>{label}</dt>
                <dd>{value}</dd>
              </div>
            ))}
          </dl>
        </section>
      ))}
      <h2>Dead letters</h2>
      {dead.length === 0 ? (
        <p className="empty muted">No dead letters: every task either succeeded or is still being retried.</p>
      ) : (
        <div className="table-wrap">
          <table className="docs dead-letters">
            <caption className="sr-only">Dead letters of the tasks queue</caption>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">kind</th>
                <th scope="col">reason</th>
                <th scope="col">attempts</th>
                <th scope="col">time</th>
                <th scope="col" className="actions">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {dead.map((d) => (
                <tr key={d.id} data-dead={d.id}>
                  <td data-label="#">{d.id}</td>
                  <td data-label="kind">{d.kind ?? '—'}</td>
                  <td data-label="reason" className="reason">
                    {d.reason ?? '—'}
                  </td>
                  <td data-label="attempts" className="num">
                    {d.attempts ?? '—'}
                  </td>
                  <td data-label="time">{d.time ? new Date(d.time).toLocaleString() : '—'}</td>
                  <td className="actions">
                    <button type="button" className="small" disabled={busy === d.id} onClick={() => void retry(d.id)} aria-label={`Retry dead letter ${d.id}`}>
                      Retry
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
