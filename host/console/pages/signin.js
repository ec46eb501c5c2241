// Sign-in: an admin or org token, kept in sessionStorage for this tab only.

import { clearToken, get, setToken } from '../api.js';
import { connect } from '../events.js';
import { busy, flash, h, note } from '../dom.js';
import { go } from '../router.js';

function render(main) {
  const input = h('input', {
    id: 'token', type: 'password', name: 'token', autocomplete: 'off', required: true,
    placeholder: 'admin or org token', spellcheck: 'false',
  });
  const out = h('p', { class: 'note', id: 'signin-note', hidden: true });
  const button = h('button', { type: 'submit', id: 'signin-submit', text: 'Sign in' });
  const form = h('form', { class: 'card narrow', id: 'signin-form' },
    h('h1', { text: 'Sign in' }),
    h('p', { class: 'muted', text: 'Paste the admin token (MOLECULE_ADMIN_TOKEN) or an org token. It stays in this tab\'s session storage and is sent as the bearer on every call.' }),
    h('label', { for: 'token', text: 'Token' }), input, button, out);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    const ok = await busy(button, 'Checking…', out, async () => {
      await get('/workspaces');
      return true;
    });
    if (!ok) {
      clearToken();
      return;
    }
    input.value = '';
    document.body.dataset.signedIn = 'true';
    flash('ok', '');
    note(out, 'ok', '');
    connect();
    go('/');
  });
  main.append(form);
  input.focus();
}

export const page = { name: 'signin', render };
