// The console's entry point: wires the API's 401 handling, the live stream and the pages.

import { clearToken, onUnauthorized, token } from './api.js';
import { connect, disconnect, onState } from './events.js';
import { flash } from './dom.js';
import { current, go, route, start } from './router.js';
import { page as signin } from './pages/signin.js';
import { page as tree } from './pages/tree.js';
import { page as workspace } from './pages/workspace.js';
import { page as importPage } from './pages/import.js';
import { page as extensions } from './pages/extensions.js';
import { page as drift } from './pages/drift.js';

/** Leaves the session: forgets the token, closes the stream, shows sign-in with `message`. */
function signOut(message) {
  clearToken();
  disconnect();
  document.body.dataset.signedIn = 'false';
  flash(message ? 'error' : 'info', message || 'Signed out.');
  go('/signin');
}

onUnauthorized((message) => {
  if (current() !== '/signin') {
    signOut(`Sign in again: ${message}.`);
  }
});

document.getElementById('signout').addEventListener('click', () => signOut(''));

const live = document.getElementById('live');
onState((state) => {
  live.dataset.state = state;
  live.textContent = state === 'open' ? 'live' : state;
});

route('/signin', signin);
route('/', tree);
route('/workspaces/:id', workspace);
route('/workspaces/:id/:tab', workspace);
route('/import', importPage);
route('/extensions', extensions);
route('/drift', drift);

document.body.dataset.signedIn = token() ? 'true' : 'false';
// With no token the pages still try: a fresh install has no tokens and the API is open; once
// tokens exist the first call answers 401 and the user lands on sign-in.
connect();
start(document.getElementById('main'));
