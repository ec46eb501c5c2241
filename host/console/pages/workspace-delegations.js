// The workspace page's delegations: those this workspace started (`GET .../delegations`, one
// `delegate` row per delegation plus its `delegate_result`, shown as one line), those it
// received (the `a2a_receive` rows another workspace caused, `source=agent`; a delegation's
// carries its `delegation_id` in the message metadata, a plain A2A call does not), and a form
// to delegate a task to a workspace the hierarchy lets it reach (`GET /registry/:id/peers`:
// its parent, children and siblings).

import { get, post, seg } from '../api.js';
import { subscribe } from '../events.js';
import { busy, debounce, fill, h, note, short, table, time } from '../dom.js';
import { answerOf, metadata, requestText } from './workspace-words.js';

/** One line per delegation from the rows of `GET .../delegations` (newest first). */
export function mergeDelegations(rows) {
  const byId = new Map();
  for (const row of rows) {
    const key = row.delegation_id || row.id;
    let item = byId.get(key);
    if (!item) {
      item = { id: key, created_at: row.created_at, target_id: row.target_id, status: row.status };
      byId.set(key, item);
    }
    if (row.type === 'delegate') {
      item.created_at = row.created_at;
      item.status = row.status;
      item.task = row.task_preview;
    }
    item.target_id = item.target_id || row.target_id;
    item.task = item.task || row.task_preview;
    item.answer = item.answer || row.response_preview;
    item.error = item.error || row.error;
  }
  return [...byId.values()];
}

/**
 * Builds the tab for workspace `id` at `base`. `self()` is the workspace's row (for its parent)
 * and `nameOf(id)` a workspace's name. Returns its element, `load()` and `stop()`.
 */
