// The workspace page's traces: the recent traces this workspace took part in
// (`GET /workspaces/:id/traces`, newest first, kept in the host's memory), and for the one
// chosen a waterfall — each span a row, indented under its parent, its bar placed on the
// trace's time line — covering the host's spans and the agents' down the delegation tree.

import { get } from '../api.js';
import { fill, h, note, short, table, time } from '../dom.js';

const LIMIT = 20;

function ms(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  if (value >= 10) return `${Math.round(value)} ms`;
  return `${value.toFixed(1)} ms`;
}

/** The spans in tree order (parents before children, siblings by start), each with its depth. */
function ordered(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && ids.has(span.parent_span_id)) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else {
      roots.push(span);
    }
  }
  const out = [];
  const walk = (span, depth) => {
    out.push({ span, depth });
    for (const child of children.get(span.span_id) || []) walk(child, depth + 1);
  };
  for (const root of roots) walk(root, 0);
  return out;
}

/** Builds the tab for the workspace at `base`; `nameOf(id)` names workspaces. */
export function tracesPanel(base, nameOf) {
  let alive = true;
  let traces = [];
  let chosen = null;

  const refresh = h('button', { type: 'button', id: 'traces-refresh', class: 'secondary', text: 'Refresh' });
  const out = h('p', { class: 'note', id: 'traces-note', hidden: true });
  const list = h('div', { id: 'traces-list' });
  const waterfall = h('div', { id: 'trace-waterfall', class: 'waterfall', hidden: true });
  const element = h('div', { class: 'traces' },
    h('p', { class: 'muted small', text: 'Requests that did work, A2A calls, delegations, schedule runs and restarts this workspace took part in, with the spans its agents reported. The host keeps the most recent ones in memory; a collector set as otel.endpoint gets them all.' }),
    h('div', { class: 'buttons' }, refresh), out, list, waterfall);

  function renderList() {
    fill(list, traces.length ? table(['Started', 'Trace', 'Duration', 'Spans', 'Workspaces', ''], traces.map((t) => ({
      attrs: {
        class: `trace-row${chosen === t.trace_id ? ' chosen' : ''}`,
        dataset: { trace: t.trace_id },
        onclick: () => choose(t.trace_id),
      },
      cells: [time(t.started_at), h('span', { title: t.trace_id }, t.name), ms(t.duration_ms), String(t.span_count),
        t.workspaces.map((w) => nameOf(w)).join(', '), t.error ? h('span', { class: 'badge status-failed', text: 'error' }) : ''],
    })), { class: 'traces-table' }) : h('p', { class: 'muted', id: 'traces-empty', text: 'No traces yet.' }));
  }

  function renderWaterfall() {
    const trace = traces.find((t) => t.trace_id === chosen);
    if (!trace) {
      waterfall.hidden = true;
      return;
    }
    const total = Math.max(trace.duration_ms, 0.001);
    const rows = ordered(trace.spans).map(({ span, depth }) => {
      const left = (100 * span.offset_ms) / total;
      const width = Math.max((100 * span.duration_ms) / total, 0.3);
      const who = span.reported_by === 'agent' ? `agent ${nameOf(span.workspace_id)}` : 'host';
      const detail = Object.entries(span.attributes).map(([k, v]) => `${k}=${v}`).join('\n');
      return h('div', {
        class: `span-row ${span.reported_by}${span.status === 'error' ? ' error' : ''}`,
        dataset: { name: span.name, reporter: span.reported_by, span: span.span_id },
        title: `${span.name}\n${who}${span.status_message ? `\n${span.status_message}` : ''}\n${detail}`,
      },
      h('div', { class: 'span-label', style: `padding-left: ${depth * 0.9}rem` },
        h('span', { class: 'span-name', text: span.name }),
        h('span', { class: 'span-who muted small', text: ` ${who}` })),
      h('div', { class: 'span-track' },
        h('div', { class: 'span-bar', style: `left: ${left}%; width: ${Math.min(width, 100 - left)}%` })),
      h('div', { class: 'span-ms small', text: ms(span.duration_ms) }));
    });
    fill(waterfall,
      h('h3', { id: 'trace-title', text: `${trace.name} · ${ms(trace.duration_ms)} · ${short(trace.trace_id, 32)}` }),
      trace.dropped_spans ? h('p', { class: 'muted small', text: `${trace.dropped_spans} more spans were not kept.` }) : null,
      h('div', { class: 'span-legend small muted' },
        h('span', { class: 'swatch host' }), ' host ', h('span', { class: 'swatch agent' }), ' agent ',
        h('span', { class: 'swatch error' }), ' error'),
      rows);
    waterfall.hidden = false;
  }

  function choose(traceId) {
    chosen = traceId;
    renderList();
    renderWaterfall();
  }

  async function load() {
    try {
      const answer = await get(`${base}/traces?limit=${LIMIT}`);
      if (!alive) return;
      traces = answer.traces;
      if (!traces.some((t) => t.trace_id === chosen)) chosen = traces.length ? traces[0].trace_id : null;
      note(out, 'ok', '');
      renderList();
      renderWaterfall();
    } catch (err) {
      if (alive) note(out, 'error', err.message);
    }
  }

  refresh.addEventListener('click', load);

  return {
    element,
    load,
    stop() {
      alive = false;
    },
  };
}
