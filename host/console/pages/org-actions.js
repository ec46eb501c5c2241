// What the org page's two views (graph and list) share: the tree built from `GET /workspaces`,
// which lifecycle actions a workspace's state allows, the confirmation dialog that names how
// many workspaces an action touches, and the actions panel (restart, pause, resume, delete,
// rename, move) for the selected workspace.

import { del, patch, post, seg } from '../api.js';
import { confirmAction } from '../confirm.js';
import { badge, fill, h, note } from '../dom.js';

/** `parent id (or null) -> children sorted by name`; a workspace whose parent is not listed is a root. */
export function buildTree(rows) {
  const byParent = new Map();
  const ids = new Set(rows.map((r) => r.id));
  for (const row of rows) {
    const parent = row.parent_id && ids.has(row.parent_id) ? row.parent_id : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent).push(row);
  }
  for (const list of byParent.values()) {
    list.sort((a, b) => a.name.localeCompare(b.name));
  }
  return byParent;
}

/** Every workspace below `id` (depth first). */
export function descendants(byParent, id) {
  const out = [];
  const walk = (parent) => {
    for (const child of byParent.get(parent) || []) {
      out.push(child);
      walk(child.id);
    }
  };
  walk(id);
  return out;
}

/** The nearest paused ancestor of `row`, or null. */
function pausedAncestor(byId, row) {
  const seen = new Set();
  let parent = row.parent_id ? byId.get(row.parent_id) : null;
  while (parent && !seen.has(parent.id)) {
    if (parent.status === 'paused') return parent;
    seen.add(parent.id);
    parent = parent.parent_id ? byId.get(parent.parent_id) : null;
  }
  return null;
}

/**
 * Which lifecycle actions `row`'s state allows, each `{ ok, why }` (`why` says why not). The
 * host has the last word; this keeps buttons that can only be refused from being offered. Both
 * the org page and the workspace page ask here.
 */
