// One workspace: its status (with why it failed) and lifecycle buttons that follow the state,
// then tabs — overview (files with an editor, secret keys never values, plugins), chat with
// the agent, delegations sent and received, schedules, the budget and the activity log. The tabs live in
// workspace-*.js; this module holds the header and wires them together.

import { del, get, post } from '../api.js';
import { bundleName, download, exportBundle, importBundle, importedWords } from '../bundle.js';
import { confirmAction } from '../confirm.js';
import { statusFromEvent, subscribe } from '../events.js';
import { badge, busy, debounce, fill, h, note, section, setBadge, short, table, time } from '../dom.js';
import { allowed, buildTree, descendants } from './org-actions.js';
import { trackControl } from './plugin-track.js';
import { guardLeave, replacePath } from '../router.js';
import { activityPanel } from './workspace-activity.js';
import { auditPanel } from './workspace-audit.js';
import { budgetPanel } from './workspace-budget.js';
import { chatPanel } from './workspace-chat.js';
import { delegationsPanel } from './workspace-delegations.js';
import { filesPanel } from './workspace-files.js';
import { logsPanel } from './workspace-logs.js';
import { schedulesPanel } from './workspace-schedules.js';
import { teamPanel } from './workspace-team.js';
import { terminalPanel } from './workspace-terminal.js';
import { tracesPanel } from './workspace-traces.js';
import { restartWords } from './workspace-words.js';

const TABS = [
  ['overview', 'Overview'],
  ['chat', 'Chat'],
  ['delegations', 'Delegations'],
  ['schedules', 'Schedules'],
  ['budget', 'Budget'],
  ['activity', 'Activity'],
  ['logs', 'Logs'],
  ['terminal', 'Terminal'],
  ['traces', 'Traces'],
  ['audit', 'Audit'],
];

/** Statuses whose reason (`last_sample_error`) the page shows at the top. */
const TROUBLED = {
  failed: 'Failed',
  degraded: 'Degraded',
  offline: 'Offline',
};

