// The live event stream: one WebSocket to /ws for the whole page, reconnecting with backoff.
// Browsers cannot set headers on a WebSocket, so the bearer travels as ?token=.

import { signedIn, token } from './api.js';

const listeners = new Set();
const stateListeners = new Set();
let socket = null;
let wanted = false;
let backoff = 500;
let retryTimer = null;
let state = 'closed';

const MAX_BACKOFF = 15000;

function setState(next) {
  state = next;
  for (const fn of stateListeners) fn(next);
}

function emit(frame) {
  for (const fn of listeners) {
    try {
      fn(frame);
    } catch (err) {
      console.error('event listener failed', err);
    }
  }
}

function open() {
  clearTimeout(retryTimer);
  retryTimer = null;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const bearer = token();
  const query = bearer ? `?token=${encodeURIComponent(bearer)}` : '';
  setState('connecting');
  const ws = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  socket = ws;
  let opened = false;
  ws.addEventListener('open', () => {
    opened = true;
    backoff = 500;
    setState('open');
    // Whatever happened while the stream was down is unknown: pages reload what they show.
    emit({ event: 'STREAM_OPENED' });
  });
  ws.addEventListener('message', (msg) => {
    let frame;
    try {
      frame = JSON.parse(msg.data);
    } catch {
      return;
    }
    emit(frame);
  });
  ws.addEventListener('close', () => {
    if (socket !== ws) return;
    socket = null;
    if (!wanted) {
      setState('closed');
      return;
    }
    setState('retrying');
    const delay = opened ? 500 : backoff;
    backoff = Math.min(backoff * 2, MAX_BACKOFF);
    retryTimer = setTimeout(open, delay + Math.floor(Math.random() * 250));
  });
}

/** Starts (or restarts with the current token) the stream; does nothing before sign-in. */
export function connect() {
  if (!signedIn()) return;
  wanted = true;
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  open();
}

export function disconnect() {
  wanted = false;
  clearTimeout(retryTimer);
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  setState('closed');
}

/** Calls `fn(frame)` for every frame; returns the function that unsubscribes. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function onState(fn) {
  stateListeners.add(fn);
  fn(state);
  return () => stateListeners.delete(fn);
}

/** The status a workspace event puts a workspace in, or null when it says nothing about it. */
export function statusFromEvent(name) {
  switch (name) {
    case 'WORKSPACE_ONLINE': return 'online';
    case 'WORKSPACE_OFFLINE': return 'offline';
    case 'WORKSPACE_PROVISIONING': return 'provisioning';
    case 'WORKSPACE_DEGRADED': return 'degraded';
    case 'WORKSPACE_PROVISION_FAILED': return 'failed';
    case 'WORKSPACE_PAUSED': return 'paused';
    case 'WORKSPACE_HIBERNATED': return 'hibernated';
    case 'WORKSPACE_REMOVED': return 'removed';
    case 'WORKSPACE_AWAITING_AGENT': return 'awaiting_agent';
    default: return null;
  }
}
