// The org page: every workspace as a graph (the default for small orgs) or as an indented list
// (the default for large ones), with status that follows /ws, the failure reason on a failed
// badge, collapse, and an actions panel (restart, pause, resume, delete, rename, move).

import { get, patch, post, seg } from '../api.js';
import { statusFromEvent, subscribe } from '../events.js';
import { badge, busy, debounce, fill, h, note, section, setBadge } from '../dom.js';
import { actionsPanel, buildTree, descendants, failureTitle } from './org-actions.js';
import { createGraph } from './org-graph.js';

/** Above this many workspaces the list is the default view (the graph stays a click away). */
const GRAPH_LIMIT = 60;
const VIEW_KEY = 'molecule.console.org-view';

function render(main) {
  const summary = h('p', { class: 'muted', id: 'tree-summary', text: 'Loading…' });
  // Outcomes of actions (one note: an error stays until the next action succeeds) and of
  // reading the list (cleared by the next read that works).
  const out = h('p', { class: 'note', id: 'org-note', hidden: true });
  const loadOut = h('p', { class: 'note', id: 'org-load-note', hidden: true });
  const holder = h('div', { id: 'tree' });
  const graphButton = h('button', { type: 'button', id: 'view-graph', class: 'secondary small', text: 'Graph' });
  const listButton = h('button', { type: 'button', id: 'view-list', class: 'secondary small', text: 'List' });
  const fitButton = h('button', { type: 'button', id: 'graph-fit', class: 'secondary small', text: 'Fit', title: 'Fit the org into view' });
  const zoomIn = h('button', { type: 'button', id: 'graph-zoom-in', class: 'secondary small', text: '+', 'aria-label': 'Zoom in' });
  const zoomOut = h('button', { type: 'button', id: 'graph-zoom-out', class: 'secondary small', text: '−', 'aria-label': 'Zoom out' });
  const graphTools = h('span', { class: 'graph-tools' }, fitButton, zoomIn, zoomOut);
  const createOut = h('p', { class: 'note', hidden: true });
  const nameInput = h('input', { id: 'create-name', placeholder: 'name', required: true });
  const parentSelect = h('select', { id: 'create-parent' });
  // The workspace template catalogue (GET /templates): the new workspace's files, runtime and
  // model come from the chosen one. Templates that cannot be read are not offered.
  const templateSelect = h('select', { id: 'create-template' }, h('option', { value: '', text: '(no template)' }));
  const templateInfo = h('p', { class: 'muted small', id: 'create-template-info', hidden: true });
  const createButton = h('button', { type: 'submit', text: 'Create' });
  const form = h('form', { class: 'inline', id: 'create-form' },
    h('label', { for: 'create-name', text: 'New workspace' }), nameInput,
    h('label', { for: 'create-parent', text: 'under' }), parentSelect,
    h('label', { for: 'create-template', text: 'from' }), templateSelect, createButton);
  let catalogue = new Map();

  let rows = [];
  let byId = new Map();
  let byParent = new Map();
  let view = null;
  let listDrawn = '';
  let alive = true;
  // This page's own writes (collapse, move, the actions panel): a list read that overlapped one
  // may hold the row as it was before it, so its answer is dropped and the list read again
  // (a status event's reload could otherwise undo a collapse the operator just made).
  let writeSeq = 0;
  let writing = 0;
  async function write(work) {
    writing += 1;
    writeSeq += 1;
    try {
      return await work();
    } finally {
      writing -= 1;
      writeSeq += 1;
    }
  }

  const panel = actionsPanel({
    context: () => ({ rows, byId, byParent }),
    out,
    changed: () => load(),
    write,
  });

  const graph = createGraph({
    async onMove(row, x, y) {
      try {
        await write(() => patch(`/workspaces/${seg(row.id)}`, { x, y }));
        // A saved position clears an earlier error: the last action succeeded.
        note(out, 'ok', '');
      } catch (err) {
        note(out, 'error', `${row.name} was not moved: ${err.message}`);
        throw err;
      }
    },
    onToggle: (row, collapsed) => setCollapsed(row, collapsed),
    onActions: (id) => selectNode(id),
  });

  const workspaces = h('section', { class: 'card org-view' },
    h('div', { class: 'heading' }, h('h2', { text: 'Workspaces' }),
      h('span', { class: 'segmented', role: 'group', 'aria-label': 'View' }, graphButton, listButton),
      graphTools),
    holder);
  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Org' }), summary),
    loadOut,
    out,
    h('div', { class: 'org-layout' }, workspaces, panel.el),
    section('Create', form, templateInfo, createOut),
  );

  function selectNode(id) {
    panel.select(id);
    graph.select(id);
    for (const li of holder.querySelectorAll('li.selected')) li.classList.remove('selected');
    if (id) {
      const li = holder.querySelector(`li[data-id="${CSS.escape(id)}"]`);
      if (li) li.classList.add('selected');
    }
  }

  async function setCollapsed(row, collapsed) {
    try {
      await write(() => patch(`/workspaces/${seg(row.id)}`, { collapsed }));
    } catch (err) {
      note(out, 'error', `${row.name} was not ${collapsed ? 'collapsed' : 'expanded'}: ${err.message}`);
      return;
    }
    note(out, 'ok', '');
    // The row a view holds may be an earlier read's (a read that changed nothing leaves the
    // drawn list, and its handlers, alone): the page's current row is the one drawn from.
    row.collapsed = collapsed;
    const current = byId.get(row.id);
    if (current) current.collapsed = collapsed;
    draw();
  }

  function listNodes(parent) {
    const children = byParent.get(parent) || [];
    if (!children.length) return null;
    return h('ul', { class: 'tree' }, children.map((row) => {
      const kids = byParent.get(row.id) || [];
      const b = badge(row.status);
      failureTitle(b, row);
      const toggle = kids.length
        ? h('button', {
          type: 'button', class: 'toggle link', 'aria-expanded': String(!row.collapsed),
          title: row.collapsed ? `Expand (${descendants(byParent, row.id).length} hidden)` : 'Collapse',
          text: row.collapsed ? '▸' : '▾',
          onclick: () => {
            const now = byId.get(row.id) || row;
            setCollapsed(now, !now.collapsed);
          },
        })
        : h('span', { class: 'toggle' });
      return h('li', { dataset: { id: row.id }, class: row.id === panel.selected() ? 'selected' : null },
        h('div', { class: 'node' },
          toggle,
          b,
          h('a', { href: `#/workspaces/${encodeURIComponent(row.id)}`, class: 'name', text: row.name }),
          row.role ? h('span', { class: 'muted role', text: row.role }) : null,
          h('span', { class: 'muted small', text: `tier ${row.tier}${row.runtime ? ` · ${row.runtime}` : ''}` }),
          row.collapsed ? h('span', { class: 'muted small hidden-count', text: `+${descendants(byParent, row.id).length} hidden` }) : null,
          h('button', { type: 'button', class: 'link small actions', text: 'Actions', 'aria-label': `Actions on ${row.name}`, onclick: () => selectNode(row.id) }),
        ),
        row.collapsed ? null : listNodes(row.id));
    }));
  }

  function draw() {
    graphTools.hidden = view !== 'graph';
    graphButton.setAttribute('aria-pressed', String(view === 'graph'));
    listButton.setAttribute('aria-pressed', String(view === 'list'));
    holder.dataset.view = view;
    if (!rows.length) {
      fill(holder, h('p', { class: 'muted', id: 'tree-empty', text: 'No workspaces yet. Import an org or create one below.' }));
      return;
    }
    if (view === 'graph') {
      listDrawn = '';
      if (graph.el.parentNode !== holder) fill(holder, graph.el);
      graph.draw(rows);
      return;
    }
    // A list read that changed nothing leaves the rows alone (and any reference to them).
    const drawn = JSON.stringify(rows.map((r) => [r.id, r.parent_id, r.name, r.role, r.status,
      r.tier, r.runtime, Boolean(r.collapsed), r.last_sample_error]));
    if (drawn === listDrawn && holder.querySelector(':scope > ul.tree')) return;
    listDrawn = drawn;
    fill(holder, listNodes(null));
  }

  function counts() {
    const online = rows.filter((r) => r.status === 'online').length;
    const failed = rows.filter((r) => r.status === 'failed').length;
    summary.textContent = `${rows.length} workspace${rows.length === 1 ? '' : 's'}, ${online} online${failed ? `, ${failed} failed` : ''}`;
  }

  function choose(next) {
    view = next;
    localStorage.setItem(VIEW_KEY, next);
    draw();
  }
  graphButton.addEventListener('click', () => choose('graph'));
  listButton.addEventListener('click', () => choose('list'));
  fitButton.addEventListener('click', () => graph.fit());
  zoomIn.addEventListener('click', () => graph.zoom(0.8));
  zoomOut.addEventListener('click', () => graph.zoom(1.25));

  async function load() {
    const seq = writeSeq;
    let next;
    try {
      next = await get('/workspaces');
    } catch (err) {
      if (alive) note(loadOut, 'error', err.message);
      return;
    }
    if (!alive) return;
    if (writing || seq !== writeSeq) {
      // Read across one of this page's writes: it may predate it. Read again once they end.
      reload();
      return;
    }
    note(loadOut, 'ok', '');
    rows = next;
    byId = new Map(rows.map((r) => [r.id, r]));
    byParent = buildTree(rows);
    if (!view) {
      const stored = localStorage.getItem(VIEW_KEY);
      view = stored === 'graph' || stored === 'list' ? stored : rows.length <= GRAPH_LIMIT ? 'graph' : 'list';
    }
    if (panel.selected() && !byId.has(panel.selected())) selectNode(null);
    draw();
    panel.refresh();
    counts();
    fill(parentSelect, h('option', { value: '', text: '(root)' }),
      [...rows].sort((a, b) => a.name.localeCompare(b.name)).map((r) => h('option', { value: r.id, text: r.name })));
  }
  const reload = debounce(load, 500);

  /** Says what the chosen template is: its description, runtime and skills. */
  function describeTemplate() {
    const t = catalogue.get(templateSelect.value);
    if (!t) {
      templateInfo.hidden = true;
      templateInfo.textContent = '';
      return;
    }
    const skills = t.skill_count ? `${t.skill_count} skill${t.skill_count === 1 ? '' : 's'}` : null;
    templateInfo.textContent = [`${t.name}: ${t.description || 'no description'}`,
      t.runtime ? `runtime ${t.runtime}` : null, t.model ? `model ${t.model}` : null, skills]
      .filter(Boolean).join(' · ');
    templateInfo.hidden = false;
  }

  async function loadTemplates() {
    let list;
    try {
      list = await get('/templates');
    } catch (err) {
      if (alive) note(createOut, 'error', `The template catalogue could not be read: ${err.message}`);
      return;
    }
    if (!alive) return;
    catalogue = new Map(list.filter((t) => !t.error).map((t) => [t.id, t]));
    const chosen = templateSelect.value;
    fill(templateSelect, h('option', { value: '', text: '(no template)' }),
      [...catalogue.values()].map((t) => h('option', {
        value: t.id,
        text: t.runtime ? `${t.name} (${t.runtime})` : t.name,
        title: t.description || '',
      })));
    if (catalogue.has(chosen)) templateSelect.value = chosen;
    describeTemplate();
  }
  templateSelect.addEventListener('change', describeTemplate);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: nameInput.value.trim() };
    if (parentSelect.value) body.parent_id = parentSelect.value;
    if (templateSelect.value) body.template = templateSelect.value;
    const created = await busy(createButton, 'Creating…', createOut, () => post('/workspaces', body));
    if (created) {
      nameInput.value = '';
      note(createOut, 'ok', `Created ${created.name || body.name}.`);
      load();
    }
  });

  /** Shows a row's new status (or task) in whichever view is up, without a reload. */
  function show(row) {
    if (view === 'graph') {
      graph.update(row);
    } else {
      const li = holder.querySelector(`li[data-id="${CSS.escape(row.id)}"]`);
      const b = li && li.querySelector(':scope > .node > .badge');
      if (b) {
        setBadge(b, row.status);
        failureTitle(b, row);
      }
    }
    if (panel.selected() === row.id) panel.refresh();
  }

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      reload();
      return;
    }
    if (!frame.workspace_id) return;
    const status = statusFromEvent(frame.event);
    const row = byId.get(frame.workspace_id);
    if (!row) {
      // A workspace this page has not seen: created elsewhere (an import, the CLI).
      if (frame.event.startsWith('WORKSPACE_') && status !== 'removed') reload();
      return;
    }
    const payload = frame.payload || {};
    if (status === 'removed') {
      reload();
    } else if (status) {
      row.status = status;
      if (status === 'failed' && typeof payload.error === 'string') row.last_sample_error = payload.error;
      show(row);
      counts();
      // Events of one workspace can arrive out of order (a late PROVISIONING after ONLINE);
      // the list read shortly after has the last word.
      reload();
    } else if (frame.event === 'TASK_UPDATED') {
      row.current_task = payload.current_task || null;
      if (typeof payload.active_tasks === 'number') row.active_tasks = payload.active_tasks;
      show(row);
    } else if (frame.event === 'WORKSPACE_UPDATED') {
      reload();
    }
  });

  load();
  loadTemplates();
  return () => {
    alive = false;
    unsubscribe();
    graph.destroy();
  };
}

export const page = { name: 'tree', render };
