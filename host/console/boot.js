// The console's watchdog, a classic script that runs before the modules. When the module graph
// does not load (a connection dropped while one of the modules was fetched) the page would stay
// on "Loading…" for good: the watchdog reloads it once by itself, and if that fails too it says
// so and offers a Reload button. A console that starts clears the retry.
(function () {
  'use strict';
  var KEY = 'molecule.console.boot-reloads';
  var START_LIMIT_MS = 20000;
  var given_up = false;

  function started() {
    return Boolean(document.body && document.body.dataset.page);
  }

  function reloads() {
    try {
      return Number(sessionStorage.getItem(KEY) || '0');
    } catch (e) {
      return 0;
    }
  }

  function show(reason) {
    var main = document.getElementById('main');
    if (!main) {
      return;
    }
    var note = document.createElement('p');
    note.id = 'boot-failed';
    note.className = 'error';
    note.textContent = 'The console did not load: ' + reason + '. Check that the host is reachable, then reload.';
    var button = document.createElement('button');
    button.type = 'button';
    button.id = 'boot-reload';
    button.textContent = 'Reload';
    button.addEventListener('click', function () {
      location.reload();
    });
    main.replaceChildren(note, button);
  }

  function failed(reason) {
    if (given_up || started()) {
      return;
    }
    given_up = true;
    var count = reloads();
    if (count < 1) {
      try {
        sessionStorage.setItem(KEY, String(count + 1));
      } catch (e) {
        // Without session storage there is no way to reload only once: ask instead.
        show(reason);
        return;
      }
      location.reload();
      return;
    }
    if (document.readyState === 'loading') {
      document.addEventListener('DOMContentLoaded', function () {
        show(reason);
      });
    } else {
      show(reason);
    }
  }

  // A module script whose graph failed to fetch gets an `error` event (it does not bubble:
  // listen while it goes down).
  window.addEventListener('error', function (event) {
    var target = event.target;
    if (target && target.tagName === 'SCRIPT') {
      failed('a part of it could not be fetched');
    }
  }, true);

  window.addEventListener('load', function () {
    if (started()) {
      try {
        sessionStorage.removeItem(KEY);
      } catch (e) {
        // Nothing to clear.
      }
      return;
    }
    new MutationObserver(function (changes, observer) {
      if (started()) {
        observer.disconnect();
        try {
          sessionStorage.removeItem(KEY);
        } catch (e) {
          // Nothing to clear.
        }
      }
    }).observe(document.body, { attributes: true, attributeFilter: ['data-page'] });
    setTimeout(function () {
      failed('it did not start within ' + START_LIMIT_MS / 1000 + ' s');
    }, START_LIMIT_MS);
  });
})();
