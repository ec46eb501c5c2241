// What the host's answers and activity rows mean, in words: restart decisions, their triggers,
// and the text of A2A messages. Shared by the workspace page's tabs; no DOM here.

/** `ms` as an operator reads a delay: "500 ms", "1 s", "1.5 s", "2 min". */
export function duration(ms) {
  const n = Number(ms);
  if (!Number.isFinite(n) || n < 0) return 'a moment';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${Number((n / 1000).toFixed(1))} s`;
  return `${Number((n / 60000).toFixed(1))} min`;
}

const SKIPPED = {
  'no runtime': 'this host runs no agents',
  'external workspace': 'the agent runs outside this host',
  removed: 'the workspace was removed',
  paused: 'the workspace is paused',
  hibernated: 'the workspace is hibernated',
  'an ancestor is paused': 'a workspace above it is paused',
  'not found': 'the workspace is gone',
  'the restart could not be recorded': 'the restart could not be recorded',
};

/**
 * A restart decision in words: the `restart` of a file or secret save (`kind`
 * `keep_running`, `hot_reload`, `restart_now`, `restart_after_ms` with `ms`, `coalesced`,
 * `skipped` with `reason`), or a policy decision from the activity log (same kinds).
 */
export function restartWords(restart) {
  if (!restart || !restart.kind) return 'the restart policy decides whether the agent restarts';
  switch (restart.kind) {
    case 'restart_now': return 'restarting now';
    case 'restart_after_ms': return `restarting in ${duration(restart.ms)}`;
    case 'keep_running': return 'no restart needed';
    case 'hot_reload': return 'no restart needed (the agent picks the change up live)';
    case 'coalesced': return 'a restart already under way will include this change';
    case 'skipped': return `no restart: ${SKIPPED[restart.reason] || restart.reason || 'skipped'}`;
    default: return `restart decision: ${restart.kind}`;
  }
}

/** Whether a restart decision restarts the agent. */
export function restarts(restart) {
  return Boolean(restart) && ['restart_now', 'restart_after_ms', 'coalesced'].includes(restart.kind);
}

function list(values) {
  return Array.isArray(values) && values.length ? values.join(', ') : '';
}

/** What made the host ask the restart policy (a `restart_decision` row's `trigger`). */
export function triggerWords(trigger) {
  if (!trigger || !trigger.kind) return 'a change';
  switch (trigger.kind) {
    case 'files_written': return `files written (${list(trigger.paths) || 'none listed'})`;
    case 'secrets_changed': return `secret changed (${list(trigger.keys) || 'none listed'})`;
    case 'plugin_installed': return `plugin ${trigger.name} installed (${trigger.reload} reload)`;
    case 'config_changed': return 'configuration changed';
    case 'agent_exited': return trigger.code === -1 ? 'heartbeats stopped' : `the agent exited (code ${trigger.code})`;
    case 'drift_applied': return `plugin update ${trigger.plugin} applied`;
    default: return trigger.kind.replace(/_/g, ' ');
  }
}

/** The text of A2A message parts (file parts by name). */
export function partsText(parts) {
  if (!Array.isArray(parts)) return '';
  return parts.map((part) => {
    if (!part || typeof part !== 'object') return '';
    if (typeof part.text === 'string') return part.text;
    if (part.file) return `[file: ${part.file.name || part.file.uri || 'unnamed'}]`;
    if (part.data !== undefined) return JSON.stringify(part.data);
    return '';
  }).filter(Boolean).join('\n');
}

/** The `params.message` of a JSON-RPC `message/send` body, or null. */
export function messageOf(body) {
  return body && body.params && typeof body.params.message === 'object' ? body.params.message : null;
}

/** The text a `message/send` body carries. */
export function requestText(body) {
  const message = messageOf(body);
  if (!message) return '';
  if (Array.isArray(message.parts)) return partsText(message.parts);
  return typeof message.content === 'string' ? message.content : '';
}

/** A message's metadata value, or undefined. */
export function metadata(body, key) {
  const message = messageOf(body);
  const fromMessage = message && message.metadata ? message.metadata[key] : undefined;
  if (fromMessage !== undefined) return fromMessage;
  return body && body.params && body.params.metadata ? body.params.metadata[key] : undefined;
}

/**
 * What an agent answered, from a JSON-RPC response (as the proxy returns it or the activity log
 * stores it): `{ text }`, `{ error }`, `{ queued }` or `{ text: '' }` when it said nothing.
 */
export function answerOf(body) {
  if (body === null || body === undefined) return { text: '' };
  if (typeof body !== 'object') return { text: String(body) };
  if (body.queued) return { queued: true, queueId: body.queue_id, depth: body.queue_depth, waking: body.waking === true };
  // A poll-mode agent's message waits in its inbox until the agent fetches it.
  if (body.delivery_mode === 'poll' && body.status === 'queued') {
    return { queued: true, queueId: body.queue_id, depth: body.queue_depth, polled: true };
  }
  if (body.error) {
    const e = body.error;
    return { error: typeof e === 'string' ? e : (e.message || JSON.stringify(e)) };
  }
  if (typeof body.raw === 'string') return { text: body.raw };
  // An answer too large to keep whole: the log has its beginning.
  if (typeof body.preview === 'string') {
    return { text: `${body.preview}\n… (the rest of this ${body.bytes}-byte answer is not kept)` };
  }
  const result = body.result;
  if (result === undefined) return { text: '' };
  if (typeof result === 'string') return { text: result };
  const texts = [];
  if (Array.isArray(result.parts)) texts.push(partsText(result.parts));
  if (Array.isArray(result.artifacts)) {
    for (const artifact of result.artifacts) texts.push(partsText(artifact && artifact.parts));
  }
  const status = result.status && result.status.message;
  if (status && Array.isArray(status.parts)) texts.push(partsText(status.parts));
  const text = texts.filter(Boolean).join('\n');
  return { text: text || JSON.stringify(result) };
}

/** A JSON value as indented text (never markup: callers put it in a text node). */
export function pretty(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}
