// The account corner of the top bar (name and Sign out, or Create account and Sign in) and the
// sign-in dialog (two modes), with the api's 422s next to their fields.

import { useState, type FormEvent } from 'react';
import { ApiError } from '../lib/api';
import { describeError } from '../lib/format';
import { errorText } from '../lib/schema';
import { session, useApp } from '../store';
import { Dialog } from './Dialog';

export function AccountBar() {
  const username = useApp((s) => s.username);
  const openAuth = useApp((s) => s.openAuth);
  const toast = useApp((s) => s.toast);
  if (username !== null || session.signedIn) {
    const name = username ?? session.username ?? 'signed in';
    return (
      <div id="account" className="account">
        <span className="user" title="Signed in">
          <span className="avatar" aria-hidden="true">
            {name.slice(0, 1).toUpperCase()}
          </span>
          <span className="user-name">{name}</span>
        </span>
        <button
          type="button"
          className="ghost"
          onClick={() => {
            void session.logout().then(() => toast('Signed out.', 'info'));
          }}
        >
          Sign out
        </button>
      </div>
    );
  }
  return (
    <div id="account" className="account">
      <button type="button" className="ghost register-button" onClick={() => openAuth('register')}>
        Create account
      </button>
      <button type="button" className="primary" onClick={() => openAuth('login')}>
        Sign in
      </button>
    </div>
  );
}

export function AuthDialog({ initial, onClose }: { initial: 'login' | 'register'; onClose: () => void }) {
  const [mode, setMode] = useState(initial);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [errors, setErrors] = useState<{ username?: string; password?: string }>({});
  const [summary, setSummary] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const toast = useApp((s) => s.toast);
  const registering = mode === 'register';

  const switchMode = () => {
    setMode(registering ? 'login' : 'register');
    setErrors({});
    setSummary(null);
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setErrors({});
    setSummary(null);
    setBusy(true);
    try {
      if (registering) await session.register(username, password);
      else await session.login(username, password);
      toast(`Signed in as ${session.username}.`, 'success');
      onClose();
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && err.fields.length) {
        const placed: { username?: string; password?: string } = {};
        const rest: string[] = [];
        for (const { field, reason } of err.fields) {
          if (field === 'username' || field === 'password') placed[field] = errorText(field, reason);
          else rest.push(errorText(field, reason));
        }
        setErrors(placed);
        if (rest.length) setSummary(rest.join(' '));
      } else if (err instanceof ApiError && err.status === 409) {
        setErrors({ username: err.message });
      } else if (err instanceof ApiError && err.status === 401) {
        setSummary('Invalid username or password.');
      } else {
        setSummary(describeError(err, 'Signing in'));
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog title={registering ? 'Create an account' : 'Sign in'} onClose={onClose} narrow>
      <form noValidate className="doc-form" onSubmit={(e) => void submit(e)}>
        {summary && (
          <div className="banner banner-error" role="alert">
            {summary}
          </div>
        )}
        <div className="field">
          <label htmlFor="auth-username">Username</label>
          <input
            id="auth-username"
            name="username"
            autoComplete="username"
            required
            autoCapitalize="none"
            spellCheck={false}
            autoFocus
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            aria-invalid={errors.username ? true : undefined}
            aria-describedby="auth-username-error"
          />
          <p className="field-error" id="auth-username-error" hidden={!errors.username}>
            {errors.username}
          </p>
        </div>
        <div className="field">
          <label htmlFor="auth-password">Password</label>
          <input
            id="auth-password"
            name="password"
            type="password"
            required
            autoComplete={registering ? 'new-password' : 'current-password'}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            aria-invalid={errors.password ? true : undefined}
            aria-describedby="auth-password-hint auth-password-error"
          />
          <p className="hint" id="auth-password-hint" hidden={!registering}>
            {registering ? 'At least 8 characters, not your username; a passphrase works well.' : ''}
          </p>
          <p className="field-error" id="auth-password-error" hidden={!errors.password}>
            {errors.password}
          </p>
        </div>
        <div className="dialog-actions">
          <button type="button" className="link" onClick={switchMode}>
            {registering ? 'I have an account: sign in' : 'No account yet? Create one'}
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {registering ? 'Create account' : 'Sign in'}
          </button>
        </div>
      </form>
    </Dialog>
  );
}
