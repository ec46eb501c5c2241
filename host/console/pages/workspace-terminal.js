// The workspace page's terminal: a shell in the agent's environment over
// `GET /workspaces/:id/terminal` (a WebSocket; the operator's token travels as ?token=, since
// browsers cannot set headers on one). It is a line-mode console, not a terminal emulator: the
// operator types a line and sends it, output is shown as text with the escape sequences removed.
// A full emulator (xterm.js) would be more than the rest of the console together; diagnosing an
// agent needs commands and their output, and full-screen programs are not its use. Before
// opening, `…/terminal/diagnose` says whether a shell can open and, if not, why.

import { get, token } from '../api.js';
import { fill, h, note } from '../dom.js';

/** Lines kept on screen; older ones scroll away. */
const KEEP_LINES = 2000;

/** Text a terminal wrote, as plain lines: escape sequences removed, backspaces applied. */
export function plainText(raw) {
  const noEscapes = raw
    // CSI sequences (colours, cursor moves), OSC sequences (titles), then lone escapes.
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '')
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, '')
    .replace(/\x1b[@-_]/g, '')
    .replace(/\r\n/g, '\n')
    .replace(/\r/g, '');
  let out = '';
  for (const ch of noEscapes) {
    if (ch === '\b') out = out.slice(0, -1);
    else if (ch === '\n' || ch === '\t' || ch >= ' ') out += ch;
  }
  return out;
}

/** Builds the tab for workspace `id` at `base`. Returns its element, `load()` and `stop()`. */
export function terminalPanel(base) {
  let alive = true;
  let socket = null;
  let screenText = '';
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();

  const state = h('p', { class: 'note', id: 'terminal-state', hidden: true });
  const screen = h('pre', { class: 'terminal-screen', id: 'terminal-screen', tabindex: '0', 'aria-live': 'polite' });
  const measure = h('span', { class: 'terminal-measure', 'aria-hidden': 'true', text: '0123456789' });
  const line = h('input', { id: 'terminal-input', placeholder: 'a command, then Enter', spellcheck: 'false', autocomplete: 'off', disabled: true, 'aria-label': 'command' });
  const send = h('button', { type: 'submit', id: 'terminal-send', text: 'Send', disabled: true });
  const interrupt = h('button', { type: 'button', id: 'terminal-interrupt', class: 'secondary', text: 'Ctrl-C', disabled: true, title: 'Interrupt the running command' });
  const openButton = h('button', { type: 'button', id: 'terminal-open', text: 'Open a shell' });
  const closeButton = h('button', { type: 'button', id: 'terminal-close', class: 'secondary', text: 'Close', disabled: true });
  const form = h('form', { class: 'inline terminal-line', id: 'terminal-form' }, line, send, interrupt);
  const element = h('div', { class: 'terminal' },
    h('p', { class: 'muted small', text: 'A shell where the agent runs (its container, or its sandbox and user on the process runtime). The session is recorded in the activity log and the audit ledger; what you type is not. Closing it ends every process it started.' }),
    h('div', { class: 'buttons' }, openButton, closeButton),
    state, screen, measure, form);

  function show(text) {
    screenText = (screenText + plainText(text)).split('\n').slice(-KEEP_LINES).join('\n');
    screen.textContent = screenText;
    screen.scrollTop = screen.scrollHeight;
  }

  function setOpen(open) {
    line.disabled = !open;
    send.disabled = !open;
    interrupt.disabled = !open;
    closeButton.disabled = !open;
    openButton.disabled = open;
    element.dataset.open = String(open);
  }

  /** The screen's size in character cells. */
  function size() {
    const cell = measure.getBoundingClientRect().width / 10 || 8;
    const cols = Math.max(20, Math.min(1000, Math.floor(screen.clientWidth / cell) - 1));
    return { cols, rows: 24 };
  }

  function sendBytes(text) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(text));
  }

  async function load() {
    try {
      const d = await get(`${base}/terminal/diagnose`);
      if (!alive) return;
      element.dataset.ready = String(d.ready);
      if (d.ready) note(state, 'ok', `A shell can open (${d.runtime} runtime).`);
      else note(state, 'error', `No shell now: ${d.reason}`);
      if (!socket) openButton.disabled = !d.ready;
    } catch (err) {
      if (alive) note(state, 'error', err.message);
    }
  }

  function open() {
    if (socket) return;
    const { cols, rows } = size();
    const bearer = token();
    const query = new URLSearchParams({ cols: String(cols), rows: String(rows) });
    if (bearer) query.set('token', bearer);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}${base}/terminal?${query}`);
    ws.binaryType = 'arraybuffer';
    socket = ws;
    openButton.disabled = true;
    note(state, 'info', 'Opening…');
    ws.onopen = () => {
      if (!alive) return ws.close();
      setOpen(true);
      note(state, 'ok', `Connected (${cols}×${rows}).`);
      line.focus();
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== 'string') {
        show(decoder.decode(e.data, { stream: true }));
        return;
      }
      let frame = null;
      try { frame = JSON.parse(e.data); } catch { return; }
      if (frame.type === 'exit') note(state, 'info', 'The shell exited.');
      else if (frame.type === 'error') note(state, 'error', frame.message);
    };
    ws.onclose = (e) => {
      if (socket === ws) socket = null;
      if (!alive) return;
      setOpen(false);
      if (state.textContent.startsWith('Opening')) {
        // The host refused before the upgrade; diagnose says why.
        note(state, 'error', 'The terminal could not open.');
        load();
      } else if (!state.textContent.includes('exited')) {
        note(state, 'info', e.code === 1000 || e.code === 1005 ? 'Closed.' : `Closed (${e.code}).`);
      }
    };
  }

  openButton.addEventListener('click', open);
  closeButton.addEventListener('click', () => { if (socket) socket.close(); });
  interrupt.addEventListener('click', () => sendBytes('\x03'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    sendBytes(`${line.value}\n`);
    line.value = '';
  });
  const onResize = () => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'resize', ...size() }));
  };
  window.addEventListener('resize', onResize);

  return {
    element,
    load,
    stop() {
      alive = false;
      window.removeEventListener('resize', onResize);
      if (socket) socket.close();
      socket = null;
      fill(screen);
    },
  };
}
