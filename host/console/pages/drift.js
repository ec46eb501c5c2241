// The plugin drift queue: updates the drift sweeper found for tracked plugins; apply or dismiss
// one, apply them all (canary workspaces first), or run a sweep now. Also when drift was last
// checked and when the sweeper runs next, and each workspace's update tier (the rollout order).
// The page follows the sweeps, installs and tier changes live.

import { get, post, seg } from '../api.js';
import { subscribe } from '../events.js';
import { busy, debounce, fill, h, note, short, table, time } from '../dom.js';

/** Events after which the queue, the sweep times or the tiers may have changed. */
const DRIFT_EVENTS = new Set(['PLUGIN_DRIFT_SWEPT', 'PLUGIN_INSTALLED', 'PLUGIN_UNINSTALLED', 'WORKSPACE_UPDATED', 'WORKSPACE_REMOVED']);

function every(secs) {
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0) return `${secs / 60} min`;
  return `${secs} s`;
}

function tierBadge(tier) {
  const value = tier || 'production';
  return h('span', { class: `tier tier-${value}`, dataset: { tier: value }, text: value });
}

function render(main) {
  let alive = true;
  let loadFailed = false;
  // What the page was last drawn from: a reload that finds the same is not redrawn, so a
  // button is never replaced under the operator's pointer for nothing.
  let drawn = '';
  const out = h('p', { class: 'note', id: 'drift-note', hidden: true });
  const sweep = h('p', { class: 'sweep', id: 'drift-sweep' }, h('span', { class: 'muted', text: 'Reading the sweep times…' }));
  const holder = h('div', { id: 'drift-list' }, h('p', { class: 'muted', text: 'Loading…' }));
  const tiers = h('div', { id: 'drift-tiers' });
  const checkButton = h('button', { type: 'button', class: 'secondary', id: 'drift-check', text: 'Check now' });
  const applyAllButton = h('button', { type: 'button', id: 'drift-apply-all', text: 'Apply all', disabled: true, title: 'nothing to apply' });

  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Plugin drift' }), checkButton, applyAllButton),
    h('p', { class: 'muted', text: 'Tracked plugins whose upstream moved. Apply all updates canary workspaces first and stops before production if one fails.' }),
    sweep,
    out,
    h('section', { class: 'card' }, holder),
    h('section', { class: 'card' }, h('h2', { text: 'Update tiers (the rollout order)' }), tiers),
  );

  function showSweep(times) {
    const parts = [];
    if (times.last_run_at) {
      const counts = [`${times.last_checked ?? 0} tracked plugin${times.last_checked === 1 ? '' : 's'} checked`,
        `${times.last_queued ?? 0} queued`];
      if (times.last_failed) counts.push(`${times.last_failed} could not be checked`);
      parts.push(h('span', { class: 'last' }, 'Last checked ', h('time', { datetime: times.last_run_at, text: time(times.last_run_at) }),
        ` (${times.last_trigger === 'manual' ? 'Check now' : 'the sweeper'}: ${counts.join(', ')})`));
    } else {
      parts.push(h('span', { class: 'last', text: 'Not checked yet since the host started keeping records.' }));
    }
    if (times.next_run_at) {
      const due = new Date(times.next_run_at).getTime() <= Date.now();
      parts.push(' · ', h('span', { class: 'next' }, due ? 'next sweep due now (it was ' : 'next sweep around ',
        h('time', { datetime: times.next_run_at, text: time(times.next_run_at) }), due ? ')' : '',
        ` (every ${every(times.interval_secs)})`));
    } else {
      parts.push(' · ', h('span', { class: 'next', text: `the sweeper runs every ${every(times.interval_secs)}` }));
    }
    sweep.dataset.last = times.last_run_at || '';
    sweep.dataset.next = times.next_run_at || '';
    sweep.dataset.interval = String(times.interval_secs);
    fill(sweep, parts);
  }

  function showTiers(workspaces) {
    const live = workspaces.filter((w) => w.status !== 'removed');
    if (!live.length) {
      fill(tiers, h('p', { class: 'muted', text: 'No workspaces.' }));
      return;
    }
    const groups = new Map([['canary', []], ['production', []]]);
    for (const w of live) {
      const tier = w.update_tier || 'production';
      if (!groups.has(tier)) groups.set(tier, []);
      groups.get(tier).push(w);
    }
    fill(tiers, [...groups.entries()].filter(([, list]) => list.length).map(([tier, list]) => h('p', { class: 'tier-group', dataset: { tier } },
      tierBadge(tier), ` ${tier === 'canary' ? 'updated first' : tier === 'production' ? 'updated once every canary is healthy' : ''}: `,
      list.sort((a, b) => a.name.localeCompare(b.name)).map((w, i) => [i ? ', ' : '',
        h('a', { href: `#/workspaces/${encodeURIComponent(w.id)}`, dataset: { id: w.id, tier }, text: w.name })]))));
  }

  async function load() {
    let pending;
    let workspaces;
    let times;
    try {
      [pending, workspaces, times] = await Promise.all([
        get('/admin/plugin-updates-pending'), get('/workspaces'), get('/admin/plugin-updates/sweep')]);
    } catch (err) {
      note(out, 'error', err.message);
      loadFailed = true;
      return;
    }
    if (!alive) return;
    if (loadFailed) {
      loadFailed = false;
      note(out, 'info', '');
    }
    // Set every time: a finished action re-enables its button, whatever the queue holds.
    applyAllButton.disabled = !pending.length;
    applyAllButton.title = pending.length ? `apply ${pending.length} update${pending.length === 1 ? '' : 's'}, canary workspaces first` : 'nothing to apply';
    // Heartbeats change the workspace rows all the time; only what the page shows counts.
    const signature = JSON.stringify([pending, times,
      workspaces.map((w) => [w.id, w.name, w.update_tier, w.status === 'removed'])]);
    if (signature === drawn) return;
    drawn = signature;
    const byId = new Map(workspaces.map((w) => [w.id, w]));
    const name = (id) => (byId.get(id) ? byId.get(id).name : short(id, 8));
    nameOf = name;
    showSweep(times);
    showTiers(workspaces);
    fill(holder, pending.length
      ? table(['Workspace', 'Update tier', 'Plugin', 'Tracking', 'Installed', 'Latest', 'Found', ''], pending.map((u) => ({
        attrs: { dataset: { id: u.id, tier: (byId.get(u.workspace_id) || {}).update_tier || '' } },
        cells: [h('a', { href: `#/workspaces/${encodeURIComponent(u.workspace_id)}`, text: name(u.workspace_id) }),
          tierBadge((byId.get(u.workspace_id) || {}).update_tier),
          u.plugin_name, u.tracked_ref, h('code', { text: short(u.current_sha) }), h('code', { text: short(u.latest_sha) }), time(u.created_at),
          h('span', { class: 'buttons' },
            h('button', {
              type: 'button', class: 'small', text: 'Apply',
              onclick: (e) => act(e.target, 'Applying…', () => post(`/admin/plugin-updates/${seg(u.id)}/apply`), () => `Applied ${u.plugin_name} on ${name(u.workspace_id)}.`),
            }),
            h('button', {
              type: 'button', class: 'secondary small', text: 'Dismiss',
              onclick: (e) => act(e.target, 'Dismissing…', () => post(`/admin/plugin-updates/${seg(u.id)}/dismiss`), (r) => `Update ${r.status}.`),
            }))],
      })), { id: 'drift-table' })
      : h('p', { class: 'muted', id: 'drift-empty', text: 'No pending updates.' }));
  }

  // Workspace names for messages, from the last load.
  let nameOf = (id) => short(id, 8);

  /** Runs an action; `done` turns its answer into a message, or `[kind, message]`. */
  async function act(button, label, call, done) {
    const reply = await busy(button, label, out, call);
    if (reply) {
      const said = done(reply);
      const [kind, message] = Array.isArray(said) ? said : ['ok', said];
      note(out, kind, message);
    }
    load();
  }

  checkButton.addEventListener('click', () => act(checkButton, 'Checking…', () => post('/admin/plugin-updates/check'),
    (r) => `Drift check done: ${r.queued} update${r.queued === 1 ? '' : 's'} queued.`));
  applyAllButton.addEventListener('click', () => act(applyAllButton, 'Applying all…', () => post('/admin/plugin-updates/apply-all'), (r) => {
    let message = `Apply all: ${r.applied.length} applied`;
    if (r.failed) message += `; ${r.failed.plugin_name} failed on ${r.failed.update_tier} workspace ${nameOf(r.failed.workspace_id)}: ${r.failed.error}`;
    if (r.stopped) message += '; production workspaces were left alone';
    return [r.failed ? 'error' : 'ok', `${message}.`];
  }));

  const loadSoon = debounce(load, 300);
  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED' || DRIFT_EVENTS.has(frame.event)) loadSoon();
  });

  load();
  return () => {
    alive = false;
    unsubscribe();
  };
}

export const page = { name: 'drift', render };
