// The workspace page's chat: the operator talks to the agent with A2A `message/send` through
// the host's proxy (`POST /workspaces/:id/a2a` with the console's token and no
// `X-Workspace-ID`, so the host treats it as the canvas). The conversation so far comes from the
// activity log: the workspace's `a2a_receive` rows with no calling workspace
// (`source=canvas`), which are the operator's messages, the host's own (`system:...`, e.g. the
// restart context) and the agent's notifications (`notify`). Answers also arrive live from
// `/ws`: `A2A_RESPONSE` for any canvas call (this console's or another's) and `AGENT_MESSAGE`
// when the agent speaks up on its own.

import { get, post, upload } from '../api.js';
import { subscribe } from '../events.js';
import { debounce, fill, h, note, time } from '../dom.js';
import { answerOf, metadata, requestText } from './workspace-words.js';

const HISTORY = 50;

let counter = 0;

/** A JSON-RPC and message id for one send (crypto.randomUUID needs a secure context). */
function newId() {
  counter += 1;
  const random = globalThis.crypto && crypto.randomUUID ? crypto.randomUUID() : Math.random().toString(36).slice(2);
  return `console-${random}-${counter}`;
}

/** What went wrong with a send, plainly, from the host's answer. */
function failure(err) {
  if (err.status === 0) return err.message;
  const body = err.body || {};
  let text = err.message;
  if (body.restarting) text += ' (the agent is restarting)';
  if (body.status && !text.includes(body.status)) text += ` (the workspace is ${body.status})`;
  if (typeof body.retry_after === 'number') text += `; try again in ${body.retry_after} s`;
  return text;
}

function attachmentsOf(parts) {
  if (!Array.isArray(parts)) return [];
  return parts.filter((p) => p && p.file).map((p) => p.file.name || p.file.uri || 'unnamed');
}

/** One entry of the conversation from one activity row. */
function entryOf(row) {
  const body = row.request_body;
  if (row.method === 'notify') {
    const response = row.response_body || {};
    return {
      key: `activity:${row.id}`,
      kind: 'agent',
      at: row.created_at,
      text: typeof response.result === 'string' ? response.result : (row.summary || ''),
      files: attachmentsOf(response.parts),
    };
  }
  const source = metadata(body, 'source');
  let answer;
  if (row.status === 'queued') {
    answer = answerOf(row.response_body);
    if (!answer.queued) answer = { queued: true };
  } else if (row.status === 'error') {
    answer = { error: row.error_detail || answerOf(row.response_body).error || 'the call failed' };
  } else {
    answer = answerOf(row.response_body);
  }
  return {
    key: body && (typeof body.id === 'string' || typeof body.id === 'number') ? `rpc:${body.id}` : `activity:${row.id}`,
    kind: typeof source === 'string' && source.startsWith('system:') ? 'system' : 'operator',
    source,
    at: row.created_at,
    text: requestText(body),
    files: attachmentsOf(body && body.params && body.params.message && body.params.message.parts),
    answer,
    ms: row.duration_ms,
  };
}

/** Whether `answer` says how the call ended (not merely that it waits). */
function settled(answer) {
  return Boolean(answer) && (answer.text !== undefined || answer.error !== undefined);
}

/**
 * Builds the chat for workspace `id` at `base`. `agentName()` names the agent in the log.
 * Returns its element, `load()`, `setStatus(status)` and `stop()`.
 */