export function delegationsPanel(base, id, self, nameOf) {
  let alive = true;
  let peers = [];

  const target = h('select', { id: 'delegate-target', required: true, 'aria-label': 'delegate to' });
  const task = h('textarea', { id: 'delegate-task', rows: 3, placeholder: 'The task, in words', required: true, 'aria-label': 'task' });
  const submit = h('button', { type: 'submit', id: 'delegate-submit', text: 'Delegate' });
  const out = h('p', { class: 'note', id: 'delegate-note', hidden: true });
  const form = h('form', { class: 'delegate-form', id: 'delegate-form' },
    h('label', { for: 'delegate-target', text: 'To' }), target,
    h('label', { for: 'delegate-task', text: 'Task' }), task,
    h('div', {}, submit));
  const outgoing = h('div', { id: 'delegations-out' });
  const incoming = h('div', { id: 'delegations-in' });

  const element = h('div', { class: 'delegations' },
    h('h3', { text: 'Delegate a task' }),
    h('p', { class: 'muted small', text: 'The host hands the task to the chosen workspace as this workspace, and records the answer below.' }),
    form, out,
    h('h3', { text: 'Sent by this workspace' }), outgoing,
    h('h3', { text: 'Received from other workspaces' }), incoming);

  /** Another workspace's name, linking to its page. */
  function link(wid) {
    if (!wid) return '';
    return h('a', { href: `#/workspaces/${encodeURIComponent(wid)}/delegations`, text: nameOf(wid) });
  }

  function relation(peer) {
    const me = self();
    if (me && peer.id === me.parent_id) return 'parent';
    if (peer.parent_id === id) return 'child';
    return 'sibling';
  }

  async function loadPeers() {
    try {
      peers = await get(`/registry/${seg(id)}/peers`);
    } catch (err) {
      note(out, 'error', `Could not list the workspaces this one may reach: ${err.message}`);
      return;
    }
    if (!alive) return;
    const chosen = target.value;
    const sorted = [...peers].sort((a, b) => a.name.localeCompare(b.name));
    fill(target, sorted.length
      ? sorted.map((p) => h('option', { value: p.id, text: `${p.name} (${relation(p)}, ${p.status})` }))
      : h('option', { value: '', text: 'No workspace to delegate to: it has no parent, children or siblings' }));
    if (chosen && sorted.some((p) => p.id === chosen)) target.value = chosen;
    submit.disabled = !sorted.length;
  }

  async function loadOutgoing() {
    try {
      const rows = await get(`${base}/delegations`);
      if (!alive) return;
      const items = mergeDelegations(rows);
      fill(outgoing, items.length ? table(['When', 'To', 'Task', 'Status', 'Answer'], items.map((d) => ({
        attrs: { dataset: { delegation: d.id, status: d.status || '' } },
        cells: [time(d.created_at), link(d.target_id), d.task || '',
          h('span', { class: `dstatus dstatus-${d.status}`, text: d.status || '' }),
          d.error ? h('span', { class: 'error-text', text: d.error }) : (d.answer || '')],
      })), { class: 'delegations-table' }) : h('p', { class: 'muted', id: 'delegations-out-empty', text: 'This workspace has not delegated anything.' }));
    } catch (err) {
      fill(outgoing, h('p', { class: 'note error', text: err.message }));
    }
  }

  async function loadIncoming() {
    try {
      const rows = await get(`${base}/activity?type=a2a_receive&source=agent&limit=50`);
      if (!alive) return;
      fill(incoming, rows.length ? table(['When', 'From', 'Kind', 'Message', 'Status', 'Answer'], rows.map((r) => {
        const delegation = metadata(r.request_body, 'delegation_id');
        const reply = answerOf(r.response_body);
        const answer = r.status === 'error'
          ? h('span', { class: 'error-text', text: r.error_detail || reply.error || 'failed' })
          : (reply.queued ? 'queued: the agent was busy' : (reply.error ? h('span', { class: 'error-text', text: reply.error }) : reply.text));
        return {
          attrs: { dataset: { activity: r.id, delegation: delegation || '', status: r.status } },
          cells: [time(r.created_at), link(r.source_id), delegation ? 'delegation' : (r.method || 'message'),
            requestText(r.request_body), r.status, answer],
        };
      }), { class: 'delegations-table' }) : h('p', { class: 'muted', id: 'delegations-in-empty', text: 'No other workspace has sent this one anything.' }));
    } catch (err) {
      fill(incoming, h('p', { class: 'note error', text: err.message }));
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const targetId = target.value;
    const text = task.value.trim();
    if (!targetId || !text) {
      note(out, 'error', 'Choose a workspace and describe the task.');
      return;
    }
    const done = await busy(submit, 'Delegating…', out, () => post(`${base}/delegate`, { target_id: targetId, task: text }));
    if (!done || !alive) return;
    task.value = '';
    const to = nameOf(targetId);
    note(out, done.warning ? 'error' : 'ok', done.idempotent_hit
      ? `Already delegated to ${to} (${done.status}).`
      : `Delegated to ${to}; its answer shows below when it comes (delegation ${short(done.delegation_id, 8)}).${done.warning ? ` Warning: ${done.warning}.` : ''}`);
    loadOutgoing();
  });

  const reloadOutgoing = debounce(loadOutgoing, 300);
  const reloadIncoming = debounce(loadIncoming, 300);
  const reloadPeers = debounce(loadPeers, 1000);

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      reloadOutgoing();
      reloadIncoming();
      reloadPeers();
      return;
    }
    if (frame.event.startsWith('DELEGATION_') && frame.workspace_id === id) {
      reloadOutgoing();
    } else if (frame.event === 'ACTIVITY_LOGGED' && frame.workspace_id === id
      && frame.payload && frame.payload.activity_type === 'a2a_receive' && frame.payload.source_id) {
      reloadIncoming();
    } else if (frame.event.startsWith('WORKSPACE_') && frame.event !== 'WORKSPACE_HEARTBEAT'
      && frame.workspace_id !== id) {
      // The targets show each peer's status, and a new child or sibling is a new target.
      reloadPeers();
    }
  });

  return {
    element,
    load() {
      loadPeers();
      loadOutgoing();
      loadIncoming();
    },
    stop() {
      alive = false;
      unsubscribe();
    },
  };
}
