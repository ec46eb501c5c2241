// The `track` field of a plugin install: what drift detection follows for the plugin. `none`
// (the default), `tag:<tag>` or `sha:<commit>`; the host checks the value and says why it
// refuses one. Used by the workspace page's install form.

import { h } from '../dom.js';

/**
 * A select (none / tag / sha) and the tag or commit it needs. `element` goes into a form;
 * `value()` is what the install body's `track` carries; `reset()` goes back to `none`.
 */
export function trackControl() {
  const kind = h('select', { id: 'plugin-track-kind', 'aria-label': 'track for updates' },
    h('option', { value: 'none', text: 'no tracking' }),
    h('option', { value: 'tag', text: 'track a tag' }),
    h('option', { value: 'sha', text: 'pin a commit' }));
  const ref = h('input', { id: 'plugin-track-ref', spellcheck: 'false', hidden: true, 'aria-label': 'tag or commit to track' });
  const sync = () => {
    const tracked = kind.value !== 'none';
    ref.hidden = !tracked;
    ref.required = tracked;
    ref.placeholder = kind.value === 'sha' ? 'commit sha' : 'tag, e.g. v1';
  };
  kind.addEventListener('change', sync);
  sync();
  return {
    element: h('span', { class: 'track' }, kind, ref),
    value: () => (kind.value === 'none' ? 'none' : `${kind.value}:${ref.value.trim()}`),
    reset: () => {
      kind.value = 'none';
      ref.value = '';
      sync();
    },
  };
}
