// Start-up: the stored session, /app-config.json (the broadcaster's address), the WebSocket
// client, then the React app.

import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { describeError } from './lib/format';
import { LiveClient, resolveWsUrl } from './lib/live';
import { startReporting } from './lib/telemetry';
import { api, session, setLive, telemetry, useApp } from './store';
import './app.css';

async function start() {
  await session.restore().catch(() => false);
  const { logNotice } = useApp.getState();
  let wsUrl = '';
  try {
    const config = await api.appConfig();
    wsUrl = config.ws_url ?? '';
    telemetry.setEnabled(config.telemetry !== false);
  } catch (err) {
    telemetry.setEnabled(false);
    logNotice(`Could not read /app-config.json (${describeError(err)}); using the default broadcaster address.`, 'warning');
  }
  const url = resolveWsUrl(wsUrl);
  let previous = 'idle';
  const live = new LiveClient(url, {
    onStatus: (status) => {
      telemetry.wsStatus(status.state);
      useApp.setState({ connection: status });
      if (status.state === 'open') logNotice(`Connected to ${url}.`);
      // One line per outage, not one per retry.
      if (status.state === 'reconnecting' && previous !== 'reconnecting') logNotice(`Disconnected (${status.reason}); reconnecting with backoff.`, 'warning');
      if (status.state !== 'connecting') previous = status.state;
    },
    onNotice: (text, level) => logNotice(text, level),
    onUnrecovered: () => telemetry.unrecoveredResume(),
  });
  startReporting(telemetry);
  setLive(live);
  // For the browser tests and the console: the WebSocket client's pieces.
  Object.assign(window, { courier: { LiveClient, resolveWsUrl } });
  live.start();
  const root = document.getElementById('root');
  if (root) createRoot(root).render(<StrictMode><App /></StrictMode>);
}

void start();