function render(main, { id, tab }) {
  const base = `/workspaces/${encodeURIComponent(id)}`;
  let alive = true;
  /** The workspace as `GET /workspaces/:id` shows it. */
  let detail = null;
  /** Every workspace by id, from `GET /workspaces` (names, parents, failure reasons). */
  let directory = new Map();
  let status = 'unknown';

  const nameOf = (wid) => {
    if (!wid) return '';
    const row = directory.get(wid);
    return row ? row.name : short(wid, 8);
  };

  // Header, failure reason and lifecycle.
  const title = h('h1', { id: 'ws-name', text: 'Workspace' });
  const statusBadge = badge('unknown');
  statusBadge.id = 'ws-status';
  const failure = h('div', { class: 'failure', id: 'ws-failure', role: 'alert', hidden: true });
  const facts = h('dl', { class: 'facts', id: 'ws-facts' });
  const lifeOut = h('p', { class: 'note', id: 'ws-lifecycle-note', hidden: true });
  const lifeButtons = {};
  for (const action of ['restart', 'pause', 'resume', 'hibernate']) {
    const button = h('button', { type: 'button', id: `ws-${action}`, class: 'secondary', text: action[0].toUpperCase() + action.slice(1), disabled: true });
    button.addEventListener('click', () => lifecycle(action, button));
    lifeButtons[action] = button;
  }

  const files = filesPanel(base);
  const chat = chatPanel(base, id, () => (detail ? detail.name : ''));
  const delegations = delegationsPanel(base, id, () => detail, nameOf);
  const activity = activityPanel(base, id, nameOf);
  const schedules = schedulesPanel(base, id);
  const budget = budgetPanel(base, id);
  const team = teamPanel(base);
  const logs = logsPanel(base);
  const terminal = terminalPanel(base);
  const traces = tracesPanel(base, nameOf);
  const audit = auditPanel(base);

  // Secrets.
  const secretList = h('div', { id: 'secret-list' });
  const secretsOut = h('p', { class: 'note', id: 'secrets-note', hidden: true });
  const keyInput = h('input', { id: 'secret-key', placeholder: 'KEY', spellcheck: 'false', required: true });
  const valueInput = h('input', { id: 'secret-value', type: 'password', placeholder: 'value', autocomplete: 'off', required: true });
  const secretButton = h('button', { type: 'submit', text: 'Set' });
  const secretForm = h('form', { class: 'inline', id: 'secret-form' }, keyInput, valueInput, secretButton);

  // Plugins.
  const pluginList = h('div', { id: 'plugin-list' });
  const pluginsOut = h('p', { class: 'note', id: 'plugins-note', hidden: true });
  const sourceInput = h('input', { id: 'plugin-source', placeholder: 'source: name, local://name or github://owner/repo#tag', spellcheck: 'false', required: true });
  const installButton = h('button', { type: 'submit', id: 'plugin-install', text: 'Install' });
  const track = trackControl();
  const pluginForm = h('form', { class: 'inline', id: 'plugin-form' }, sourceInput, track.element, installButton);

  // Bundle: this workspace and everything under it, as a file or as a copy beside it.
  const exportButton = h('button', { type: 'button', class: 'secondary', id: 'bundle-export', text: 'Export bundle' });
  const duplicateButton = h('button', { type: 'button', class: 'secondary', id: 'bundle-duplicate', text: 'Duplicate' });
  const bundleOut = h('p', { class: 'note', id: 'bundle-note', hidden: true });
  exportButton.addEventListener('click', async () => {
    const bundle = await busy(exportButton, 'Exporting…', bundleOut, () => exportBundle(id));
    if (!bundle || !alive) return;
    const file = bundleName(bundle.name);
    download(file, bundle);
    note(bundleOut, 'ok', `Saved ${file}. Secret values are not in it, only their names.`);
  });
  duplicateButton.addEventListener('click', async () => {
    const copy = await busy(duplicateButton, 'Duplicating…', bundleOut, async () =>
      importBundle(await exportBundle(id), detail && detail.parent_id));
    if (!copy || !alive) return;
    fill(bundleOut, importedWords(copy), ' ', h('a', { href: `#/workspaces/${copy.root_id}`, id: 'bundle-copy-link', text: 'Open the copy' }));
    bundleOut.className = 'note ok';
    bundleOut.hidden = false;
  });

  const panels = {
    overview: h('div', { class: 'tab-panel', id: 'panel-overview' },
      section('Files', files.element),
      section('Secrets', h('p', { class: 'muted small', text: 'Values are write-only: the console never reads them back.' }), secretList, secretForm, secretsOut),
      section('Plugins', pluginList, pluginForm, pluginsOut),
      section('Team and agent', team.element),
      section('Bundle', h('p', { class: 'muted small', text: 'This workspace and everything under it: its files, skills, config and tree, never secret values.' }),
        h('div', { class: 'buttons' }, exportButton, duplicateButton), bundleOut)),
    chat: h('div', { class: 'tab-panel', id: 'panel-chat' }, section('Chat with the agent', chat.element)),
    delegations: h('div', { class: 'tab-panel', id: 'panel-delegations' }, section('Delegations', delegations.element)),
    schedules: h('div', { class: 'tab-panel', id: 'panel-schedules' }, section('Schedules', schedules.element)),
    budget: h('div', { class: 'tab-panel', id: 'panel-budget' }, section('Budget', budget.element)),
    activity: h('div', { class: 'tab-panel', id: 'panel-activity' }, section('Activity', activity.element)),
    logs: h('div', { class: 'tab-panel', id: 'panel-logs' }, section('Agent log', logs.element)),
    terminal: h('div', { class: 'tab-panel', id: 'panel-terminal' }, section('Terminal', terminal.element)),
    traces: h('div', { class: 'tab-panel', id: 'panel-traces' }, section('Traces', traces.element)),
    audit: h('div', { class: 'tab-panel', id: 'panel-audit' }, section('Audit ledger', audit.element)),
  };
  const tabButtons = TABS.map(([key, label]) => h('button', {
    type: 'button', role: 'tab', class: 'tab', id: `tab-${key}`, dataset: { tab: key }, text: label,
    onclick: () => showTab(key, true),
  }));

  function showTab(key, fromClick) {
    const chosen = panels[key] ? key : 'overview';
    for (const button of tabButtons) {
      const on = button.dataset.tab === chosen;
      button.classList.toggle('active', on);
      button.setAttribute('aria-selected', on ? 'true' : 'false');
    }
    for (const [name, panel] of Object.entries(panels)) panel.hidden = name !== chosen;
    main.dataset.tab = chosen;
    if (fromClick) {
      // The address names the tab (a reload keeps it) without leaving the page.
      replacePath(chosen === 'overview' ? `/workspaces/${encodeURIComponent(id)}` : `/workspaces/${encodeURIComponent(id)}/${chosen}`);
    }
  }

  main.append(
    h('div', { class: 'heading' }, title, statusBadge, h('a', { href: '#/', class: 'muted', text: '← org' })),
    failure,
    section('Status', facts, h('div', { class: 'buttons' }, Object.values(lifeButtons)), lifeOut),
    h('div', { class: 'tabs', role: 'tablist' }, tabButtons),
    ...Object.values(panels),
  );
  showTab(tab || 'overview', false);

  /** This workspace as the list shows it, with the status the page follows live. */
  function self() {
    return { ...(directory.get(id) || detail || {}), status };
  }

  function applyButtons() {
    const can = allowed(self(), directory);
    for (const [action, button] of Object.entries(lifeButtons)) {
      if (button.getAttribute('aria-busy') === 'true') continue;
      const { ok, why } = can[action];
      button.disabled = !ok;
      if (ok) button.removeAttribute('title');
      else button.title = `Not now: ${why}`;
    }
  }

  function showFailure() {
    const row = directory.get(id);
    const label = TROUBLED[status];
    if (!label) {
      failure.hidden = true;
      failure.replaceChildren();
      return;
    }
    const reason = row && row.last_sample_error ? row.last_sample_error : '';
    failure.dataset.status = status;
    fill(failure,
      h('strong', { text: `${label}: ` }),
      h('span', { id: 'ws-failure-reason', text: reason || 'the host recorded no reason.' }),
      status === 'failed' ? h('p', { class: 'small', text: 'Fix the cause, then Restart to provision the agent again.' }) : null);
    failure.hidden = false;
  }

  function setStatus(next) {
    status = next || 'unknown';
    setBadge(statusBadge, status);
    chat.setStatus(status);
    applyButtons();
    showFailure();
  }

  async function loadHeader() {
    // The list (an operator's route) carries the failure reason and the tree around this
    // workspace; without it the page still shows the workspace itself.
    const list = get('/workspaces').catch(() => null);
    let ws;
    try {
      ws = await get(base);
    } catch (err) {
      if (alive) note(lifeOut, 'error', err.message);
      return;
    }
    const all = await list;
    if (!alive) return;
    detail = ws;
    if (all) directory = new Map(all.map((row) => [row.id, row]));
    title.textContent = ws.name;
    const fact = (k, v) => (v === null || v === undefined || v === '' ? [] : [h('dt', { text: k }), h('dd', { text: v })]);
    fill(facts,
      fact('Role', ws.role), fact('Tier', ws.tier), fact('Runtime', ws.runtime), fact('URL', ws.url),
      fact('Parent', ws.parent_id ? nameOf(ws.parent_id) : ''), fact('Active tasks', `${ws.active_tasks} of ${ws.max_concurrent_tasks}`),
      fact('Update tier', ws.update_tier), fact('Last heartbeat', time(ws.last_heartbeat_at)),
      fact('Created', time(ws.created_at)), fact('ID', ws.id));
    setStatus(ws.status);
  }

  function answerWords(action, reply) {
    switch (action) {
      case 'restart':
        if (reply.status === 'noop') return `Nothing to restart: ${reply.message || 'no change'}.`;
        return reply.coalesced ? 'A restart was already under way; it picks up the current files.' : 'Restarting now.';
      case 'pause': return `Paused ${reply.paused_count} workspace${reply.paused_count === 1 ? '' : 's'}.`;
      case 'resume': return `Resuming ${reply.resumed_count} workspace${reply.resumed_count === 1 ? '' : 's'}.`;
      case 'hibernate': return 'Hibernated: the agent is stopped until a message, a resume or a restart wakes it.';
      default: return 'Done.';
    }
  }

  async function lifecycle(action, button) {
    if (action === 'pause') {
      const under = descendants(buildTree([...directory.values()]), id)
        .filter((row) => row.status !== 'paused' && row.status !== 'removed');
      if (under.length) {
        const name = detail ? detail.name : 'this workspace';
        const ok = await confirmAction(
          `Pause ${name} and the ${under.length} workspace${under.length === 1 ? '' : 's'} under it? `
          + `${under.length + 1} agents stop until ${name} is resumed.`,
          { confirm: `Pause ${under.length + 1} workspaces`, cancel: 'Cancel', danger: true },
        );
        if (!ok) return;
      }
    }
    const reply = await busy(button, `${action}…`, lifeOut, () => post(`${base}/${action}`));
    if (reply && alive) note(lifeOut, 'ok', answerWords(action, reply));
    applyButtons();
    loadHeader();
  }

  async function loadSecrets() {
    try {
      const secrets = await get(`${base}/secrets`);
      if (!alive) return;
      // Only the key and its metadata are read; the list route carries no values.
      fill(secretList, secrets.length ? table(['Key', 'Scope', 'Updated', ''], secrets.map((s) => ({
        attrs: { dataset: { key: s.key } },
        cells: [s.key, s.scope, time(s.updated_at), s.scope === 'workspace'
          ? h('button', { type: 'button', class: 'danger small', text: 'Delete', onclick: (e) => removeSecret(e.target, s.key) })
          : ''],
      }))) : h('p', { class: 'muted', text: 'No secrets.' }));
    } catch (err) {
      note(secretsOut, 'error', err.message);
    }
  }

  async function removeSecret(button, key) {
    const done = await busy(button, 'Deleting…', secretsOut, () => del(`${base}/secrets/${encodeURIComponent(key)}`));
    if (done) {
      note(secretsOut, 'ok', `Deleted ${key} — ${restartWords(done.restart)}.`);
      secretsOut.dataset.restart = done.restart ? done.restart.kind : '';
      loadSecrets();
    }
  }

  secretForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = keyInput.value.trim();
    const body = { key, value: valueInput.value };
    const done = await busy(secretButton, 'Saving…', secretsOut, () => post(`${base}/secrets`, body));
    valueInput.value = '';
    if (done) {
      keyInput.value = '';
      note(secretsOut, 'ok', `Set ${key} — ${restartWords(done.restart)}.`);
      secretsOut.dataset.restart = done.restart ? done.restart.kind : '';
      loadSecrets();
    }
  });

  async function loadPlugins() {
    try {
      const plugins = await get(`${base}/plugins`);
      if (!alive) return;
      fill(pluginList, plugins.length ? table(['Name', 'Source', 'Tracked', 'SHA', ''], plugins.map((p) => ({
        attrs: { dataset: { plugin: p.name } },
        cells: [p.name, p.source || '', p.tracked_ref || '', short(p.installed_sha), h('button', {
          type: 'button', class: 'danger small', text: 'Uninstall', onclick: (e) => uninstall(e.target, p.name),
        })],
      }))) : h('p', { class: 'muted', id: 'plugins-empty', text: 'No plugins installed.' }));
    } catch (err) {
      note(pluginsOut, 'error', err.message);
    }
  }

  async function uninstall(button, name) {
    const done = await busy(button, 'Uninstalling…', pluginsOut, () => del(`${base}/plugins/${encodeURIComponent(name)}`));
    if (done) {
      note(pluginsOut, 'ok', `Uninstalled ${name} — ${done.restarting ? 'restarting now' : 'no restart needed'}.`);
      loadPlugins();
    }
  }

  pluginForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const source = sourceInput.value.trim();
    const done = await busy(installButton, 'Installing…', pluginsOut, () => post(`${base}/plugins`, { source, track: track.value() }));
    if (done) {
      sourceInput.value = '';
      track.reset();
      note(pluginsOut, 'ok', `${done.status} ${done.plugin} (${short(done.installed_sha)}): ${done.reload} reload — ${done.restarting ? 'restarting now' : 'no restart needed'}.`);
      loadPlugins();
    }
  });

  const refreshHeader = debounce(loadHeader, 300);

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      refreshHeader();
      return;
    }
    if (frame.workspace_id !== id) {
      // Another workspace's status can change what the buttons allow (a paused ancestor) and
      // how many a pause would stop.
      if (statusFromEvent(frame.event)) refreshHeader();
      return;
    }
    const next = statusFromEvent(frame.event);
    if (next) setStatus(next);
    if (next || frame.event === 'WORKSPACE_UPDATED') refreshHeader();
  });

  // Unsaved edits hold the operator: in the console (a confirmation) and in the browser (a
  // reload, closing the tab, another address).
  const unguard = guardLeave(async (path) => {
    const unsaved = files.unsaved();
    // A sign-out is never held: without a token nothing can be saved anyway.
    if (!unsaved || path === '/signin') return true;
    return confirmAction(`${unsaved} has unsaved changes. Leave this page and lose them?`, { confirm: 'Leave', cancel: 'Stay', danger: true });
  });
  const beforeUnload = (e) => {
    if (!files.unsaved()) return;
    e.preventDefault();
    e.returnValue = '';
  };
  window.addEventListener('beforeunload', beforeUnload);

  files.load();
  loadSecrets();
  loadPlugins();
  // The tabs name the agent and other workspaces: they load once the names are known.
  loadHeader().finally(() => {
    if (!alive) return;
    chat.load();
    delegations.load();
    schedules.load();
    budget.load();
    team.load();
    activity.load();
  });
  // The operator's tabs load when first shown: each calls an operator-only route.
  const operatorTabs = { logs, terminal, traces, audit };
  const loaded = new Set();
  const loadShown = () => {
    const key = main.dataset.tab;
    if (operatorTabs[key] && !loaded.has(key)) {
      loaded.add(key);
      operatorTabs[key].load();
    }
  };
  loadShown();
  for (const button of tabButtons) button.addEventListener('click', loadShown);
  return () => {
    alive = false;
    unsubscribe();
    unguard();
    window.removeEventListener('beforeunload', beforeUnload);
    files.stop();
    chat.stop();
    delegations.stop();
    schedules.stop();
    budget.stop();
    team.stop();
    activity.stop();
    logs.stop();
    terminal.stop();
    traces.stop();
    audit.stop();
  };
}

export const page = { name: 'workspace', render };
