// The plugin drift queue: updates the drift sweeper found for tracked plugins; apply or dismiss
// one, apply them all (canary workspaces first), or run a sweep now.

import { get, post, seg } from '../api.js';
import { busy, fill, h, note, short, table, time } from '../dom.js';

function render(main) {
  let alive = true;
  const out = h('p', { class: 'note', id: 'drift-note', hidden: true });
  const holder = h('div', { id: 'drift-list' }, h('p', { class: 'muted', text: 'Loading…' }));
  const checkButton = h('button', { type: 'button', class: 'secondary', id: 'drift-check', text: 'Check now' });
  const applyAllButton = h('button', { type: 'button', id: 'drift-apply-all', text: 'Apply all' });

  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Plugin drift' }), checkButton, applyAllButton),
    h('p', { class: 'muted', text: 'Tracked plugins whose upstream moved. Apply all updates canary workspaces first and stops before production if one fails.' }),
    out,
    h('section', { class: 'card' }, holder),
  );

  async function load() {
    let pending;
    let names = new Map();
    try {
      pending = await get('/admin/plugin-updates-pending');
      const workspaces = await get('/workspaces');
      names = new Map(workspaces.map((w) => [w.id, w.name]));
    } catch (err) {
      note(out, 'error', err.message);
      return;
    }
    if (!alive) return;
    fill(holder, pending.length
      ? table(['Workspace', 'Plugin', 'Tracking', 'Installed', 'Latest', 'Found', ''], pending.map((u) => ({
        attrs: { dataset: { id: u.id } },
        cells: [h('a', { href: `#/workspaces/${encodeURIComponent(u.workspace_id)}`, text: names.get(u.workspace_id) || short(u.workspace_id, 8) }),
          u.plugin_name, u.tracked_ref, h('code', { text: short(u.current_sha) }), h('code', { text: short(u.latest_sha) }), time(u.created_at),
          h('span', { class: 'buttons' },
            h('button', {
              type: 'button', class: 'small', text: 'Apply',
              onclick: (e) => act(e.target, 'Applying…', () => post(`/admin/plugin-updates/${seg(u.id)}/apply`), () => `Applied ${u.plugin_name} on ${names.get(u.workspace_id) || u.workspace_id}.`),
            }),
            h('button', {
              type: 'button', class: 'secondary small', text: 'Dismiss',
              onclick: (e) => act(e.target, 'Dismissing…', () => post(`/admin/plugin-updates/${seg(u.id)}/dismiss`), (r) => `Update ${r.status}.`),
            }))],
      })), { id: 'drift-table' })
      : h('p', { class: 'muted', id: 'drift-empty', text: 'No pending updates.' }));
  }

  async function act(button, label, call, done) {
    const reply = await busy(button, label, out, call);
    if (reply) {
      note(out, 'ok', done(reply));
      load();
    }
  }

  checkButton.addEventListener('click', () => act(checkButton, 'Checking…', () => post('/admin/plugin-updates/check'),
    (r) => `Drift check done: ${r.queued} update${r.queued === 1 ? '' : 's'} queued.`));
  applyAllButton.addEventListener('click', () => act(applyAllButton, 'Applying all…', () => post('/admin/plugin-updates/apply-all'), (r) => {
    let message = `Apply all: ${r.applied.length} applied`;
    if (r.failed) message += `; ${r.failed.plugin_name} failed on ${r.failed.update_tier} workspace ${r.failed.workspace_id}`;
    if (r.stopped) message += '; production workspaces were left alone';
    return `${message}.`;
  }));

  load();
  return () => {
    alive = false;
  };
}

export const page = { name: 'drift', render };
