// Org import: pick a template, merge or reconcile, then watch every workspace come online. The
// outcome is green only when every workspace is online; each one that failed is listed with the
// reason the host stored (`last_sample_error`).

import { get, post } from '../api.js';
import { importBundle, importedWords } from '../bundle.js';
import { statusFromEvent, subscribe } from '../events.js';
import { badge, busy, debounce, fill, h, note, section, setBadge, table } from '../dom.js';

const SETTLED = new Set(['online', 'failed']);

function render(main) {
  let alive = true;
  const list = h('div', { id: 'template-list' }, h('p', { class: 'muted', text: 'Loading templates…' }));
  const mode = h('select', { id: 'import-mode' },
    h('option', { value: 'merge', text: 'merge: create what is missing, keep the rest' }),
    h('option', { value: 'reconcile', text: 'reconcile: also remove what an earlier import created and the template no longer has' }));
  const button = h('button', { type: 'submit', id: 'import-submit', text: 'Import' });
  const out = h('p', { class: 'note', id: 'import-note', hidden: true });
  const progress = h('p', { class: 'progress', id: 'import-progress', hidden: true });
  const failures = h('ul', { class: 'failures', id: 'import-failures', hidden: true });
  const results = h('div', { id: 'import-results' });
  const form = h('form', { id: 'import-form' }, list,
    h('div', { class: 'inline' }, h('label', { for: 'import-mode', text: 'Mode' }), mode, button), out);

  // A bundle file (exported from a workspace page) imported as a new tree.
  const bundleFile = h('input', { type: 'file', id: 'bundle-file', accept: '.json,application/json', 'aria-label': 'bundle file' });
  const bundleButton = h('button', { type: 'submit', id: 'bundle-submit', text: 'Import bundle' });
  const bundleOut = h('p', { class: 'note', id: 'bundle-import-note', hidden: true });
  const bundleForm = h('form', { class: 'inline', id: 'bundle-form' }, bundleFile, bundleButton);
  bundleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const file = bundleFile.files && bundleFile.files[0];
    if (!file) {
      note(bundleOut, 'error', 'Choose a .bundle.json file first.');
      return;
    }
    let bundle;
    try {
      bundle = JSON.parse(await file.text());
    } catch {
      note(bundleOut, 'error', `${file.name} is not JSON.`);
      return;
    }
    const answer = await busy(bundleButton, 'Importing…', bundleOut, () => importBundle(bundle));
    if (!answer || !alive) return;
    fill(bundleOut, importedWords(answer), ' ', h('a', { href: `#/workspaces/${answer.root_id}`, id: 'bundle-root-link', text: 'Open it' }));
    bundleOut.className = 'note ok';
    bundleOut.hidden = false;
  });

  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Import an org' })),
    section('Template', form),
    section('Progress', progress, failures, results),
    section('Bundle', h('p', { class: 'muted small', text: 'A .bundle.json exported from a workspace page, created as a new tree.' }), bundleForm, bundleOut),
  );

  // Workspace id -> its badge, for the import being watched; id -> name, and id -> the reason the
  // host stored for a failure (cell in the table, and the text read by `update`).
  const watched = new Map();
  const names = new Map();
  const reasons = new Map();
  const reasonCells = new Map();

  function update() {
    if (!watched.size) return;
    const entries = [...watched.entries()];
    const statuses = entries.map(([, b]) => b.dataset.status);
    const online = statuses.filter((s) => s === 'online').length;
    const failedIds = entries.filter(([, b]) => b.dataset.status === 'failed').map(([id]) => id);
    const failed = failedIds.length;
    const done = statuses.every((s) => SETTLED.has(s));
    progress.hidden = false;
    progress.dataset.done = String(done);
    // `ok` only when everything came online; a failure is a failure even when all settled.
    progress.dataset.outcome = failed ? 'failed' : done ? 'ok' : 'pending';
    progress.textContent = done
      ? (failed
        ? `Done with failures: ${online} online, ${failed} failed of ${statuses.length}.`
        : `Done: all ${online} online.`)
      : `${online} of ${statuses.length} online${failed ? `, ${failed} failed` : ''}; waiting for the rest…`;
    for (const [id, cell] of reasonCells) {
      const b = watched.get(id);
      if (b && b.dataset.status === 'failed') {
        fill(cell, h('span', { class: 'reason', text: reasons.get(id) || 'failed (reason not recorded yet)' }));
      }
    }
    failures.hidden = !failed;
    fill(failures, failedIds.map((id) => h('li', { dataset: { id } },
      h('a', { href: `#/workspaces/${encodeURIComponent(id)}`, text: names.get(id) || id }),
      ': ',
      h('span', { class: 'reason', text: reasons.get(id) || 'no reason recorded yet' }))));
  }

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      refresh();
      return;
    }
    const b = frame.workspace_id && watched.get(frame.workspace_id);
    const status = statusFromEvent(frame.event);
    if (b && status) {
      if (frame.payload && typeof frame.payload.error === 'string') reasons.set(frame.workspace_id, frame.payload.error);
      setBadge(b, status);
      update();
      // Events can arrive out of order; the stored status read shortly after has the last word.
      refreshSoon();
    }
  });

  // Whether the last refresh failed (its message is cleared by the next one that works).
  let refreshFailed = false;

  /** Catches up with statuses that changed before the page was listening. */
  async function refresh() {
    if (!watched.size) return;
    try {
      const rows = await get('/workspaces');
      if (refreshFailed) {
        refreshFailed = false;
        note(out, 'info', '');
      }
      for (const row of rows) {
        const b = watched.get(row.id);
        if (b) setBadge(b, row.status);
        if (b && row.last_sample_error) reasons.set(row.id, row.last_sample_error);
      }
      update();
    } catch (err) {
      refreshFailed = true;
      note(out, 'error', err.message);
    }
  }

  const refreshSoon = debounce(refresh, 500);

  async function loadTemplates() {
    try {
      const templates = await get('/org/templates');
      if (!alive) return;
      if (!templates.length) {
        fill(list, h('p', { class: 'muted', text: 'No org templates in the host\'s templates directory.' }));
        button.disabled = true;
        return;
      }
      fill(list, templates.map((t, i) => h('label', { class: 'choice', dataset: { dir: t.dir } },
        h('input', { type: 'radio', name: 'template', value: t.dir, checked: i === 0 }),
        h('span', {},
          h('strong', { text: t.name }), ` (${t.dir}, ${t.workspaces} workspace${t.workspaces === 1 ? '' : 's'})`,
          t.description ? h('span', { class: 'muted block', text: t.description }) : null,
          t.required_env && t.required_env.length
            ? h('span', { class: 'muted block', text: `requires: ${t.required_env.map((e) => (typeof e === 'string' ? e : e.name || JSON.stringify(e))).join(', ')}` })
            : null))));
    } catch (err) {
      note(out, 'error', err.message);
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const chosen = form.querySelector('input[name="template"]:checked');
    if (!chosen) {
      note(out, 'error', 'Pick a template.');
      return;
    }
    watched.clear();
    names.clear();
    reasons.clear();
    reasonCells.clear();
    failures.hidden = true;
    fill(failures);
    delete progress.dataset.outcome;
    fill(results);
    progress.hidden = false;
    progress.dataset.done = 'false';
    progress.textContent = 'Importing…';
    const outcome = await busy(button, 'Importing…', out, () => post('/org/import', { dir: chosen.value, mode: mode.value }));
    if (!outcome) {
      progress.hidden = true;
      return;
    }
    const parts = [`Imported ${outcome.org}: ${outcome.created_count} created, ${outcome.skipped_count} already there`];
    if (outcome.reconcile_removed_count) parts.push(`${outcome.reconcile_removed_count} removed`);
    if (outcome.duration_ms !== undefined) parts.push(`${outcome.duration_ms} ms`);
    note(out, 'ok', `${parts.join(', ')}.`);
    fill(results, table(['Workspace', 'Tier', 'Status', ''], outcome.workspaces.map((w) => {
      const b = badge(w.status);
      watched.set(w.id, b);
      names.set(w.id, w.name);
      const cell = h('span', {},
        w.skipped ? 'already existed' : (w.plugins_missing && w.plugins_missing.length ? `missing plugins: ${w.plugins_missing.join(', ')}` : ''));
      reasonCells.set(w.id, cell);
      return {
        attrs: { dataset: { id: w.id } },
        cells: [h('a', { href: `#/workspaces/${encodeURIComponent(w.id)}`, text: w.name }), String(w.tier), b, cell],
      };
    }), { id: 'import-table' }));
    update();
    refresh();
  });

  loadTemplates();
  return () => {
    alive = false;
    unsubscribe();
  };
}

export const page = { name: 'import', render };
