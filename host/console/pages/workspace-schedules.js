// The workspace page's schedules: the list (`GET .../schedules`: expression, zone, next ticks,
// last run), a create form whose cron field is checked by the host as it is typed
// (`POST .../schedules/preview` answers the next three ticks or the field at fault), and per
// schedule: enable or disable, run now, delete, and its history.

import { del, get, patch, post, seg } from '../api.js';
import { subscribe } from '../events.js';
import { busy, debounce, fill, h, note, table, time } from '../dom.js';

/** Builds the tab for the workspace at `base`. Returns its element, `load()` and `stop()`. */
export function schedulesPanel(base, id) {
  let alive = true;
  let rows = [];
  let shownHistory = null;

  const name = h('input', { id: 'schedule-name', placeholder: 'name', spellcheck: 'false', 'aria-label': 'name' });
  const cron = h('input', { id: 'schedule-cron', placeholder: 'cron: 0 9 * * 1-5, */30 * * * * *, @hourly', spellcheck: 'false', required: true, 'aria-label': 'cron expression' });
  const zone = h('input', { id: 'schedule-timezone', placeholder: 'UTC', spellcheck: 'false', 'aria-label': 'time zone' });
  const prompt = h('textarea', { id: 'schedule-prompt', rows: 3, placeholder: 'The prompt the agent receives', required: true, 'aria-label': 'prompt' });
  const submit = h('button', { type: 'submit', id: 'schedule-submit', text: 'Create', disabled: true });
  const preview = h('p', { class: 'muted small', id: 'schedule-preview', text: 'Type a cron expression to see its next runs.' });
  const out = h('p', { class: 'note', id: 'schedule-note', hidden: true });
  const form = h('form', { class: 'delegate-form', id: 'schedule-form' },
    h('label', { for: 'schedule-name', text: 'Name' }), name,
    h('label', { for: 'schedule-cron', text: 'Cron' }), h('div', {}, cron, preview),
    h('label', { for: 'schedule-timezone', text: 'Time zone' }), zone,
    h('label', { for: 'schedule-prompt', text: 'Prompt' }), prompt,
    h('div', {}), h('div', {}, submit));
  const list = h('div', { id: 'schedule-list' });
  const history = h('div', { id: 'schedule-history' });
  const element = h('div', { class: 'schedules' },
    list, history,
    h('h3', { text: 'New schedule' }), form, out);

  let checked = 0;
  async function check() {
    const expr = cron.value.trim();
    const mine = ++checked;
    if (!expr) {
      submit.disabled = true;
      fill(preview, 'Type a cron expression to see its next runs.');
      preview.className = 'muted small';
      return;
    }
    try {
      const answer = await post(`${base}/schedules/preview`, { cron_expr: expr, timezone: zone.value.trim() });
      if (mine !== checked || !alive) return;
      preview.className = 'muted small ok';
      fill(preview, `Next runs: ${answer.next_runs.map((t) => time(t)).join('; ')}`);
      preview.dataset.valid = 'true';
      submit.disabled = false;
    } catch (err) {
      if (mine !== checked || !alive) return;
      preview.className = 'note error';
      fill(preview, err.message);
      preview.dataset.valid = 'false';
      submit.disabled = true;
    }
  }
  const recheck = debounce(check, 250);
  cron.addEventListener('input', recheck);
  zone.addEventListener('input', recheck);

  function actions(s) {
    const toggle = h('button', { type: 'button', class: 'secondary', dataset: { action: 'toggle' }, text: s.enabled ? 'Disable' : 'Enable' });
    toggle.addEventListener('click', async () => {
      await busy(toggle, '…', out, () => patch(`${base}/schedules/${seg(s.id)}`, { enabled: !s.enabled }));
      load();
    });
    const run = h('button', { type: 'button', class: 'secondary', dataset: { action: 'run' }, text: 'Run now' });
    run.addEventListener('click', async () => {
      const fired = await busy(run, 'Running…', out, () => post(`${base}/schedules/${seg(s.id)}/run`));
      if (fired && alive) {
        note(out, fired.run.status === 'error' ? 'error' : 'ok',
          `${s.name || 'schedule'}: ${fired.run.status}${fired.run.error ? ` (${fired.run.error})` : ''}`);
      }
      load();
    });
    const past = h('button', { type: 'button', class: 'secondary', dataset: { action: 'history' }, text: 'History' });
    past.addEventListener('click', () => showHistory(s));
    const remove = h('button', { type: 'button', class: 'secondary', dataset: { action: 'delete' }, text: 'Delete' });
    remove.addEventListener('click', async () => {
      await busy(remove, '…', out, () => del(`${base}/schedules/${seg(s.id)}`));
      if (shownHistory === s.id) fill(history);
      load();
    });
    return h('span', { class: 'actions' }, toggle, run, past, remove);
  }

  async function showHistory(s) {
    shownHistory = s.id;
    try {
      const runs = await get(`${base}/schedules/${seg(s.id)}/history`);
      if (!alive || shownHistory !== s.id) return;
      fill(history, h('h3', { text: `History of ${s.name || 'the schedule'}` }),
        runs.length ? table(['When', 'Tick', 'Status', 'Duration', 'Error'], runs.map((r) => ({
          attrs: { dataset: { status: r.status } },
          cells: [time(r.timestamp), r.tick_at ? time(r.tick_at) : 'run now', r.status,
            r.duration_ms == null ? '' : `${r.duration_ms} ms`, r.error_detail || ''],
        })), { class: 'schedule-history-table' }) : h('p', { class: 'muted', text: 'It has not fired yet.' }));
    } catch (err) {
      fill(history, h('p', { class: 'note error', text: err.message }));
    }
  }

  async function load() {
    try {
      rows = await get(`${base}/schedules`);
    } catch (err) {
      fill(list, h('p', { class: 'note error', text: err.message }));
      return;
    }
    if (!alive) return;
    fill(list, rows.length ? table(['Name', 'Cron', 'Zone', 'Next runs', 'Last run', 'Runs', 'Source', ''], rows.map((s) => ({
      attrs: { dataset: { schedule: s.id, enabled: String(s.enabled) } },
      cells: [s.name, h('code', { text: s.cron_expr }), s.timezone,
        s.enabled ? (s.upcoming || []).map((t) => time(t)).join('; ') : 'disabled',
        s.last_run_at ? `${time(s.last_run_at)}: ${s.last_status}${s.last_error ? ` (${s.last_error})` : ''}` : 'never',
        String(s.run_count), s.source, actions(s)],
    })), { class: 'schedules-table' }) : h('p', { class: 'muted', id: 'schedules-empty', text: 'No schedules yet.' }));
    if (shownHistory) {
      const shown = rows.find((s) => s.id === shownHistory);
      if (shown) showHistory(shown);
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), cron_expr: cron.value.trim(), prompt: prompt.value };
    if (zone.value.trim()) body.timezone = zone.value.trim();
    const created = await busy(submit, 'Creating…', out, () => post(`${base}/schedules`, body));
    if (!created || !alive) return;
    note(out, 'ok', `Created; it first runs at ${time(created.next_run_at)}.`);
    name.value = '';
    prompt.value = '';
    load();
  });

  const reload = debounce(load, 300);
  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED'
      || (frame.event.startsWith('CRON_') && frame.event !== 'CRON_STARTED' && frame.workspace_id === id)) {
      reload();
    }
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
