// Small DOM helpers. Everything the console shows goes through text nodes or attributes, never
// through innerHTML, so data from the host cannot become markup.

/**
 * Creates an element. `attrs` keys: `class`, `text`, `on<event>` (a listener), `dataset`
 * (an object), booleans (set when true), anything else as an attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.className = value;
    } else if (key === 'text') {
      el.textContent = String(value);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) {
      append(el, child);
    } else if (child instanceof Node) {
      el.appendChild(child);
    } else {
      el.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(status) {
  const value = status || 'unknown';
  return h('span', { class: `badge status-${value}`, dataset: { status: value }, text: value });
}

export function setBadge(el, status) {
  el.className = `badge status-${status}`;
  el.dataset.status = status;
  el.textContent = status;
}

export function time(value) {
  if (!value) return '';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString();
}

export function short(value, length = 12) {
  if (value === null || value === undefined) return '';
  const text = String(value);
  return text.length > length ? `${text.slice(0, length)}…` : text;
}

/** A table from column titles and rows of cells (strings or nodes). */
export function table(columns, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { text: c })))),
    h('tbody', {}, rows.map((row) => h('tr', row.attrs || {}, row.cells.map((cell) => h('td', {}, cell))))),
  );
}

/** A message line inside a page: kind is `ok`, `error` or `info`. */
export function note(el, kind, message) {
  el.className = `note ${kind}`;
  el.textContent = message;
  el.hidden = !message;
}

/** The banner under the bar, for messages that outlive a page (sign-out reasons). */
export function flash(kind, message) {
  const el = document.getElementById('flash');
  note(el, kind, message);
}

/**
 * Runs `work` while `button` shows progress (disabled, busy label); reports a thrown error in
 * `out` (a note element) and rethrows nothing. Resolves to work's value, or undefined on error.
 */
export async function busy(button, label, out, work) {
  const before = button.textContent;
  button.disabled = true;
  button.textContent = label;
  button.setAttribute('aria-busy', 'true');
  if (out) note(out, 'info', `${label}`);
  try {
    const value = await work();
    if (out && out.classList.contains('info')) note(out, 'ok', '');
    return value;
  } catch (err) {
    if (out) note(out, 'error', err.message || String(err));
    return undefined;
  } finally {
    button.disabled = false;
    button.textContent = before;
    button.removeAttribute('aria-busy');
  }
}

/** Calls `fn` at most once per `ms`, trailing. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', { text: title }), children);
}
