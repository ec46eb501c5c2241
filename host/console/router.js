// A hash router: `#/path` selects a page module; a page's render returns its cleanup.

const routes = [];
let cleanup = null;
let main = null;

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

function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error('page cleanup failed', err);
    }
    cleanup = null;
  }
  const path = current();
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
  window.addEventListener('hashchange', render);
  render();
}
