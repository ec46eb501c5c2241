// The workspace page's audit ledger: the security-relevant actions about this workspace
// (`GET /workspaces/:id/audit`, newest first, filtered by type, paged with the host's cursor)
// with who did each, and a check of the whole chain (`GET /admin/audit/verify`, the operator's)
// that names the first row edited, removed or out of order.

import { get } from '../api.js';
import { busy, fill, h, note, short, table, time } from '../dom.js';

const TYPES = [
  'token.minted', 'token.revoked', 'secret.set', 'secret.deleted', 'plugin.installed',
  'plugin.uninstalled', 'memory.global_written', 'approval.decided', 'workspace.moved',
  'terminal.opened',
];
const LIMIT = 50;

/** What the row's detail says, in one line (never a value: the ledger holds none). */
function detailWords(detail) {
  if (!detail || typeof detail !== 'object') return '';
  return Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}

/** Builds the tab for the workspace at `base`. Returns its element, `load()` and `stop()`. */
export function auditPanel(base) {
  let alive = true;
  let cursor = null;
  let rows = [];

  const filter = h('select', { id: 'audit-type', 'aria-label': 'event type' },
    h('option', { value: '', text: 'every action' }),
    TYPES.map((t) => h('option', { value: t, text: t })));
  const verify = h('button', { type: 'button', id: 'audit-verify', class: 'secondary', text: 'Verify the chain' });
  const more = h('button', { type: 'button', id: 'audit-more', class: 'secondary', text: 'Older', hidden: true });
  const out = h('p', { class: 'note', id: 'audit-note', hidden: true });
  const list = h('div', { id: 'audit-list' });
  const element = h('div', { class: 'audit' },
    h('div', { class: 'buttons' }, filter, verify), out, list, more);

  function render() {
    fill(list, rows.length ? table(['When', 'Action', 'By', 'Target', 'Detail', '#'], rows.map((r) => ({
      attrs: { dataset: { type: r.event_type, seq: String(r.seq) } },
      cells: [time(r.created_at), r.event_type, r.actor.startsWith('workspace:') ? `workspace ${short(r.actor.slice(10), 8)}` : r.actor,
        r.target || '', detailWords(r.detail), String(r.seq)],
    })), { class: 'audit-table' }) : h('p', { class: 'muted', id: 'audit-empty', text: 'Nothing recorded.' }));
    more.hidden = !cursor;
  }

  async function page(reset) {
    const query = new URLSearchParams({ limit: String(LIMIT) });
    if (filter.value) query.set('event_type', filter.value);
    if (!reset && cursor) query.set('cursor', cursor);
    try {
      const answer = await get(`${base}/audit?${query}`);
      if (!alive) return;
      rows = reset ? answer.events : rows.concat(answer.events);
      cursor = answer.next_cursor;
      render();
    } catch (err) {
      if (alive) note(out, 'error', err.message);
    }
  }

  const load = () => page(true);
  filter.addEventListener('change', load);
  more.addEventListener('click', () => page(false));
  verify.addEventListener('click', async () => {
    const verdict = await busy(verify, 'Verifying…', out, () => get('/admin/audit/verify'));
    if (!verdict || !alive) return;
    out.dataset.verdict = verdict.ok ? 'ok' : 'broken';
    const key = verdict.key === 'development' ? ' (development key: set SECRETS_ENCRYPTION_KEY in production)' : '';
    if (verdict.ok) note(out, 'ok', `The chain is intact: ${verdict.rows_checked} rows checked${key}.`);
    else note(out, 'error', `The chain is broken at row ${verdict.broken.seq}: ${verdict.broken.reason}.`);
  });

  return {
    element,
    load,
    stop() {
      alive = false;
    },
  };
}
