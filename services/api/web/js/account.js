// The account corner of the top bar: sign in / create account (one dialog, two modes) and,
// when signed in, the user's name and Sign out.

import { ApiError } from './api.js';
import { h, replaceChildren, openDialog, toast } from './dom.js';
import { errorText } from './schema-form.js';
import { describeError } from './views.js';

export class AccountBar {
  constructor(root, session) {
    this.root = root;
    this.session = session;
    session.onChange((reason) => {
      this.render();
      if (reason === 'expired') toast('Your session ended: sign in again to make changes.', 'error');
    });
    this.render();
  }

  render() {
    if (this.session.signedIn) {
      replaceChildren(
        this.root,
        h('span', { class: 'user', title: 'Signed in' }, h('span', { class: 'avatar', 'aria-hidden': 'true' }, (this.session.username ?? '?').slice(0, 1).toUpperCase()), h('span', { class: 'user-name' }, this.session.username ?? 'signed in')),
        h('button', { type: 'button', class: 'ghost', onclick: () => this.signOut() }, 'Sign out'),
      );
    } else {
      replaceChildren(
        this.root,
        h('button', { type: 'button', class: 'ghost', onclick: () => this.open('register') }, 'Create account'),
        h('button', { type: 'button', class: 'primary', onclick: () => this.open('login') }, 'Sign in'),
      );
    }
  }

  signOut() {
    this.session.signOut();
    toast('Signed out.', 'info');
  }

  /** Opens the sign-in dialog (`mode`: login or register). */
  open(mode = 'login') {
    const username = h('input', { id: 'auth-username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', 'aria-describedby': 'auth-username-error' });
    const password = h('input', { id: 'auth-password', name: 'password', type: 'password', required: true, 'aria-describedby': 'auth-password-hint auth-password-error' });
    const errors = {
      username: h('p', { class: 'field-error', id: 'auth-username-error', hidden: true }),
      password: h('p', { class: 'field-error', id: 'auth-password-error', hidden: true }),
    };
    const summary = h('div', { class: 'banner banner-error', role: 'alert', hidden: true });
    const hint = h('p', { class: 'hint', id: 'auth-password-hint' });
    const submit = h('button', { type: 'submit', class: 'primary' });
    const switcher = h('button', { type: 'button', class: 'link' });
    const title = h('h2', { id: 'auth-title' });
    const form = h(
      'form',
      { novalidate: true, class: 'doc-form' },
      summary,
      h('div', { class: 'field' }, h('label', { for: 'auth-username' }, 'Username'), username, errors.username),
      h('div', { class: 'field' }, h('label', { for: 'auth-password' }, 'Password'), password, hint, errors.password),
      h('div', { class: 'dialog-actions' }, switcher, submit),
    );
    const dialog = h(
      'dialog',
      { class: 'panel panel-narrow', 'aria-labelledby': 'auth-title' },
      h('div', { class: 'dialog-head' }, title, h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: () => dialog.close() }, '×')),
      form,
    );
    const setMode = (next) => {
      mode = next;
      const registering = mode === 'register';
      title.textContent = registering ? 'Create an account' : 'Sign in';
      submit.textContent = registering ? 'Create account' : 'Sign in';
      switcher.textContent = registering ? 'I have an account: sign in' : 'No account yet? Create one';
      password.setAttribute('autocomplete', registering ? 'new-password' : 'current-password');
      hint.textContent = registering ? 'At least 8 characters, not your username; a passphrase works well.' : '';
      hint.hidden = !registering;
      clear();
    };
    const clear = () => {
      summary.hidden = true;
      for (const [name, el] of Object.entries(errors)) {
        el.hidden = true;
        el.textContent = '';
        (name === 'username' ? username : password).removeAttribute('aria-invalid');
      }
    };
    switcher.addEventListener('click', () => setMode(mode === 'login' ? 'register' : 'login'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      clear();
      submit.disabled = true;
      try {
        if (mode === 'register') await this.session.register(username.value, password.value);
        else await this.session.login(username.value, password.value);
        toast(`Signed in as ${this.session.username}.`, 'success');
        dialog.close();
      } catch (err) {
        this.showError(err, { username, password }, errors, summary);
      } finally {
        submit.disabled = false;
      }
    });
    setMode(mode);
    openDialog(dialog);
    username.focus();
  }

  showError(err, inputs, errors, summary) {
    if (err instanceof ApiError && err.status === 422 && err.fields.length) {
      const rest = [];
      for (const { field, reason } of err.fields) {
        if (errors[field]) {
          errors[field].textContent = errorText(field, reason);
          errors[field].hidden = false;
          inputs[field].setAttribute('aria-invalid', 'true');
        } else rest.push(errorText(field, reason));
      }
      if (rest.length === 0) return;
      summary.textContent = rest.join(' ');
    } else if (err instanceof ApiError && err.status === 409) {
      errors.username.textContent = err.message;
      errors.username.hidden = false;
      inputs.username.setAttribute('aria-invalid', 'true');
      return;
    } else if (err instanceof ApiError && err.status === 401) {
      summary.textContent = 'Invalid username or password.';
    } else {
      summary.textContent = describeError(err, 'Signing in');
    }
    summary.hidden = false;
  }
}
