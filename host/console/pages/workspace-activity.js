// The workspace page's activity log: newest first, filtered by type on the host
// (`?type=`), each row expandable to its request and response bodies (indented JSON, as text).
// One restart cycle writes several rows — the policy's `restart_decision` (several when a burst
// of changes is coalesced), the agent's note that it heard the restart coming (the reference
// agent logs `restart pending: ...`), the `restart` itself, then the host's restart-context
// message to the agent (an `a2a_receive` from `system:restart-context`) — and they are shown
// as one group.

import { get } from '../api.js';
import { subscribe } from '../events.js';
import { debounce, fill, h, note, time } from '../dom.js';
import { metadata, pretty, restartWords, triggerWords } from './workspace-words.js';

const TYPES = [
  'a2a_receive', 'a2a_send', 'delegation', 'restart_decision', 'restart', 'task_update',
  'agent_log', 'skill_promotion', 'memory_write', 'error',
];
const LIMIT = 100;
const COLUMNS = 5;

/** Which part of a restart cycle a row is, or null. */
function cyclePart(row) {
  if (row.activity_type === 'restart_decision') return 'decision';
  if (row.activity_type === 'restart') return 'restart';
  if (row.activity_type === 'agent_log' && String(row.summary || '').startsWith('restart pending')) return 'pending';
  if (row.activity_type === 'a2a_receive' && metadata(row.request_body, 'source') === 'system:restart-context') return 'context';
  return null;
}

/**
 * Items to show, newest first: `{ row }` or `{ group: [rows oldest first] }`. Rows are taken in
 * time order. A decision, the agent's "restart pending" note and the restart join the latest
 * cycle that has not restarted yet (a coalesced burst has several decisions); the restart
 * context joins the latest cycle that restarted and was not told yet. Anything else is a row
 * of its own.
 */
export function groupCycles(rows) {
  const items = [];
  const cycles = [];
  for (const row of [...rows].reverse()) {
    const part = cyclePart(row);
    if (!part) {
      items.push({ row });
      continue;
    }
    const latest = cycles[cycles.length - 1];
    let cycle = null;
    if (part === 'decision' || part === 'pending' || part === 'restart') {
      if (latest && !latest.parts.has('restart') && !latest.parts.has('context')) cycle = latest;
    } else {
      cycle = [...cycles].reverse().find((c) => c.parts.has('restart') && !c.parts.has('context')) || null;
    }
    if (!cycle) {
      cycle = { group: [], parts: new Set() };
      cycles.push(cycle);
      items.push(cycle);
    }
    cycle.group.push(row);
    cycle.parts.add(part);
  }
  return items
    .map((item) => (item.group && item.group.length === 1 ? { row: item.group[0] } : item))
    .reverse();
}

/** One line saying what a restart cycle did. */
export function cycleWords(rows) {
  const words = [];
  const decisions = rows.filter((r) => r.activity_type === 'restart_decision');
  if (decisions.length) {
    const first = decisions[0].request_body || {};
    const last = decisions[decisions.length - 1].request_body || {};
    let why = triggerWords(first.trigger);
    if (decisions.length > 1) why += ` and ${decisions.length - 1} more change${decisions.length > 2 ? 's' : ''}`;
    words.push(why, `policy: ${restartWords(last.decision)}`);
  }
  const restarts = rows.filter((r) => r.activity_type === 'restart');
  if (restarts.length === 1) words.push(restarts[0].summary || 'restarted');
  else if (restarts.length > 1) words.push(`restarted ${restarts.length} times`);
  const context = rows.find((r) => cyclePart(r) === 'context');
  if (context) {
    words.push(context.status === 'ok' ? 'the agent was told it restarted' : `telling the agent it restarted: ${context.status}`);
  }
  return `Restart cycle: ${words.join(' → ')}`;
}

/**
 * Builds the tab for the workspace at `base` (id `id`); `nameOf(id)` names a workspace.
 * Returns its element, `load()` and `stop()`.
 */
