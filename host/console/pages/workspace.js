// One workspace: status and lifecycle buttons, files with an editor, secret keys (never values),
// plugins, activity and delegations.

import { del, get, post, put, seg } from '../api.js';
import { statusFromEvent, subscribe } from '../events.js';
import { badge, busy, debounce, fill, h, note, section, setBadge, short, table, time } from '../dom.js';
import { trackControl } from './plugin-track.js';

function describeRestart(restart) {
  if (!restart || !restart.kind) return 'no restart decision';
  switch (restart.kind) {
    case 'restart_now': return 'the agent restarts now';
    case 'coalesced': return 'joined a restart already pending';
    case 'skipped': return `no restart (${restart.reason || 'skipped'})`;
    default: {
      const extra = Object.entries(restart).filter(([k]) => k !== 'kind')
        .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
      return extra ? `${restart.kind} (${extra})` : restart.kind;
    }
  }
}

function render(main, { id }) {
  const base = `/workspaces/${seg(id)}`;
  let alive = true;

  // Header and lifecycle.
  const title = h('h1', { id: 'ws-name', text: 'Workspace' });
  const status = badge('unknown');
  status.id = 'ws-status';
  const facts = h('dl', { class: 'facts', id: 'ws-facts' });
  const lifeOut = h('p', { class: 'note', id: 'ws-lifecycle-note', hidden: true });
  const lifeButtons = ['restart', 'pause', 'resume'].map((action) => {
    const button = h('button', { type: 'button', id: `ws-${action}`, class: 'secondary', text: action[0].toUpperCase() + action.slice(1) });
    button.addEventListener('click', async () => {
      const reply = await busy(button, `${action}…`, lifeOut, () => post(`${base}/${action}`));
      if (reply) note(lifeOut, 'ok', `${action}: ${reply.status || 'ok'}${reply.message ? ` (${reply.message})` : ''}`);
      loadHeader();
    });
    return button;
  });

  // Files.
  const fileList = h('ul', { class: 'files', id: 'file-list' });
  const filesOut = h('p', { class: 'note', id: 'files-note', hidden: true });
  const pathInput = h('input', { id: 'file-path', placeholder: 'path, e.g. system-prompt.md', spellcheck: 'false' });
  const editor = h('textarea', { id: 'file-editor', rows: 14, spellcheck: 'false', placeholder: 'Open a file or type a new path above.' });
  const openButton = h('button', { type: 'button', class: 'secondary', id: 'file-open', text: 'Open' });
  const saveButton = h('button', { type: 'button', id: 'file-save', text: 'Save' });

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

  const activityList = h('div', { id: 'activity-list' });
  const delegationList = h('div', { id: 'delegation-list' });

  main.append(
    h('div', { class: 'heading' }, title, status, h('a', { href: '#/', class: 'muted', text: '← org' })),
    section('Status', facts, h('div', { class: 'buttons' }, lifeButtons), lifeOut),
    section('Files',
      h('div', { class: 'split' },
        fileList,
        h('div', { class: 'editor' },
          h('div', { class: 'inline' }, pathInput, openButton, saveButton),
          editor, filesOut))),
    section('Secrets', h('p', { class: 'muted small', text: 'Values are write-only: the console never reads them back.' }), secretList, secretForm, secretsOut),
    section('Plugins', pluginList, pluginForm, pluginsOut),
    section('Activity', activityList),
    section('Delegations', delegationList),
  );

  async function loadHeader() {
    try {
      const ws = await get(base);
      if (!alive) return;
      title.textContent = ws.name;
      setBadge(status, ws.status);
      const fact = (k, v) => (v === null || v === undefined || v === '' ? [] : [h('dt', { text: k }), h('dd', { text: v })]);
      fill(facts,
        fact('Role', ws.role), fact('Tier', ws.tier), fact('Runtime', ws.runtime), fact('URL', ws.url),
        fact('Parent', ws.parent_id), fact('Active tasks', `${ws.active_tasks} of ${ws.max_concurrent_tasks}`),
        fact('Update tier', ws.update_tier), fact('Last heartbeat', time(ws.last_heartbeat_at)),
        fact('Created', time(ws.created_at)), fact('ID', ws.id));
    } catch (err) {
      note(lifeOut, 'error', err.message);
    }
  }

  async function loadFiles() {
    try {
      const files = await get(`${base}/files?depth=5`);
      if (!alive) return;
      // The agent's own token file is listed by the host but never readable through the API.
      const entries = files.filter((f) => !f.dir && f.path !== '.auth_token').sort((a, b) => a.path.localeCompare(b.path));
      fill(fileList, entries.length ? entries.map((f) => h('li', {},
        h('button', { type: 'button', class: 'link', dataset: { path: f.path }, text: f.path, onclick: () => openFile(f.path) }),
        h('span', { class: 'muted small', text: ` ${f.size} B` }))) : h('li', { class: 'muted', text: 'No files.' }));
    } catch (err) {
      note(filesOut, 'error', err.message);
    }
  }

  async function openFile(path) {
    pathInput.value = path;
    const file = await busy(openButton, 'Opening…', filesOut, () => get(`${base}/files/${seg(path)}`));
    if (file && alive) {
      editor.value = file.content;
      editor.dataset.path = path;
      note(filesOut, 'info', `${path} (${file.size} bytes)`);
    }
  }

  openButton.addEventListener('click', () => {
    const path = pathInput.value.trim();
    if (path) openFile(path);
  });
  saveButton.addEventListener('click', async () => {
    const path = pathInput.value.trim();
    if (!path) {
      note(filesOut, 'error', 'Give the file a path first.');
      return;
    }
    const saved = await busy(saveButton, 'Saving…', filesOut, () => put(`${base}/files/${seg(path)}`, { content: editor.value }));
    if (saved) {
      note(filesOut, 'ok', `Saved ${saved.path}; restart decision: ${describeRestart(saved.restart)}.`);
      filesOut.dataset.restart = saved.restart ? saved.restart.kind : '';
      loadFiles();
    }
  });

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
      note(secretsOut, 'ok', `Deleted ${key}.`);
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
      note(secretsOut, 'ok', `Set ${key}.`);
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
      note(pluginsOut, 'ok', `Uninstalled ${name}${done.restarting ? '; the agent restarts' : ''}.`);
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
      note(pluginsOut, 'ok', `${done.status} ${done.plugin} (${short(done.installed_sha)}): ${done.reload} reload${done.restarting ? ', the agent restarts' : ''}.`);
      loadPlugins();
    }
  });

  async function loadActivity() {
    try {
      const rows = await get(`${base}/activity?limit=30`);
      if (!alive) return;
      fill(activityList, rows.length ? table(['When', 'Type', 'Summary', 'Status'], rows.map((r) => ({
        cells: [time(r.created_at), r.activity_type, r.summary || r.method || '', r.status || ''],
      }))) : h('p', { class: 'muted', text: 'No activity yet.' }));
    } catch (err) {
      fill(activityList, h('p', { class: 'note error', text: err.message }));
    }
  }

  async function loadDelegations() {
    try {
      const rows = await get(`${base}/delegations`);
      if (!alive) return;
      fill(delegationList, rows.length ? table(['When', 'Type', 'Target', 'Task', 'Status', 'Answer'], rows.map((r) => ({
        cells: [time(r.created_at), r.type || '', short(r.target_id, 8), r.task_preview || r.summary || '', r.status || '', r.error || r.response_preview || ''],
      }))) : h('p', { class: 'muted', text: 'No delegations.' }));
    } catch (err) {
      fill(delegationList, h('p', { class: 'note error', text: err.message }));
    }
  }

  const refreshActivity = debounce(() => {
    loadActivity();
    loadDelegations();
  }, 400);
  const refreshHeader = debounce(loadHeader, 300);

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      refreshHeader();
      refreshActivity();
      return;
    }
    if (frame.workspace_id !== id) return;
    const next = statusFromEvent(frame.event);
    if (next) setBadge(status, next);
    if (next || frame.event === 'WORKSPACE_UPDATED') refreshHeader();
    if (frame.event === 'ACTIVITY_LOGGED' || frame.event.startsWith('DELEGATION_') || frame.event === 'A2A_RESPONSE') {
      refreshActivity();
    }
  });

  loadHeader();
  loadFiles();
  loadSecrets();
  loadPlugins();
  loadActivity();
  loadDelegations();
  return () => {
    alive = false;
    unsubscribe();
  };
}

export const page = { name: 'workspace', render };
