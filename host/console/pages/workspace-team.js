// The workspace page's team and agent: expand the team its template declares or collapse it
// (`POST .../expand`, `.../collapse`: the operator only), and the model its agent runs as a
// history of assignments (`/agent`: assign, replace with a reason, remove).

import { del, get, patch, post } from '../api.js';
import { busy, fill, h, note, table, time } from '../dom.js';

/** Builds the section for the workspace at `base`. Returns its element, `load()` and `stop()`. */
export function teamPanel(base) {
  let alive = true;

  const expand = h('button', { type: 'button', class: 'secondary', id: 'team-expand', text: 'Expand team' });
  const collapse = h('button', { type: 'button', class: 'secondary', id: 'team-collapse', text: 'Collapse team' });
  const teamOut = h('p', { class: 'note', id: 'team-note', hidden: true });
  expand.addEventListener('click', async () => {
    const done = await busy(expand, 'Expanding…', teamOut, () => post(`${base}/expand`));
    if (!done || !alive) return;
    const made = done.created.map((m) => m.name);
    note(teamOut, 'ok', made.length
      ? `Created ${made.join(', ')}.`
      : `Nothing to create: ${done.existing.join(', ')} already there.`);
  });
  collapse.addEventListener('click', async () => {
    const done = await busy(collapse, 'Collapsing…', teamOut, () => post(`${base}/collapse`));
    if (!done || !alive) return;
    const n = done.removed.length;
    note(teamOut, 'ok', n ? `Removed ${n} workspace${n === 1 ? '' : 's'} the team had made.` : 'No team members to remove.');
  });

  const current = h('p', { id: 'agent-current', class: 'muted', text: 'Loading…' });
  const model = h('input', { id: 'agent-model', placeholder: 'model, e.g. gpt-4o-mini', spellcheck: 'false', 'aria-label': 'model' });
  const reason = h('input', { id: 'agent-reason', placeholder: 'why (optional)', 'aria-label': 'reason' });
  const save = h('button', { type: 'submit', id: 'agent-save', text: 'Assign' });
  const remove = h('button', { type: 'button', class: 'secondary', id: 'agent-remove', text: 'Remove', disabled: true });
  const agentOut = h('p', { class: 'note', id: 'agent-note', hidden: true });
  const history = h('div', { id: 'agent-history' });
  const form = h('form', { class: 'inline', id: 'agent-form' }, model, reason, save, remove);
  let active = null;

  async function load() {
    try {
      const answer = await get(`${base}/agent`);
      if (!alive) return;
      active = answer.current;
      fill(current, active ? `Runs ${active.model} since ${time(active.created_at)}.` : 'No agent assigned: it runs the default model.');
      save.textContent = active ? 'Replace' : 'Assign';
      remove.disabled = !active;
      fill(history, answer.history.length ? table(['Model', 'Status', 'From', 'Until', 'Why it ended'], answer.history.map((a) => ({
        attrs: { dataset: { status: a.status } },
        cells: [a.model, a.status, time(a.created_at), a.removed_at ? time(a.removed_at) : '', a.removal_reason || ''],
      })), { class: 'agent-history-table' }) : '');
    } catch (err) {
      if (alive) fill(current, err.message);
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const chosen = model.value.trim();
    if (!chosen) {
      note(agentOut, 'error', 'Name the model the agent should run.');
      return;
    }
    const why = reason.value.trim();
    const done = await busy(save, 'Saving…', agentOut, () => (active
      ? patch(`${base}/agent`, why ? { model: chosen, reason: why } : { model: chosen })
      : post(`${base}/agent`, { model: chosen })));
    if (!done || !alive) return;
    note(agentOut, 'ok', `The agent now runs ${chosen}; it restarts as the restart policy decides.`);
    model.value = '';
    reason.value = '';
    load();
  });
  remove.addEventListener('click', async () => {
    const why = reason.value.trim();
    const done = await busy(remove, 'Removing…', agentOut, () => del(`${base}/agent${why ? `?reason=${encodeURIComponent(why)}` : ''}`));
    if (!done || !alive) return;
    note(agentOut, 'ok', 'Removed: the agent runs the default model again.');
    reason.value = '';
    load();
  });

  const element = h('div', { class: 'team' },
    h('h3', { text: 'Team' }),
    h('p', { class: 'muted small', text: 'Expand creates the sub-workspaces its template declares; collapse removes the ones it created.' }),
    h('div', { class: 'buttons' }, expand, collapse), teamOut,
    h('h3', { text: 'Agent' }), current, form, agentOut, history);

  return {
    element,
    load,
    stop() {
      alive = false;
    },
  };
}
