// Sign-in: an admin or org token, kept in sessionStorage for this tab only. Nothing calls the
// host until the operator submits, and a refusal is said once, in the form.

import { clearToken, get, setOpenHost, setToken } from '../api.js';
import { connect } from '../events.js';
import { flash, h, note } from '../dom.js';
import { go } from '../router.js';

function render(main) {
  const input = h('input', {
    id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
    placeholder: 'admin or org token', spellcheck: 'false',
  });
  const out = h('p', { class: 'note', id: 'signin-note', hidden: true });
  const button = h('button', { type: 'submit', id: 'signin-submit', text: 'Sign in' });
  // A development host without an admin token answers without one; everywhere else this is
  // refused with one message and nothing is remembered.
  const open = h('button', { type: 'button', id: 'signin-open', class: 'link small', text: 'No token? Continue if this host is open (development without an admin token)' });
  const form = h('form', { class: 'card narrow', id: 'signin-form' },
    h('h1', { text: 'Sign in' }),
    h('p', { class: 'muted', text: 'Paste the admin token (MOLECULE_ADMIN_TOKEN; `make run` prints it and saves it in data/admin-token) or an org token. It stays in this tab\'s session storage and is sent as the bearer on every call.' }),
    h('label', { for: 'token', text: 'Token' }), input, button, out, open);

  /** Checks the credential (`value`, or none) with one call; true when the host accepted it. */
  async function attempt(value, refused) {
    // A banner left by an earlier session (signed out, token revoked) is replaced by this
    // attempt's own answer, so the page never shows two messages.
    flash('info', '');
    clearToken();
    if (value) setToken(value);
    button.disabled = true;
    open.disabled = true;
    note(out, 'info', 'Checking…');
    try {
      await get('/workspaces');
      return true;
    } catch (err) {
      clearToken();
      note(out, 'error', err.status === 401 ? refused(err.message) : err.message);
      return false;
    } finally {
      button.disabled = false;
      open.disabled = false;
    }
  }

  function enter() {
    input.value = '';
    document.body.dataset.signedIn = 'true';
    note(out, 'ok', '');
    connect();
    go('/');
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    if (await attempt(value, (why) => `The host did not accept this token (${why}).`)) enter();
  });
  open.addEventListener('click', async () => {
    if (await attempt('', () => 'This host needs a token: paste the admin token or an org token.')) {
      setOpenHost();
      enter();
    }
  });
  main.append(form);
  input.focus();
}

export const page = { name: 'signin', render };