export function allowed(row, byId) {
  const no = (why) => ({ ok: false, why });
  if (!row || !row.status || row.status === 'unknown') {
    const loading = no('loading');
    return { restart: loading, pause: loading, resume: loading, hibernate: loading, delete: loading };
  }
  const paused = row.status === 'paused';
  const removed = row.status === 'removed';
  // Resume (and restart) wake a hibernated workspace; only a running agent hibernates.
  const hibernated = row.status === 'hibernated';
  const running = row.status === 'online' || row.status === 'degraded';
  const external = row.runtime === 'external';
  const above = pausedAncestor(byId, row);
  const yes = { ok: true, why: '' };
  return {
    restart: removed ? no('removed') : paused ? no('paused: resume it first')
      : above ? no(`${above.name} above it is paused`)
        : external ? no('its agent runs outside this host') : yes,
    pause: removed ? no('removed') : paused ? no('already paused') : yes,
    resume: removed ? no('removed') : hibernated ? yes : !paused ? no('not paused')
      : above ? no(`${above.name} above it is paused: resume that first`) : yes,
    hibernate: removed ? no('removed') : hibernated ? no('already hibernated')
      : !running ? no('only a running agent hibernates')
        : external ? no('its agent runs outside this host') : yes,
    delete: removed ? no('removed') : yes,
  };
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/**
 * The panel of actions on the selected workspace. `context()` returns the page's current
 * `{ rows, byId, byParent }`; `out` is the page's one note for action outcomes (an error shows
 * the host's message there once and the next success replaces it); `changed()` reloads;
 * `write(work)` runs each action's request, so the page can tell its list reads from its writes.
 */
export function actionsPanel({ context, out, changed, write = (work) => work() }) {
  let selected = null;
  const title = h('h2', { id: 'act-title' });
  const status = h('span', { id: 'act-status' });
  const reason = h('p', { class: 'note reason small', id: 'act-reason', hidden: true });
  const open = h('a', { id: 'act-open', text: 'Open workspace page' });
  const close = h('button', { type: 'button', class: 'link small', id: 'act-close', text: 'Close' });
  const button = (id, text, cls) => h('button', { type: 'button', id, class: cls, text });
  const restart = button('act-restart', 'Restart', 'secondary');
  const pause = button('act-pause', 'Pause', 'secondary');
  const resume = button('act-resume', 'Resume', 'secondary');
  const remove = button('act-delete', 'Delete', 'danger');
  const nameInput = h('input', { id: 'act-name', required: true, maxlength: 255, 'aria-label': 'new name' });
  const renameForm = h('form', { class: 'inline', id: 'act-rename-form' },
    nameInput, h('button', { type: 'submit', id: 'act-rename', class: 'secondary', text: 'Rename' }));
  const parentSelect = h('select', { id: 'act-parent', 'aria-label': 'move under', title: 'Move under' });
  const moveForm = h('form', { class: 'inline', id: 'act-move-form' },
    parentSelect,
    h('button', { type: 'submit', id: 'act-move', class: 'secondary', text: 'Move' }));
  const scope = h('p', { class: 'muted small', id: 'act-scope' });
  const el = h('aside', { class: 'card org-actions', id: 'org-actions', hidden: true },
    h('div', { class: 'heading' }, title, status, close),
    reason, scope,
    h('div', { class: 'buttons' }, restart, pause, resume, remove),
    h('h3', { text: 'Rename' }), renameForm,
    h('h3', { text: 'Move under' }), moveForm,
    open);

  const current = () => (selected ? context().byId.get(selected) : null);

  /** The selected workspace and its descendants, from the list the page holds. */
  function subtree(row) {
    return [row, ...descendants(context().byParent, row.id)];
  }

  /** Runs one action: the button is busy meanwhile, the outcome replaces the page's note. */
  async function act(target, label, work) {
    const before = target.textContent;
    target.disabled = true;
    target.setAttribute('aria-busy', 'true');
    target.textContent = label;
    try {
      const message = await write(work);
      if (message) note(out, 'ok', message);
      changed();
    } catch (err) {
      note(out, 'error', err.message || String(err));
    } finally {
      target.textContent = before;
      target.removeAttribute('aria-busy');
      target.disabled = false;
      refresh();
    }
  }

  restart.addEventListener('click', () => {
    const row = current();
    if (!row) return;
    act(restart, 'Restarting…', async () => {
      const reply = await post(`/workspaces/${seg(row.id)}/restart`);
      if (reply && reply.status === 'noop') return `${row.name}: nothing to restart (${reply.message || 'no-op'}).`;
      return reply && reply.coalesced ? `${row.name} joins the restart already under way.` : `Restarting ${row.name}.`;
    });
  });

  pause.addEventListener('click', async () => {
    const row = current();
    if (!row) return;
    const touched = subtree(row);
    if (touched.length > 1) {
      const yes = await confirmAction(
        `Pausing ${row.name} pauses its ${plural(touched.length - 1, 'descendant')} too: ${plural(touched.length, 'workspace')} will stop their agents until resumed.`,
        { title: `Pause ${row.name}?`, count: touched.length, confirm: `Pause ${plural(touched.length, 'workspace')}`, danger: true },
      );
      if (!yes) return;
    }
    act(pause, 'Pausing…', async () => {
      const reply = await post(`/workspaces/${seg(row.id)}/pause`);
      return `Paused ${plural(reply.paused_count, 'workspace')}.`;
    });
  });

  resume.addEventListener('click', () => {
    const row = current();
    if (!row) return;
    act(resume, 'Resuming…', async () => {
      const reply = await post(`/workspaces/${seg(row.id)}/resume`);
      return `Resuming ${plural(reply.resumed_count, 'workspace')}.`;
    });
  });

  remove.addEventListener('click', async () => {
    const row = current();
    if (!row) return;
    const touched = subtree(row);
    const below = touched.length - 1;
    const yes = await confirmAction(
      below
        ? `Deleting ${row.name} deletes its ${plural(below, 'descendant')} too: ${plural(touched.length, 'workspace')} will be removed and their agents stopped.`
        : `${row.name} will be removed and its agent stopped.`,
      { title: `Delete ${row.name}?`, count: touched.length, confirm: below ? `Delete ${plural(touched.length, 'workspace')}` : 'Delete', danger: true },
    );
    if (!yes) return;
    act(remove, 'Deleting…', async () => {
      // The count was confirmed above; a subtree the host finds larger than the list showed
      // is still deleted whole (the host's children check is for callers that did not ask).
      const reply = await del(`/workspaces/${seg(row.id)}${below ? '?confirm=true' : ''}`);
      selected = null;
      const more = reply && reply.cascade_deleted ? ` and ${plural(reply.cascade_deleted, 'descendant')}` : '';
      return `Deleted ${row.name}${more}.`;
    });
  });

  renameForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const row = current();
    const name = nameInput.value.trim();
    if (!row || !name) return;
    if (name === row.name) {
      note(out, 'info', `${row.name} already has that name.`);
      return;
    }
    act(renameForm.querySelector('button'), 'Renaming…', async () => {
      await patch(`/workspaces/${seg(row.id)}`, { name });
      return `Renamed ${row.name} to ${name}.`;
    });
  });

  moveForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const row = current();
    if (!row) return;
    const { byId } = context();
    const target = parentSelect.value || null;
    if (target === (row.parent_id || null)) {
      note(out, 'info', `${row.name} is already there.`);
      return;
    }
    // Asked here before the host: a workspace cannot sit below itself.
    const inside = subtree(row).find((r) => r.id === target);
    if (inside) {
      note(out, 'error', inside.id === row.id
        ? `${row.name} cannot be its own parent.`
        : `${row.name} cannot move under ${inside.name}: ${inside.name} is in its own subtree.`);
      return;
    }
    const parent = target ? byId.get(target) : null;
    act(moveForm.querySelector('button'), 'Moving…', async () => {
      await patch(`/workspaces/${seg(row.id)}`, { parent_id: target });
      return parent ? `Moved ${row.name} under ${parent.name}.` : `Moved ${row.name} to the top level.`;
    });
  });

  close.addEventListener('click', () => select(null));

  /** Brings the panel up to date with the page's list (states, names, possible parents). */
  function refresh() {
    const row = current();
    if (!row) {
      el.hidden = true;
      return;
    }
    el.hidden = false;
    el.dataset.id = row.id;
    title.textContent = row.name;
    const b = badge(row.status);
    failureTitle(b, row);
    fill(status, b);
    const why = failureReason(row);
    reason.hidden = !why;
    reason.textContent = why ? `Why: ${why}` : '';
    const touched = subtree(row);
    scope.textContent = touched.length > 1
      ? `Pause and delete act on ${row.name} and its ${plural(touched.length - 1, 'descendant')} (${touched.length} in all).`
      : 'No descendants.';
    const can = allowed(row, context().byId);
    for (const [key, node] of [['restart', restart], ['pause', pause], ['resume', resume], ['delete', remove]]) {
      if (node.getAttribute('aria-busy')) continue;
      node.disabled = !can[key].ok;
      node.title = can[key].ok ? '' : `Not now: ${can[key].why}.`;
    }
    open.href = `#/workspaces/${encodeURIComponent(row.id)}`;
    // Parents: every other workspace; its own subtree is listed but disabled.
    const inside = new Set(touched.map((r) => r.id));
    const keep = parentSelect.value;
    const rows = [...context().rows].sort((a, c) => a.name.localeCompare(c.name));
    fill(parentSelect,
      h('option', { value: '', text: '(top level)' }),
      rows.map((r) => h('option', {
        value: r.id,
        disabled: inside.has(r.id),
        text: inside.has(r.id) ? `${r.name} (in its subtree)` : r.name,
      })));
    parentSelect.value = parentSelect.dataset.for === row.id ? keep : (row.parent_id || '');
    parentSelect.dataset.for = row.id;
  }

  /** Shows the panel for workspace `id` (null hides it). */
  function select(id) {
    const changedSelection = id !== selected;
    selected = id;
    if (changedSelection) {
      const row = current();
      nameInput.value = row ? row.name : '';
      delete parentSelect.dataset.for;
    }
    refresh();
    if (id && changedSelection) el.scrollIntoView({ block: 'nearest' });
  }

  return { el, select, refresh, selected: () => selected };
}

/** The reason a workspace is unwell, when its status has one to give. */
export function failureReason(row) {
  if (!row || !row.last_sample_error) return '';
  return ['failed', 'degraded', 'offline'].includes(row.status) ? row.last_sample_error : '';
}

/** Puts the failure reason on a list badge as its tooltip. */
export function failureTitle(el, row) {
  const why = failureReason(row);
  if (why) {
    el.title = why;
    el.dataset.reason = why;
  } else {
    el.removeAttribute('title');
    delete el.dataset.reason;
  }
}
