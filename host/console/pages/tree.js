// The org tree: every workspace under its parent, with a status badge that follows /ws.

import { get, post } from '../api.js';
import { statusFromEvent, subscribe } from '../events.js';
import { badge, busy, debounce, fill, h, note, section, setBadge } from '../dom.js';

function buildTree(rows) {
  const byParent = new Map();
  const ids = new Set(rows.map((r) => r.id));
  for (const row of rows) {
    // A workspace whose parent is gone (or not listed) is shown as a root.
    const parent = row.parent_id && ids.has(row.parent_id) ? row.parent_id : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(row);
  }
  for (const list of byParent.values()) {
    list.sort((a, b) => a.name.localeCompare(b.name));
  }
  return byParent;
}

function nodeList(byParent, parent) {
  const children = byParent.get(parent) || [];
  if (!children.length) return null;
  return h('ul', { class: 'tree' }, children.map((row) => h('li', { dataset: { id: row.id } },
    h('div', { class: 'node' },
      badge(row.status),
      h('a', { href: `#/workspaces/${encodeURIComponent(row.id)}`, class: 'name', text: row.name }),
      row.role ? h('span', { class: 'muted role', text: row.role }) : null,
      h('span', { class: 'muted small', text: `tier ${row.tier}${row.runtime ? ` · ${row.runtime}` : ''}` }),
    ),
    nodeList(byParent, row.id),
  )));
}

function render(main) {
  const summary = h('p', { class: 'muted', id: 'tree-summary', text: 'Loading…' });
  const out = h('p', { class: 'note', hidden: true });
  const holder = h('div', { id: 'tree' });
  const createOut = h('p', { class: 'note', hidden: true });
  const nameInput = h('input', { id: 'create-name', placeholder: 'name', required: true });
  const parentSelect = h('select', { id: 'create-parent' });
  const createButton = h('button', { type: 'submit', text: 'Create' });
  const form = h('form', { class: 'inline', id: 'create-form' },
    h('label', { for: 'create-name', text: 'New workspace' }), nameInput,
    h('label', { for: 'create-parent', text: 'under' }), parentSelect, createButton);

  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Org' }), summary),
    out,
    section('Workspaces', holder),
    section('Create', form, createOut),
  );

  let rows = [];
  let alive = true;

  function counts() {
    const badges = holder.querySelectorAll('.badge');
    const online = [...badges].filter((b) => b.dataset.status === 'online').length;
    summary.textContent = `${badges.length} workspace${badges.length === 1 ? '' : 's'}, ${online} online`;
  }

  async function load() {
    try {
      rows = await get('/workspaces');
    } catch (err) {
      note(out, 'error', err.message);
      return;
    }
    if (!alive) return;
    note(out, 'ok', '');
    const tree = nodeList(buildTree(rows), null);
    fill(holder, tree || h('p', { class: 'muted', id: 'tree-empty', text: 'No workspaces yet. Import an org or create one below.' }));
    fill(parentSelect, h('option', { value: '', text: '(root)' }),
      [...rows].sort((a, b) => a.name.localeCompare(b.name)).map((r) => h('option', { value: r.id, text: r.name })));
    counts();
  }
  const reload = debounce(load, 500);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: nameInput.value.trim() };
    if (parentSelect.value) body.parent_id = parentSelect.value;
    const created = await busy(createButton, 'Creating…', createOut, () => post('/workspaces', body));
    if (created) {
      nameInput.value = '';
      note(createOut, 'ok', `Created ${created.name || body.name}.`);
      load();
    }
  });

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      reload();
      return;
    }
    if (!frame.workspace_id) return;
    const status = statusFromEvent(frame.event);
    const li = holder.querySelector(`li[data-id="${CSS.escape(frame.workspace_id)}"]`);
    if (!li) {
      // A workspace this page has not seen: created elsewhere (an import, the CLI).
      if (frame.event.startsWith('WORKSPACE_') && status !== 'removed') reload();
      return;
    }
    if (status === 'removed') {
      reload();
    } else if (status) {
      setBadge(li.querySelector(':scope > .node > .badge'), status);
      counts();
      // Events of one workspace can arrive out of order (a late PROVISIONING after ONLINE);
      // the list read shortly after has the last word.
      reload();
    } else if (frame.event === 'WORKSPACE_UPDATED') {
      reload();
    }
  });

  load();
  return () => {
    alive = false;
    unsubscribe();
  };
}

export const page = { name: 'tree', render };
