// An in-console confirmation: a modal <dialog> built through dom.js. `window.confirm` is not
// used: it blocks the page's scripts and the live stream while it waits, cannot say which
// button does what, and a WebDriver session sees it only as an unexpected alert.

import { h } from './dom.js';

let showing = null;

/**
 * Asks the operator `message` (under `title` when given; `count`, how many workspaces the action
 * touches, is kept on the dialog for tests); resolves true when they choose `confirm`, false for
 * `cancel`, Escape, or when another confirmation replaces this one. The safe choice has the
 * focus, so Enter never pauses or deletes a subtree by accident.
 */
export function confirmAction(message, { title = null, count = null, confirm = 'Continue', cancel = 'Cancel', danger = false } = {}) {
  if (showing) showing(false);
  return new Promise((resolve) => {
    const yes = h('button', { type: 'button', id: 'confirm-ok', class: danger ? 'danger' : null, text: confirm });
    const no = h('button', { type: 'button', id: 'confirm-cancel', class: 'secondary', text: cancel });
    const dialog = h('dialog', {
      id: 'confirm-dialog', class: 'confirm', 'aria-labelledby': 'confirm-message',
      dataset: count === null ? {} : { count: String(count) },
    },
    title ? h('h2', { text: title }) : null,
    h('p', { id: 'confirm-message', text: message }),
    h('div', { class: 'buttons' }, no, yes));
    const finish = (value) => {
      if (showing !== finish) return;
      showing = null;
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(value);
    };
    showing = finish;
    yes.addEventListener('click', () => finish(true));
    no.addEventListener('click', () => finish(false));
    dialog.addEventListener('cancel', (e) => {
      e.preventDefault();
      finish(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}
