// The workspace page's agent log: the last lines of the agent's output
// (`GET /workspaces/:id/console?tail=`), and with "Follow" every new line as the agent writes it
// (`?follow=true`, a plain-text stream read as it arrives). The host masks every secret value
// of the workspace before a line leaves it.

import { get, token } from '../api.js';
import { h, note } from '../dom.js';

const TAIL = 200;
/** Lines kept on screen while following. */
const KEEP_LINES = 5000;

/** Builds the tab for the workspace at `base`. Returns its element, `load()` and `stop()`. */
export function logsPanel(base) {
  let alive = true;
  /** Aborts the follow stream, when one runs. */
  let following = null;
  let lines = [];

  const out = h('p', { class: 'note', id: 'logs-note', hidden: true });
  const screen = h('pre', { class: 'terminal-screen', id: 'logs-screen' });
  const refresh = h('button', { type: 'button', id: 'logs-refresh', class: 'secondary', text: 'Refresh' });
  const follow = h('input', { type: 'checkbox', id: 'logs-follow' });
  const element = h('div', { class: 'logs' },
    h('div', { class: 'buttons' }, refresh, h('label', { for: 'logs-follow', class: 'inline-check' }, follow, ' Follow')),
    out, screen);

  function show(more, replace) {
    lines = (replace ? more : lines.concat(more)).slice(-KEEP_LINES);
    screen.textContent = lines.join('\n');
    screen.scrollTop = screen.scrollHeight;
    screen.dataset.lines = String(lines.length);
  }

  async function load() {
    if (following) return;
    try {
      const answer = await get(`${base}/console?tail=${TAIL}`);
      if (!alive) return;
      show(answer.lines, true);
      note(out, 'info', answer.lines.length ? `The last ${answer.lines.length} lines.` : 'The agent has written nothing yet.');
    } catch (err) {
      if (alive) note(out, 'error', err.message);
    }
  }

  async function startFollowing() {
    const control = new AbortController();
    following = control;
    const headers = {};
    const bearer = token();
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    try {
      const response = await fetch(`${base}/console?follow=true&tail=${TAIL}`, { headers, signal: control.signal });
      if (!response.ok) {
        let message = `${response.status} ${response.statusText}`;
        try { message = (await response.json()).error || message; } catch { /* not JSON */ }
        throw new Error(message);
      }
      note(out, 'ok', 'Following: new lines appear as the agent writes them.');
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = '';
      let first = true;
      for (;;) {
        const { value, done } = await reader.read();
        if (done || !alive) break;
        pending += value;
        const cut = pending.lastIndexOf('\n');
        if (cut < 0) continue;
        show(pending.slice(0, cut).split('\n'), first);
        first = false;
        pending = pending.slice(cut + 1);
      }
      if (alive && following === control) note(out, 'info', 'The log stream ended (the agent stopped or the host restarted).');
    } catch (err) {
      if (alive && err.name !== 'AbortError') note(out, 'error', err.message);
    } finally {
      if (following === control) {
        following = null;
        follow.checked = false;
        refresh.disabled = false;
      }
    }
  }

  function stopFollowing() {
    if (following) following.abort();
    following = null;
  }

  refresh.addEventListener('click', load);
  follow.addEventListener('change', () => {
    if (follow.checked) {
      refresh.disabled = true;
      startFollowing();
    } else {
      stopFollowing();
      refresh.disabled = false;
      note(out, 'info', 'Stopped following.');
    }
  });

  return {
    element,
    load,
    stop() {
      alive = false;
      stopFollowing();
    },
  };
}
