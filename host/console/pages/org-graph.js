// The org as a graph in plain SVG (no library): one card per workspace at its stored canvas
// position, an edge from each parent to each child, status colours that follow /ws, drag a
// card to move it (saved on drop), collapse a subtree, pan the background. Every element is
// made with createElementNS and textContent, as dom.js does for HTML: host data never becomes
// markup.

import { buildTree, descendants, failureReason } from './org-actions.js';

const NS = 'http://www.w3.org/2000/svg';
export const NODE_W = 220;
export const NODE_H = 76;
const GAP_X = 40;
const GAP_Y = 70;
/** Screen pixels a press must travel before it is a drag rather than a click. */
const DRAG_THRESHOLD = 4;
/** Room around the cards when the view is fitted. */
const MARGIN = 40;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.setAttribute('class', value);
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child) el.appendChild(child);
  }
  return el;
}

const clip = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);

/**
 * True when the host holds a position for the workspace. It stores (0, 0) for one created
 * without a position, so (0, 0) means "never placed" (a drop never saves it: see `finish`).
 */
const placed = (row) => Number(row.x) !== 0 || Number(row.y) !== 0;

/**
 * Where every workspace is drawn: at its stored position, or, when it was never placed, where
 * a tidy tree would put it relative to its nearest placed ancestor (unplaced top-level trees
 * line up to the right of everything placed).
 */
export function layout(byParent) {
  const roots = byParent.get(null) || [];
  // A tidy tree per root, each from its own origin: leaves take successive columns and a
  // parent sits centred over its children.
  const auto = new Map();
  const columns = new Map();
  for (const root of roots) {
    let column = 0;
    const place = (row, depth) => {
      const kids = byParent.get(row.id) || [];
      const y = depth * (NODE_H + GAP_Y);
      if (!kids.length) {
        auto.set(row.id, { x: column * (NODE_W + GAP_X), y });
        column += 1;
        return;
      }
      kids.forEach((kid) => place(kid, depth + 1));
      const first = auto.get(kids[0].id);
      const last = auto.get(kids[kids.length - 1].id);
      auto.set(row.id, { x: (first.x + last.x) / 2, y });
    };
    place(root, 0);
    columns.set(root.id, column);
  }
  const stored = [...byParent.values()].flat().filter(placed);
  let cursor = stored.length ? Math.max(...stored.map((r) => Number(r.x))) + NODE_W + 2 * GAP_X : 0;
  const top = stored.length ? Math.min(...stored.map((r) => Number(r.y))) : 0;
  const pos = new Map();
  const settle = (row, parent) => {
    if (placed(row)) {
      pos.set(row.id, { x: Number(row.x), y: Number(row.y) });
    } else if (parent) {
      const mine = auto.get(row.id);
      const theirs = auto.get(parent.id);
      const at = pos.get(parent.id);
      pos.set(row.id, { x: at.x + mine.x - theirs.x, y: at.y + mine.y - theirs.y });
    } else {
      const mine = auto.get(row.id);
      pos.set(row.id, { x: cursor + mine.x, y: top + mine.y });
      cursor += columns.get(row.id) * (NODE_W + GAP_X) + GAP_X;
    }
    for (const kid of byParent.get(row.id) || []) settle(kid, row);
  };
  roots.forEach((root) => settle(root, null));
  return pos;
}

function edgePath(p, c) {
  const x1 = p.x + NODE_W / 2;
  const y1 = p.y + NODE_H;
  const x2 = c.x + NODE_W / 2;
  const y2 = c.y;
  const mid = (y1 + y2) / 2;
  return `M${x1} ${y1} C${x1} ${mid} ${x2} ${mid} ${x2} ${y2}`;
}

/** A small SVG button: click, Enter and Space run `fn`; a press on it never starts a drag. */
function control(cls, label, glyph, x, fn) {
  const el = svg('g', { class: cls, role: 'button', tabindex: 0, 'aria-label': label, transform: `translate(${x} 8)` },
    svg('title', { text: label }),
    svg('rect', { width: 22, height: 22, rx: 5 }),
    svg('text', { x: 11, y: 16, 'text-anchor': 'middle', text: glyph }));
  el.addEventListener('pointerdown', (e) => e.stopPropagation());
  el.addEventListener('click', (e) => {
    e.preventDefault();
    e.stopPropagation();
    fn();
  });
  el.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      fn();
    }
  });
  return el;
}

function badgeEl(row) {
  const status = row.status || 'unknown';
  const width = Math.max(64, status.length * 6.6 + 16);
  const why = failureReason(row);
  return svg('g', { class: `badge status-${status}`, dataset: why ? { status, reason: why } : { status }, transform: `translate(16 ${NODE_H - 26})` },
    why ? svg('title', { text: why }) : null,
    svg('rect', { width, height: 18, rx: 9 }),
    svg('text', { x: width / 2, y: 13, 'text-anchor': 'middle', text: status }));
}