export function activityPanel(base, id, nameOf) {
  let alive = true;
  /** Rows and cycles the operator opened (a row's id, `cycle:` and a cycle's first row's id). */
  const expanded = new Set();

  const filter = h('select', { id: 'activity-filter', 'aria-label': 'activity type' },
    h('option', { value: '', text: 'every type, restart cycles grouped' }),
    TYPES.map((t) => h('option', { value: t, text: t })));
  const list = h('div', { id: 'activity-list' });
  const out = h('p', { class: 'note', id: 'activity-note', hidden: true });
  const element = h('div', { class: 'activity' },
    h('div', { class: 'inline' }, h('label', { for: 'activity-filter', text: 'Show' }), filter,
      h('span', { class: 'muted small', text: `the latest ${LIMIT}; select a row for its bodies` })),
    out, list);

  function detail(row) {
    const facts = [
      ['Type', row.activity_type], ['Method', row.method], ['Status', row.status],
      ['From', row.source_id ? nameOf(row.source_id) : null], ['To', row.target_id ? nameOf(row.target_id) : null],
      ['Duration', row.duration_ms !== null && row.duration_ms !== undefined ? `${row.duration_ms} ms` : null],
      ['When', time(row.created_at)], ['ID', row.id],
    ].filter(([, v]) => v !== null && v !== undefined && v !== '');
    const block = (title, value, cls) => (value === null || value === undefined ? null
      : h('div', { class: `body ${cls}` }, h('h4', { text: title }), h('pre', { text: pretty(value) })));
    return h('div', { class: 'activity-detail-body' },
      h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
      block('Error', row.error_detail, 'error-detail'),
      block('Request', row.request_body, 'request-body'),
      block('Response', row.response_body, 'response-body'),
      block('Tool trace', row.tool_trace, 'tool-trace'),
      row.request_body == null && row.response_body == null && row.tool_trace == null && !row.error_detail
        ? h('p', { class: 'muted', text: 'No bodies recorded.' }) : null);
  }

  /** A row and its (hidden unless open) detail, as two table rows. */
  function rowNodes(row, hiddenInGroup) {
    const open = expanded.has(row.id);
    const toggle = h('button', { type: 'button', class: 'link toggle', 'aria-expanded': open ? 'true' : 'false', 'aria-label': 'show the bodies', text: open ? '▾' : '▸' });
    const tr = h('tr', { class: 'activity-row', dataset: { id: row.id, type: row.activity_type, status: row.status }, hidden: hiddenInGroup },
      h('td', {}, toggle), h('td', { text: time(row.created_at) }), h('td', { text: row.activity_type }),
      h('td', { text: row.summary || row.method || '' }), h('td', { text: row.status || '' }));
    const more = h('tr', { class: 'activity-detail', dataset: { id: row.id }, hidden: !open || hiddenInGroup },
      h('td', { colspan: COLUMNS }, open ? detail(row) : null));
    tr.addEventListener('click', () => {
      const opening = !expanded.has(row.id);
      if (opening) expanded.add(row.id);
      else expanded.delete(row.id);
      toggle.textContent = opening ? '▾' : '▸';
      toggle.setAttribute('aria-expanded', opening ? 'true' : 'false');
      fill(more.firstChild, opening ? detail(row) : null);
      more.hidden = !opening;
    });
    return [tr, more];
  }

  function groupNode(rows) {
    const key = `cycle:${rows[0].id}`;
    const open = expanded.has(key);
    const last = rows[rows.length - 1];
    const toggle = h('button', { type: 'button', class: 'link toggle', 'aria-expanded': open ? 'true' : 'false', 'aria-label': 'show the rows of this restart cycle', text: open ? '▾' : '▸' });
    const head = h('tr', { class: 'cycle-head' },
      h('td', {}, toggle), h('td', { text: time(rows[0].created_at) }), h('td', { text: `${rows.length} rows` }),
      h('td', { text: cycleWords(rows) }), h('td', { text: last.status || '' }));
    const body = h('tbody', { class: 'restart-cycle', dataset: { rows: String(rows.length), first: rows[0].id, expanded: String(open) } }, head);
    // Inside a cycle, newest first like the rest of the log.
    const members = [...rows].reverse().map((row) => rowNodes(row, !open));
    for (const [tr, more] of members) body.append(tr, more);
    head.addEventListener('click', () => {
      const opening = !expanded.has(key);
      if (opening) expanded.add(key);
      else expanded.delete(key);
      body.dataset.expanded = String(opening);
      toggle.textContent = opening ? '▾' : '▸';
      toggle.setAttribute('aria-expanded', opening ? 'true' : 'false');
      for (const [tr, more] of members) {
        tr.hidden = !opening;
        more.hidden = !opening || !expanded.has(tr.dataset.id);
        if (!more.hidden && !more.firstChild.firstChild) {
          fill(more.firstChild, detail(rows.find((r) => r.id === tr.dataset.id)));
        }
      }
    });
    return body;
  }

  /** What the table shows now, so an unchanged reload leaves it (and the pointer) alone. */
  let shown = '';

  async function load() {
    const type = filter.value;
    const query = `limit=${LIMIT}${type ? `&type=${encodeURIComponent(type)}` : ''}`;
    let rows;
    try {
      rows = await get(`${base}/activity?${query}`);
    } catch (err) {
      note(out, 'error', err.message);
      return;
    }
    if (!alive || filter.value !== type) return;
    note(out, 'info', '');
    const signature = JSON.stringify([type, rows.map((r) => [r.id, r.status, r.summary])]);
    if (signature === shown) return;
    shown = signature;
    if (!rows.length) {
      fill(list, h('p', { class: 'muted', id: 'activity-empty', text: type ? `No ${type} activity.` : 'No activity yet.' }));
      return;
    }
    // A filtered view shows the rows of that type one by one.
    const items = type ? rows.map((row) => ({ row })) : groupCycles(rows);
    const bodies = items.map((item) => (item.group ? groupNode(item.group)
      : h('tbody', { class: 'activity-item' }, rowNodes(item.row, false))));
    fill(list, h('table', { class: 'activity-table', id: 'activity-table' },
      h('thead', {}, h('tr', {}, ['', 'When', 'Type', 'Summary', 'Status'].map((c) => h('th', { text: c })))),
      bodies));
  }

  const reload = debounce(load, 400);
  filter.addEventListener('change', load);

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      reload();
      return;
    }
    // Restart cycles write their rows without an event of their own; the status events that
    // come with them are the cue.
    if (frame.workspace_id === id && frame.event !== 'WORKSPACE_HEARTBEAT') reload();
  });

  return {
    element,
    load,
    stop() {
      alive = false;
      unsubscribe();
    },
  };
}
