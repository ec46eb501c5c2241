// The console's entry point: wires the API's 401 handling, the live stream and the pages.

import { clearToken, onUnauthorized, signedIn } from './api.js';
import { connect, disconnect, onState } from './events.js';
import { flash } from './dom.js';
import { refresh as refreshApprovals, startApprovals } from './approvals.js';
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
  refreshApprovals();
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

/**
 * A page that needs the host: before sign-in it sends the user to sign-in instead of calling
 * the API, so a first visit shows no refusal (and no 401 reaches the browser's console).
 */
function signedInOnly(page) {
  return {
    name: page.name,
    render(main, params) {
      if (!signedIn()) {
        go('/signin');
        return null;
      }
      return page.render(main, params);
    },
  };
}

route('/signin', signin);
route('/', signedInOnly(tree));
route('/workspaces/:id', signedInOnly(workspace));
route('/workspaces/:id/:tab', signedInOnly(workspace));
route('/import', signedInOnly(importPage));
route('/extensions', signedInOnly(extensions));
route('/drift', signedInOnly(drift));

document.body.dataset.signedIn = signedIn() ? 'true' : 'false';
// The stream opens once there is a token (sign-in connects it); `connect` is a no-op before.
connect();
startApprovals();
start(document.getElementById('main'));
