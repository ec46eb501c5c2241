// Bundles in the console: download a workspace subtree as `<name>.bundle.json`, duplicate it
// beside itself, and import a bundle file. Every call goes through the public API
// (`/bundles/export/:id`, `/bundles/import`), so the host's checks and messages apply.

import { get, post, seg } from './api.js';

/** Saves `value` as a JSON file named `name` through the browser's download. */
export function download(name, value) {
  const blob = new Blob([`${JSON.stringify(value, null, 2)}\n`], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** The file name a bundle of the workspace called `name` is saved under. */
export function bundleName(name) {
  return `${String(name).replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 80) || 'workspace'}.bundle.json`;
}

/** Exports workspace `id`'s subtree. */
export function exportBundle(id) {
  return get(`/bundles/export/${seg(id)}`);
}

/** Imports `bundle` (under `parentId` when given); the host's answer. */
export function importBundle(bundle, parentId) {
  return post(`/bundles/import${parentId ? `?parent_id=${encodeURIComponent(parentId)}` : ''}`, bundle);
}

/** What an import created, in words: "Created Lead (2) with 2 more; set OPENAI_API_KEY on …". */
export function importedWords(answer) {
  const [root, ...rest] = answer.workspaces;
  let words = `Created ${root.name}${rest.length ? ` with ${rest.length} more workspace${rest.length === 1 ? '' : 's'}` : ''}.`;
  const names = new Map(answer.workspaces.map((w) => [w.id, w.name]));
  const missing = answer.missing_secrets.map((m) => `${m.keys.join(', ')} on ${names.get(m.workspace_id)}`);
  if (missing.length) words += ` Secrets do not travel in bundles: set ${missing.join('; ')}.`;
  return words;
}
