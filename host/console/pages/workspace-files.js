// The workspace page's file editor. The editor's text always belongs to exactly one path, the
// open file: while a file loads nothing is open, and a read that fails never leaves one file's
// text under another's name (Save writes the open file, never what the path box says). A
// missing file opens as a new, empty one. Unsaved changes are marked on the file and in the
// list, and the page asks before they are thrown away.

import { get, put, seg } from '../api.js';
import { confirmAction } from '../confirm.js';
import { busy, fill, h, note } from '../dom.js';
import { restartWords } from './workspace-words.js';

/**
 * Builds the editor for the workspace at `base` (`/workspaces/<id>`). Returns its element,
 * `load()` (the file list), `unsaved()` (the open path when it has unsaved changes, else null)
 * and `stop()`.
 */
export function filesPanel(base) {
  let alive = true;
  /** The open file: `{ path, original, isNew }`, or null. */
  let open = null;
  /** Bumped by every open, so a late answer for an earlier one is dropped. */
  let opening = 0;

  const fileList = h('ul', { class: 'files', id: 'file-list' });
  const out = h('p', { class: 'note', id: 'files-note', hidden: true });
  const pathInput = h('input', { id: 'file-path', placeholder: 'path, e.g. system-prompt.md', spellcheck: 'false', 'aria-label': 'file path' });
  const openButton = h('button', { type: 'submit', class: 'secondary', id: 'file-open', text: 'Open' });
  const openForm = h('form', { class: 'inline', id: 'file-open-form' }, pathInput, openButton);
  const state = h('div', { class: 'file-state', id: 'file-state', dataset: { state: 'none' } });
  const editor = h('textarea', { id: 'file-editor', rows: 14, spellcheck: 'false', placeholder: 'Open a file, or type a new path above and Open it.', disabled: true, 'aria-labelledby': 'file-state' });
  const saveButton = h('button', { type: 'button', id: 'file-save', text: 'Save', disabled: true });
  const revertButton = h('button', { type: 'button', id: 'file-revert', class: 'secondary', text: 'Discard changes', disabled: true });

  const element = h('div', { class: 'split' },
    fileList,
    h('div', { class: 'editor' }, openForm, state, editor,
      h('div', { class: 'buttons' }, saveButton, revertButton), out));

  function dirty() {
    return open !== null && editor.value !== open.original;
  }

  /** Shows what is open and whether it has unsaved changes, on the editor and in the list. */
  function show(loading) {
    const changed = dirty();
    let kind = 'none';
    let text = 'No file open.';
    if (loading) {
      kind = 'loading';
      text = `Opening ${loading}…`;
    } else if (open) {
      kind = changed ? 'dirty' : (open.isNew ? 'new' : 'clean');
      text = open.path;
      if (open.isNew) text += ' (new file, not on the host yet)';
      if (changed) text += ' — unsaved changes';
    }
    state.textContent = text;
    state.dataset.state = kind;
    state.dataset.path = open ? open.path : '';
    editor.disabled = !open;
    saveButton.disabled = !changed;
    revertButton.disabled = !changed;
    for (const button of fileList.querySelectorAll('button[data-path]')) {
      const isOpen = open !== null && button.dataset.path === open.path;
      button.classList.toggle('open', isOpen);
      button.classList.toggle('unsaved', isOpen && changed);
      if (isOpen) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
    }
  }

  async function load() {
    try {
      const files = await get(`${base}/files?depth=5`);
      if (!alive) return;
      // The agent's own token file is listed by the host but never readable through the API.
      const entries = files.filter((f) => !f.dir && f.path !== '.auth_token').sort((a, b) => a.path.localeCompare(b.path));
      fill(fileList, entries.length ? entries.map((f) => h('li', {},
        h('button', { type: 'button', class: 'link', dataset: { path: f.path }, text: f.path, onclick: () => openFile(f.path) }),
        h('span', { class: 'muted small', text: ` ${f.size} B` }))) : h('li', { class: 'muted', text: 'No files.' }));
      show();
    } catch (err) {
      note(out, 'error', err.message);
    }
  }

  /** Asks before unsaved changes are thrown away; true when there are none or they may go. */
  async function mayDiscard(why) {
    if (!dirty()) return true;
    return confirmAction(`${open.path} has unsaved changes. ${why}`, { confirm: 'Discard changes', cancel: 'Keep editing', danger: true });
  }

  async function openFile(path) {
    if (!(await mayDiscard(`Open ${path} and lose them?`))) return;
    const mine = ++opening;
    // Nothing is open while the file loads.
    open = null;
    editor.value = '';
    pathInput.value = path;
    show(path);
    note(out, 'info', '');
    let file;
    try {
      file = await get(`${base}/files/${seg(path)}`);
    } catch (err) {
      if (!alive || mine !== opening) return;
      if (err.status === 404 && err.message === 'file not found') {
        open = { path, original: '', isNew: true };
        note(out, 'info', `There is no ${path} yet: type its content and Save to create it.`);
      } else {
        note(out, 'error', `Could not open ${path}: ${err.message}`);
      }
      show();
      return;
    }
    if (!alive || mine !== opening) return;
    editor.value = file.content;
    open = { path, original: file.content, isNew: false };
    note(out, 'info', `${path} (${file.size} bytes)`);
    show();
  }

  openForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const path = pathInput.value.trim();
    if (path) openFile(path);
  });

  editor.addEventListener('input', () => show());

  revertButton.addEventListener('click', async () => {
    if (!open || !(await mayDiscard('Discard them?'))) return;
    editor.value = open.original;
    note(out, 'info', '');
    show();
  });

  saveButton.addEventListener('click', async () => {
    if (!open) return;
    const target = open;
    const content = editor.value;
    editor.readOnly = true;
    const saved = await busy(saveButton, 'Saving…', out, () => put(`${base}/files/${seg(target.path)}`, { content }));
    editor.readOnly = false;
    if (saved && alive) {
      if (open === target) {
        target.original = content;
        target.isNew = false;
      }
      note(out, 'ok', `Saved ${saved.path} — ${restartWords(saved.restart)}.`);
      out.dataset.restart = saved.restart ? saved.restart.kind : '';
      load();
    }
    show();
  });

  show();
  return {
    element,
    load,
    unsaved: () => (dirty() ? open.path : null),
    stop: () => {
      alive = false;
    },
  };
}