export function chatPanel(base, id, agentName) {
  let alive = true;
  /** key → entry, oldest first. */
  let entries = new Map();

  const log = h('div', { class: 'chat-log', id: 'chat-log', role: 'log', 'aria-live': 'polite' });
  const out = h('p', { class: 'note', id: 'chat-note', hidden: true });
  const hint = h('p', { class: 'note info', id: 'chat-hint', hidden: true });
  const input = h('textarea', { id: 'chat-input', rows: 3, placeholder: 'Message the agent (Enter sends, Shift+Enter for a new line)', 'aria-label': 'message' });
  const send = h('button', { type: 'submit', id: 'chat-send', text: 'Send' });
  // Attachments go into the workspace's files first; the message then refers to them.
  const attach = h('input', { type: 'file', id: 'chat-files', multiple: true, 'aria-label': 'attach files' });
  const form = h('form', { class: 'chat-form', id: 'chat-form' }, input, h('div', { class: 'chat-actions' }, attach, send));

  const element = h('div', { class: 'chat' },
    h('p', { class: 'muted small', text: 'You write as the operator: the host delivers each message to the agent as A2A message/send and records it in the activity log.' }),
    hint, log, form, out);

  function answerNode(entry) {
    const answer = entry.answer || {};
    const who = agentName() || 'Agent';
    let state = 'answered';
    let text = answer.text;
    if (answer.pending) {
      state = 'pending';
      text = 'Waiting for the agent…';
    } else if (answer.queued) {
      state = 'queued';
      text = (answer.polled
        ? 'The agent fetches its messages itself (poll mode): the message waits in its inbox until it does'
        : answer.waking
          ? 'The workspace is waking from hibernation: the message is queued and will be delivered once its agent is online'
          : 'The agent is busy: the message is queued and will be delivered when it has capacity')
        + (answer.depth ? ` (${answer.depth} waiting)` : '') + '. The answer shows here when it comes.';
    } else if (answer.error !== undefined) {
      state = 'error';
      text = `Not answered: ${answer.error}`;
    } else if (!text) {
      text = '(an empty answer)';
    }
    const meta = [who];
    if (entry.ms) meta.push(`${entry.ms} ms`);
    if (entry.via) meta.push(`via ${entry.via}`);
    return h('div', { class: 'chat-msg from-agent', dataset: { state, via: entry.via || '' } },
      h('div', { class: 'chat-meta', text: meta.join(' · ') }),
      h('p', { class: 'chat-text', text }));
  }

  function entryNode(entry) {
    const dataset = { key: entry.key, kind: entry.kind };
    if (entry.kind === 'agent') {
      return h('article', { class: 'chat-entry', dataset },
        h('div', { class: 'chat-msg from-agent', dataset: { state: 'message' } },
          h('div', { class: 'chat-meta', text: `${agentName() || 'Agent'} · a message for the operator · ${time(entry.at)}` }),
          h('p', { class: 'chat-text', text: entry.text }),
          entry.files && entry.files.length ? h('p', { class: 'muted small', text: `Attachments: ${entry.files.join(', ')}` }) : null));
    }
    if (entry.kind === 'system') {
      return h('details', { class: 'chat-entry', dataset },
        h('summary', { class: 'muted', text: `From the host (${String(entry.source).replace(/^system:/, '')}) · ${time(entry.at)}` }),
        h('div', { class: 'chat-msg from-host' }, h('p', { class: 'chat-text', text: entry.text })),
        answerNode(entry));
    }
    return h('article', { class: 'chat-entry', dataset },
      h('div', { class: 'chat-msg from-operator' },
        h('div', { class: 'chat-meta', text: `Operator · ${time(entry.at)}` }),
        h('p', { class: 'chat-text', text: entry.text }),
        entry.files && entry.files.length ? h('p', { class: 'muted small chat-files', text: `Attachments: ${entry.files.join(', ')}` }) : null),
      answerNode(entry));
  }

  function render() {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    fill(log, entries.size
      ? [...entries.values()].map(entryNode)
      : h('p', { class: 'muted', id: 'chat-empty', text: 'No messages yet.' }));
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  /** Records how the call `key` ended; a real answer is never replaced by "queued". */
  function answer(key, value, via) {
    const entry = entries.get(key);
    if (!entry) return false;
    if (settled(entry.answer) && !settled(value)) return true;
    entry.answer = value;
    if (via) entry.via = via;
    render();
    return true;
  }

  async function load() {
    let rows;
    try {
      rows = await get(`${base}/activity?type=a2a_receive&source=canvas&limit=${HISTORY}`);
    } catch (err) {
      note(out, 'error', `Could not load the conversation: ${err.message}`);
      return;
    }
    if (!alive) return;
    note(out, 'info', '');
    const next = new Map();
    // Newest first from the host; a queued message that was delivered later has a second row
    // for the same call, whose answer wins.
    for (const row of [...rows].reverse()) {
      const entry = entryOf(row);
      const seen = next.get(entry.key);
      if (seen) {
        if (settled(entry.answer) || !settled(seen.answer)) seen.answer = entry.answer;
        if (entry.ms) seen.ms = entry.ms;
      } else {
        next.set(entry.key, entry);
      }
    }
    // Messages still on their way are not in the log yet.
    for (const [key, entry] of entries) {
      if (entry.local && !next.has(key)) next.set(key, entry);
    }
    entries = next;
    render();
  }
  const loadSoon = debounce(load, 300);

  async function sendMessage(text, chosen) {
    const rpcId = newId();
    const key = `rpc:${rpcId}`;
    const names = chosen.map((f) => f.name);
    entries.set(key, { key, kind: 'operator', at: new Date().toISOString(), text, files: names, answer: { pending: true }, local: true });
    render();
    log.scrollTop = log.scrollHeight;
    const parts = [{ kind: 'text', text }];
    if (chosen.length) {
      const form = new FormData();
      for (const f of chosen) form.append('files', f, f.name);
      try {
        const stored = await upload(`${base}/chat/uploads`, form);
        for (const f of stored.files) {
          parts.push({ kind: 'file', file: { uri: f.uri, name: f.name, mimeType: f.mimeType, size: f.size } });
        }
      } catch (err) {
        if (alive) answer(key, { error: `the attachments were not stored: ${failure(err)}` });
        return;
      }
    }
    const body = {
      jsonrpc: '2.0',
      id: rpcId,
      method: 'message/send',
      params: { message: { role: 'user', messageId: rpcId, parts } },
    };
    try {
      const data = await post(`${base}/a2a`, body);
      if (alive) answer(key, answerOf(data));
    } catch (err) {
      if (alive) answer(key, { error: failure(err) });
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const chosen = [...(attach.files || [])];
    input.value = '';
    attach.value = '';
    sendMessage(text, chosen);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED') {
      loadSoon();
      return;
    }
    if (frame.workspace_id !== id) return;
    const payload = frame.payload || {};
    if (frame.event === 'A2A_RESPONSE') {
      const body = payload.response_body;
      const rpc = body && (typeof body.id === 'string' || typeof body.id === 'number') ? `rpc:${body.id}` : null;
      // A call made elsewhere (another console, the CLI): the log has its message.
      if (!rpc || !answer(rpc, answerOf(body), 'live event')) loadSoon();
    } else if (frame.event === 'AGENT_MESSAGE') {
      counter += 1;
      const key = `live:${counter}`;
      entries.set(key, { key, kind: 'agent', at: frame.timestamp, text: String(payload.message || ''), files: (payload.attachments || []).map((f) => f.name || f.uri || 'unnamed') });
      render();
    }
  });

  return {
    element,
    load,
    setStatus(status) {
      const usable = status === 'online' || status === 'degraded';
      const words = status === 'hibernated'
        ? 'The agent is hibernated: a message wakes it and waits in its queue until it is online.'
        : `The agent is ${status}: a message now fails or waits in its queue.`;
      note(hint, 'info', usable || !status || status === 'unknown' ? '' : words);
    },
    stop() {
      alive = false;
      unsubscribe();
    },
  };
}