const subline = (row) => (row.current_task ? `▶ ${row.current_task}` : (row.role || ''));

/**
 * The graph. `onMove(row, x, y)` saves a dropped card's position (a rejection puts the card
 * back), `onToggle(row, collapsed)` saves a collapse, `onActions(id)` opens the actions panel.
 */
export function createGraph({ onMove, onToggle, onActions }) {
  const edges = svg('g', { class: 'edges' });
  const nodes = svg('g', { class: 'nodes' });
  const defs = svg('defs', {},
    svg('marker', { id: 'graph-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0 0 L10 5 L0 10 z' })));
  const el = svg('svg', { id: 'graph', class: 'graph', role: 'group', 'aria-label': 'The org as a graph: drag a card to move it' }, defs, edges, nodes);

  let view = null;
  // Until the operator pans or zooms, the view follows the org: it is fitted again when the
  // drawing area changes size or cards appear or go (not when one is dragged).
  let auto = true;
  let size = null;
  let visibleKey = '';
  let rows = [];
  let byId = new Map();
  let byParent = new Map();
  // What each card was drawn from, so a redraw keeps the cards that did not change (their
  // focus, hover and any reference to them survive a list read).
  const drawnFrom = new WeakMap();
  let pos = new Map();
  let selected = null;
  let drag = null;
  let saving = 0;
  let pending = null;
  // A drag ends with a click on the card's link; the first click after a drag is the drag's.
  let swallowClick = false;

  function setView(next) {
    view = next;
    el.setAttribute('viewBox', `${next.x} ${next.y} ${next.w} ${next.h}`);
  }

  function shown() {
    const out = [];
    const walk = (parent) => {
      for (const row of byParent.get(parent) || []) {
        out.push(row);
        if (!row.collapsed) walk(row.id);
      }
    };
    walk(null);
    return out;
  }

  /** Fits every visible card into the view, never enlarging past 1:1. */
  function fit() {
    const visible = shown().map((r) => pos.get(r.id)).filter(Boolean);
    const width = el.clientWidth;
    const height = el.clientHeight;
    if (!width || !height) return;
    size = { w: width, h: height };
    if (!visible.length) {
      setView({ x: 0, y: 0, w: width, h: height });
      return;
    }
    const minX = Math.min(...visible.map((p) => p.x)) - MARGIN;
    const minY = Math.min(...visible.map((p) => p.y)) - MARGIN;
    const maxX = Math.max(...visible.map((p) => p.x)) + NODE_W + MARGIN;
    const maxY = Math.max(...visible.map((p) => p.y)) + NODE_H + MARGIN + 20;
    const scale = Math.min(width / (maxX - minX), height / (maxY - minY), 1);
    const w = width / scale;
    const h = height / scale;
    setView({ x: (minX + maxX - w) / 2, y: minY, w, h });
  }

  function zoom(factor) {
    if (!view) fit();
    if (!view) return;
    auto = false;
    const cx = view.x + view.w / 2;
    const cy = view.y + view.h / 2;
    const w = view.w * factor;
    const h = view.h * factor;
    setView({ x: cx - w / 2, y: cy - h / 2, w, h });
  }

  /** Everything a card shows, as one string. */
  function signature(row) {
    const at = pos.get(row.id);
    const kids = (byParent.get(row.id) || []).length;
    const hidden = row.collapsed ? descendants(byParent, row.id).length : 0;
    return JSON.stringify([row.name, row.role, row.status, subline(row), failureReason(row),
      Boolean(row.collapsed), kids, hidden, at.x, at.y]);
  }

  function nodeEl(row) {
    const at = pos.get(row.id);
    const kids = byParent.get(row.id) || [];
    const status = row.status || 'unknown';
    const hidden = row.collapsed ? descendants(byParent, row.id).length : 0;
    const link = svg('a', { class: 'name', href: `#/workspaces/${encodeURIComponent(row.id)}` },
      svg('title', { text: [row.name, row.role].filter(Boolean).join(' — ') }),
      svg('rect', { class: 'card', width: NODE_W, height: NODE_H, rx: 8 }),
      svg('rect', { class: 'stripe', width: 6, height: NODE_H, rx: 3 }),
      svg('text', { class: 'label', x: 16, y: 22, text: clip(row.name, kids.length ? 17 : 21) }),
      svg('text', { class: 'sub', x: 16, y: 40, text: clip(subline(row), 30) }),
      badgeEl(row));
    const parts = [];
    if (hidden) {
      // A collapsed subtree shows as a stack behind its card, with how many it hides.
      parts.push(svg('rect', { class: 'stack', x: 6, y: 6, width: NODE_W, height: NODE_H, rx: 8 }));
    }
    parts.push(link);
    if (kids.length) {
      const label = row.collapsed ? `Expand ${row.name} (${hidden} hidden)` : `Collapse ${row.name}`;
      // Handlers look the row up when they run: a card outlives the list read that drew it.
      parts.push(control('toggle', label, row.collapsed ? '+' : '−', NODE_W - 58, () => {
        const now = byId.get(row.id);
        if (now) onToggle(now, !now.collapsed);
      }));
    }
    parts.push(control('more', `Actions on ${row.name}`, '⋯', NODE_W - 30, () => onActions(row.id)));
    if (hidden) {
      parts.push(svg('text', { class: 'hidden-count', x: NODE_W / 2, y: NODE_H + 22, 'text-anchor': 'middle', text: `+${hidden} hidden` }));
    }
    const classes = ['gnode', `status-${status}`];
    if (row.collapsed) classes.push('collapsed');
    if (row.id === selected) classes.push('selected');
    return svg('g', {
      class: classes.join(' '),
      dataset: { id: row.id, status, x: at.x, y: at.y, collapsed: String(Boolean(row.collapsed)), placed: String(placed(row)) },
      transform: `translate(${at.x} ${at.y})`,
    }, parts);
  }

  function edgeEls(list) {
    const ids = new Set(list.map((r) => r.id));
    return list.filter((r) => r.parent_id && ids.has(r.parent_id)).map((r) => svg('path', {
      class: 'edge', dataset: { from: r.parent_id, to: r.id },
      d: edgePath(pos.get(r.parent_id), pos.get(r.id)), 'marker-end': 'url(#graph-arrow)',
    }));
  }

  function redrawEdges(id) {
    for (const path of edges.querySelectorAll('path.edge')) {
      if (path.dataset.from === id || path.dataset.to === id) {
        path.setAttribute('d', edgePath(pos.get(path.dataset.from), pos.get(path.dataset.to)));
      }
    }
  }

  function moveNode(node, id, at) {
    pos.set(id, at);
    node.setAttribute('transform', `translate(${at.x} ${at.y})`);
    redrawEdges(id);
  }

  /** Draws `next` (the page's rows); while a card is held or being saved, after that. */
  function draw(next) {
    if ((drag && drag.moved) || saving) {
      pending = next;
      return;
    }
    pending = null;
    rows = next;
    byId = new Map(rows.map((r) => [r.id, r]));
    byParent = buildTree(rows);
    pos = layout(byParent);
    const list = shown();
    edges.replaceChildren(...edgeEls(list));
    const old = new Map([...nodes.children].map((n) => [n.dataset.id, n]));
    const wanted = list.map((row) => {
      const sig = signature(row);
      const kept = old.get(row.id);
      if (kept && drawnFrom.get(kept) === sig) {
        kept.classList.toggle('selected', row.id === selected);
        return kept;
      }
      const fresh = nodeEl(row);
      drawnFrom.set(fresh, sig);
      return fresh;
    });
    // Only what changed moves in the document.
    const keep = new Set(wanted);
    for (const node of [...nodes.children]) {
      if (!keep.has(node)) node.remove();
    }
    wanted.forEach((node, i) => {
      if (nodes.children[i] !== node) nodes.insertBefore(node, nodes.children[i] || null);
    });
    // A press that has not moved yet ends if its card was redrawn (it changed under it).
    if (drag && drag.kind === 'node' && !drag.node.isConnected) drag = null;
    const key = list.map((r) => r.id).join(' ');
    if (!view || (auto && key !== visibleKey)) fit();
    visibleKey = key;
  }

  function flush() {
    if (pending && !saving && !drag) draw(pending);
  }

  function nodeOf(id) {
    return nodes.querySelector(`g.gnode[data-id="${CSS.escape(id)}"]`);
  }

  /** Recolours one card from its row (a /ws status change) without a redraw. */
  function update(row) {
    const node = nodeOf(row.id);
    if (!node) return;
    const status = row.status || 'unknown';
    for (const c of [...node.classList]) {
      if (c.startsWith('status-')) node.classList.remove(c);
    }
    node.classList.add(`status-${status}`);
    node.dataset.status = status;
    const old = node.querySelector('g.badge');
    if (old) old.replaceWith(badgeEl(row));
    const sub = node.querySelector('text.sub');
    if (sub) sub.textContent = clip(subline(row), 30);
    drawnFrom.set(node, signature(row));
  }

  function select(id) {
    selected = id;
    for (const node of nodes.querySelectorAll('g.gnode')) {
      node.classList.toggle('selected', node.dataset.id === id);
    }
  }

  el.addEventListener('dragstart', (e) => e.preventDefault());
  el.addEventListener('keydown', () => {
    swallowClick = false;
  });
  el.addEventListener('click', (e) => {
    if (swallowClick) {
      swallowClick = false;
      e.preventDefault();
      e.stopPropagation();
    }
  }, true);

  // In the capture phase, so a press on a card's button (which keeps its press from starting
  // a drag) ends the swallowing too.
  el.addEventListener('pointerdown', () => {
    swallowClick = false;
  }, true);
  el.addEventListener('pointerdown', (e) => {
    if (e.button !== 0 || drag || !view) return;
    const ctm = el.getScreenCTM();
    if (!ctm) return;
    const toSvg = ctm.inverse();
    const point = (ev) => new DOMPoint(ev.clientX, ev.clientY).matrixTransform(toSvg);
    const node = e.target.closest('g.gnode');
    const base = { pointer: e.pointerId, sx: e.clientX, sy: e.clientY, start: point(e), point, moved: false };
    if (node) {
      drag = { ...base, kind: 'node', node, id: node.dataset.id, origin: pos.get(node.dataset.id) };
      // No text selection and no native link drag; the click still follows.
      e.preventDefault();
    } else {
      drag = { ...base, kind: 'pan', view: { ...view } };
    }
  });

  el.addEventListener('pointermove', (e) => {
    if (!drag || e.pointerId !== drag.pointer) return;
    if (!drag.moved) {
      if (Math.hypot(e.clientX - drag.sx, e.clientY - drag.sy) < DRAG_THRESHOLD) return;
      drag.moved = true;
      el.setPointerCapture(e.pointerId);
      el.classList.add(drag.kind === 'node' ? 'dragging' : 'panning');
      if (drag.kind === 'node') {
        // On top of its neighbours while it is carried.
        drag.node.parentNode.appendChild(drag.node);
      } else {
        auto = false;
      }
    }
    const p = drag.point(e);
    const dx = p.x - drag.start.x;
    const dy = p.y - drag.start.y;
    if (drag.kind === 'node') {
      moveNode(drag.node, drag.id, { x: drag.origin.x + dx, y: drag.origin.y + dy });
    } else {
      setView({ ...drag.view, x: drag.view.x - dx, y: drag.view.y - dy });
    }
  });

  async function finish(e, cancelled) {
    if (!drag || e.pointerId !== drag.pointer) return;
    const held = drag;
    drag = null;
    el.classList.remove('dragging', 'panning');
    if (el.hasPointerCapture(e.pointerId)) el.releasePointerCapture(e.pointerId);
    if (!held.moved) {
      flush();
      return;
    }
    swallowClick = true;
    if (held.kind !== 'node') {
      flush();
      return;
    }
    const row = rows.find((r) => r.id === held.id);
    const at = pos.get(held.id);
    let x = Math.round(at.x);
    const y = Math.round(at.y);
    if (x === 0 && y === 0) x = 1;
    if (cancelled || !row) {
      moveNode(held.node, held.id, held.origin);
      flush();
      return;
    }
    moveNode(held.node, held.id, { x, y });
    saving += 1;
    try {
      await onMove(row, x, y);
      row.x = x;
      row.y = y;
      held.node.dataset.x = String(x);
      held.node.dataset.y = String(y);
      held.node.dataset.placed = 'true';
      drawnFrom.set(held.node, signature(row));
      // A list read while this was saving may predate it.
      const stale = pending && pending.find((r) => r.id === held.id);
      if (stale) {
        stale.x = x;
        stale.y = y;
      }
    } catch {
      moveNode(held.node, held.id, held.origin);
    } finally {
      saving -= 1;
      flush();
    }
  }
  el.addEventListener('pointerup', (e) => finish(e, false));
  el.addEventListener('pointercancel', (e) => finish(e, true));

  // A new size (the actions panel opening beside the graph, the window): fitted again while
  // the view follows the org, else the same scale and corner.
  const resized = new ResizeObserver(() => {
    const width = el.clientWidth;
    const height = el.clientHeight;
    if (!width || !height) return;
    if (auto || !view || !size) {
      fit();
    } else {
      setView({ x: view.x, y: view.y, w: (view.w * width) / size.w, h: (view.h * height) / size.h });
      size = { w: width, h: height };
    }
  });
  resized.observe(el);

  return {
    el,
    draw,
    update,
    select,
    zoom,
    /** Fits the org into view, and follows it again from now on. */
    fit: () => {
      auto = true;
      fit();
    },
    destroy: () => resized.disconnect(),
  };
}
