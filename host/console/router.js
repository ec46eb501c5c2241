// A hash router: `#/path` selects a page module; a page's render returns its cleanup. A page
// with unsaved work can hold the operator on it with `guardLeave`.

const routes = [];
let cleanup = null;
let main = null;
/** The path the shown page was rendered for (kept current by `replacePath`). */
let shown = null;
/** The shown page's `(path) => Promise<boolean>`: may the operator leave for `path`? */
let leaveGuard = null;

/** `pattern` is a path with `:name` parameters, e.g. `/workspaces/:id`. */
export function route(pattern, page) {
  const names = [];
  const source = pattern.replace(/:[a-z]+/g, (m) => {
    names.push(m.slice(1));
    return '([^/]+)';
  });
  routes.push({ regex: new RegExp(`^${source}$`), names, page });
}

export function current() {
  return location.hash.replace(/^#/, '') || '/';
}

export function go(path) {
  if (current() === path) {
    render();
  } else {
    location.hash = `#${path}`;
  }
}

/**
 * Asks `guard(path)` before the router leaves the page shown now for `path`; it resolves true to
 * leave. The guard goes with the page; the returned function removes it earlier.
 */
export function guardLeave(guard) {
  leaveGuard = guard;
  return () => {
    if (leaveGuard === guard) leaveGuard = null;
  };
}

/** Changes the address to `path` without rendering again (a page's own tabs). */
export function replacePath(path) {
  shown = path;
  history.replaceState(history.state, '', `#${path}`);
}

async function hashChanged() {
  const path = current();
  // The address put back after a refused leave, or a page's own replacePath.
  if (path === shown) return;
  if (leaveGuard && shown !== null) {
    const from = shown;
    // The page stays on screen while it asks; the address says so too.
    history.replaceState(history.state, '', `#${from}`);
    const guard = leaveGuard;
    if (!(await guard(path))) return;
    if (shown !== from) return;
    history.replaceState(history.state, '', `#${path}`);
  }
  render();
}

function render() {
  leaveGuard = null;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error('page cleanup failed', err);
    }
    cleanup = null;
  }
  const path = current();
  shown = path;
  for (const { regex, names, page } of routes) {
    const m = regex.exec(path);
    if (!m) continue;
    const params = {};
    names.forEach((name, i) => {
      params[name] = decodeURIComponent(m[i + 1]);
    });
    main.replaceChildren();
    document.body.dataset.page = page.name;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.page === page.name);
    }
    const result = page.render(main, params);
    cleanup = typeof result === 'function' ? result : null;
    return;
  }
  // An unknown address shows the org tree.
  location.hash = '#/';
}

export function start(root) {
  main = root;
  window.addEventListener('hashchange', hashChanged);
  render();
}
