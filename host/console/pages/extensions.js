// Extensions: per slot the active version, the shadow candidate and its report (a readable
// summary, the raw JSON behind a toggle), the history with activate / shadow / delete, roll
// back, and uploading a new component. The page follows `EXTENSION_*` events and, while a slot
// runs a shadow, re-reads its report every few seconds (shadow results raise no event).

import { del, get, post, seg } from '../api.js';
import { subscribe } from '../events.js';
import { busy, debounce, fill, h, note, section, short, table, time } from '../dom.js';

/** How often a shadow report is re-read while the page is open. */
const REPORT_POLL_MS = 4000;

/** Events after which a shadow report may have new calls (a plugin install classifies). */
const CLASSIFYING_EVENTS = new Set(['PLUGIN_INSTALLED', 'PLUGIN_UNINSTALLED', 'WORKSPACE_RESTART_REQUESTED']);

/** Base64 of an ArrayBuffer, in chunks so large components do not overflow the call stack. */
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

/** A classifier's or a restart policy's answer in words. */
export function describeAnswer(value) {
  if (value === null || value === undefined) return 'no answer';
  if (typeof value !== 'object') return String(value);
  if (value.error !== undefined) return `failed (${value.error})`;
  switch (value.kind) {
    case 'hot': return 'hot reload';
    case 'cold': return value.reason ? `cold: ${value.reason}` : 'cold';
    case 'keep_running': return 'keep running';
    case 'hot_reload': return 'hot reload';
    case 'restart_now': return 'restart now';
    case 'restart_after_ms': return `restart in ${value.ms >= 1000 ? `${value.ms / 1000} s` : `${value.ms} ms`}`;
    default: return JSON.stringify(value);
  }
}

/** The input of one shadowed call as something to read: the changed paths of a plugin for a
 * classifier, the trigger and workspace for a restart policy. */
export function describeInput(input) {
  if (Array.isArray(input)) {
    if (!input.length) return h('span', { class: 'muted', text: 'no changed files' });
    return h('ul', { class: 'paths' }, input.map((change) => h('li', { dataset: { path: change.path || '' } },
      h('span', { class: `change change-${change.kind || 'changed'}`, text: change.kind || 'changed' }), ' ',
      h('code', { text: change.path || '?' }))));
  }
  if (input && typeof input === 'object' && input.trigger) {
    const trigger = input.trigger;
    const details = trigger.paths || trigger.keys || (trigger.name ? [trigger.name] : trigger.plugin ? [trigger.plugin] : []);
    return h('span', {},
      h('strong', { text: String(trigger.kind || 'trigger').replace(/_/g, ' ') }),
      input.workspace && input.workspace.name ? ` on ${input.workspace.name}` : '',
      details.length ? h('ul', { class: 'paths' }, details.map((d) => h('li', {}, h('code', { text: String(d) })))) : null);
  }
  return h('code', { text: input === undefined || input === null ? '' : JSON.stringify(input) });
}

function render(main) {
  let alive = true;
  const slotsHolder = h('div', { id: 'slots' }, h('p', { class: 'muted', text: 'Loading…' }));
  const out = h('p', { class: 'note', id: 'ext-note', hidden: true });
  // Slots whose raw JSON is shown, kept across live refreshes.
  const rawShown = new Set();
  // Slot -> the function that re-reads its report, for the slots that run a shadow.
  const reports = new Map();
  let loadFailed = false;
  // What the slots were last drawn from: a reload that finds the same is not redrawn, so a
  // button is never replaced under the operator's pointer for nothing.
  let drawn = '';

  // Upload form.
  const fileInput = h('input', { id: 'ext-file', type: 'file', accept: '.wasm,application/wasm', required: true });
  const nameInput = h('input', { id: 'ext-name', placeholder: 'name', required: true, spellcheck: 'false' });
  const versionInput = h('input', { id: 'ext-version', placeholder: 'version, e.g. 2.0.0', required: true, spellcheck: 'false' });
  const slotSelect = h('select', { id: 'ext-slot' });
  const deadlineInput = h('input', { id: 'ext-deadline', type: 'number', min: 1, placeholder: 'deadline ms (optional)' });
  const memoryInput = h('input', { id: 'ext-memory', type: 'number', min: 1, placeholder: 'memory MB (optional)' });
  const uploadButton = h('button', { type: 'submit', id: 'ext-upload', text: 'Upload' });
  const uploadOut = h('p', { class: 'note', id: 'ext-upload-note', hidden: true });
  const form = h('form', { id: 'ext-form', class: 'grid' },
    h('label', { for: 'ext-file', text: 'Component (.wasm)' }), fileInput,
    h('label', { for: 'ext-name', text: 'Name' }), nameInput,
    h('label', { for: 'ext-version', text: 'Version' }), versionInput,
    h('label', { for: 'ext-slot', text: 'Slot' }), slotSelect,
    h('label', { for: 'ext-deadline', text: 'Grants' }), h('div', { class: 'inline' }, deadlineInput, memoryInput),
    h('span', {}), h('div', {}, uploadButton, uploadOut));

  main.append(
    h('div', { class: 'heading' }, h('h1', { text: 'Extensions' }),
      h('button', { type: 'button', class: 'secondary', id: 'ext-refresh', text: 'Refresh', onclick: () => load() })),
    out,
    slotsHolder,
    section('Upload a version', form),
  );

  async function act(button, label, call, done) {
    const reply = await busy(button, label, out, call);
    if (reply) {
      note(out, 'ok', done(reply));
      load();
    }
  }

  function rawToggle(slot, pre) {
    const button = h('button', { type: 'button', class: 'link raw-toggle', 'aria-expanded': String(!pre.hidden) });
    const label = () => {
      button.textContent = pre.hidden ? 'Show raw JSON' : 'Hide raw JSON';
      button.setAttribute('aria-expanded', String(!pre.hidden));
    };
    button.addEventListener('click', () => {
      pre.hidden = !pre.hidden;
      if (pre.hidden) rawShown.delete(slot); else rawShown.add(slot);
      label();
    });
    label();
    return button;
  }

  /** Reads and shows the shadow report of `slot`; `names` labels the two sides. */
  async function report(slot, holder, names) {
    let r;
    try {
      r = await get(`/admin/extensions/${encodeURIComponent(slot)}/shadow-report`);
    } catch (err) {
      if (alive) fill(holder, h('p', { class: 'note error', text: err.message }));
      return;
    }
    if (!alive) return;
    const pre = h('pre', { class: 'raw-json', text: JSON.stringify(r, null, 2), hidden: !rawShown.has(slot) });
    const settled = r.calls - r.candidate_failed;
    fill(holder,
      h('p', {
        class: 'report-counts',
        dataset: { calls: r.calls, agree: r.agree, disagree: r.disagree, failed: r.candidate_failed },
      },
      h('strong', { text: plural(r.calls, 'call') }),
      `: ${r.agree} agree, ${r.disagree} disagree, ${r.candidate_failed} candidate failed`,
      r.calls ? h('span', { class: 'muted', text: ` (${Math.round((100 * r.agree) / Math.max(settled, 1))}% agreement where both answered)` }) : null),
      r.calls ? h('div', { class: 'agreement', role: 'img', 'aria-label': `${r.agree} agree, ${r.disagree} disagree, ${r.candidate_failed} failed` },
        ['agree', 'disagree', 'failed'].map((kind) => {
          const count = kind === 'failed' ? r.candidate_failed : r[kind];
          return count ? h('span', { class: `bar bar-${kind}`, dataset: { share: Math.round((100 * count) / r.calls) } }) : null;
        })) : null,
      r.recent.length
        ? [h('h4', { text: r.recent.length === 1 ? 'The disagreement' : `The latest ${r.recent.length} disagreements, newest first` }),
          table(['When', 'Input', `Active: ${names.active}`, `Candidate: ${names.candidate}`, 'Microseconds (active / candidate)'], r.recent.map((d) => ({
            attrs: { class: `outcome-${d.outcome}`, dataset: { outcome: d.outcome } },
            cells: [time(d.at), describeInput(d.input),
              h('span', { class: 'answer answer-active', text: describeAnswer(d.active) }),
              h('span', { class: 'answer answer-candidate', text: d.outcome === 'candidate_failed' ? `failed (${(d.candidate && d.candidate.error) || 'error'})` : describeAnswer(d.candidate) }),
              `${d.active_us ?? ''} / ${d.candidate_us ?? ''}`],
          })), { class: 'disagreements' })]
        : h('p', { class: 'muted', text: r.calls ? 'No disagreements: both versions answered alike every time.' : 'No calls yet: the report fills as the slot is used.' }),
      h('div', { class: 'raw' }, rawToggle(slot, pre), pre));
    // The bars' widths are numbers set through the CSSOM, never host text written as markup.
    for (const bar of holder.querySelectorAll('.bar')) {
      bar.style.flexGrow = bar.dataset.share;
    }
  }

  async function load() {
    let listed;
    try {
      listed = await get('/admin/extensions');
    } catch (err) {
      note(out, 'error', err.message);
      loadFailed = true;
      return;
    }
    if (!alive) return;
    if (loadFailed) {
      loadFailed = false;
      note(out, 'info', '');
    }
    const signature = JSON.stringify(listed);
    if (signature === drawn) return;
    drawn = signature;
    const { slots, extensions } = listed;
    const selected = slotSelect.value;
    fill(slotSelect, slots.map((s) => h('option', { value: s.slot, text: s.slot })));
    if (selected) slotSelect.value = selected;
    reports.clear();
    fill(slotsHolder, slots.map((s) => {
      const versions = extensions.filter((e) => e.slot === s.slot);
      const active = versions.find((e) => e.id === s.active_id);
      const shadow = versions.find((e) => e.id === s.shadow_id);
      const previous = versions.find((e) => e.id === s.previous_id);
      const shadowable = !s.slot.startsWith('resolver:');
      const label = (e) => `${e.name} ${e.version}`;
      const reportHolder = h('div', { class: 'report', id: `report-${s.slot.replace(/[^a-z0-9-]/gi, '-')}` });
      const rollback = h('button', {
        type: 'button', class: 'secondary small rollback', text: 'Roll back',
        disabled: !previous,
        title: previous ? `re-activate ${label(previous)}` : 'no earlier version to roll back to',
        onclick: (e) => act(e.target, 'Rolling back…', () => post(`/admin/extensions/${encodeURIComponent(s.slot)}/rollback`),
          (r) => `${s.slot} rolled back to ${r.version}.`),
      });
      const card = h('section', { class: 'card slot', dataset: { slot: s.slot } },
        h('div', { class: 'heading' },
          h('h2', { text: s.slot }),
          h('span', { class: 'active-version', text: active ? `active: ${label(active)}` : 'no active version' }),
          rollback,
          previous ? h('span', { class: 'muted small', text: `to ${label(previous)}` }) : null),
        shadow ? h('div', { class: 'shadow', dataset: { id: shadow.id } },
          h('h3', {}, `Shadow: ${label(shadow)} `,
            h('button', { type: 'button', class: 'secondary small', text: 'Refresh report', onclick: () => report(s.slot, reportHolder, { active: active ? label(active) : 'none', candidate: label(shadow) }) }),
            ' ',
            h('button', {
              type: 'button', class: 'danger small stop-shadow', text: 'Stop shadowing',
              onclick: (ev) => act(ev.target, 'Stopping…', () => del(`/admin/extensions/${seg(shadow.id)}/shadow`),
                () => `${label(shadow)} no longer shadows ${s.slot}; its report is kept with it.`),
            })),
          h('p', { class: 'muted small', text: 'The candidate sees every input the active version sees; only the active answer is used.' }),
          reportHolder) : null,
        table(['Name', 'Version', 'Digest', 'Uploaded', 'State', ''], versions.map((e) => ({
          attrs: { dataset: { id: e.id, name: e.name, version: e.version, builtin: String(Boolean(e.builtin)) } },
          cells: [e.name, e.version, h('code', { text: short(e.digest, 19) }), time(e.created_at),
            [e.active ? 'active' : '', e.shadow ? 'shadow' : '', e.builtin ? 'built-in' : ''].filter(Boolean).join(', '),
            e.active ? '' : h('span', { class: 'buttons' },
              h('button', {
                type: 'button', class: 'small', text: 'Activate',
                onclick: (ev) => act(ev.target, 'Activating…', () => post(`/admin/extensions/${seg(e.id)}/activate`), () => `${label(e)} is active for ${s.slot}.`),
              }),
              e.shadow || !shadowable ? null : h('button', {
                type: 'button', class: 'secondary small', text: 'Shadow',
                onclick: (ev) => act(ev.target, 'Shadowing…', () => post(`/admin/extensions/${seg(e.id)}/shadow`), () => `${label(e)} now shadows ${s.slot}.`),
              }),
              // Built-in versions are what a slot rolls back to; the host refuses to delete them.
              e.builtin ? null : h('button', {
                type: 'button', class: 'danger small', text: 'Delete',
                onclick: (ev) => act(ev.target, 'Deleting…', () => del(`/admin/extensions/${seg(e.id)}`), () => `Deleted ${label(e)}.`),
              }))],
        }))));
      if (shadow) {
        const names = { active: active ? label(active) : 'none', candidate: label(shadow) };
        const refresh = () => report(s.slot, reportHolder, names);
        reports.set(s.slot, refresh);
        refresh();
      }
      return card;
    }));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const file = fileInput.files[0];
    if (!file) {
      note(uploadOut, 'error', 'Choose a .wasm file.');
      return;
    }
    const manifest = { name: nameInput.value.trim(), version: versionInput.value.trim(), slot: slotSelect.value };
    const grants = {};
    if (deadlineInput.value) grants.deadline_ms = Number(deadlineInput.value);
    if (memoryInput.value) grants.memory_mb = Number(memoryInput.value);
    if (Object.keys(grants).length) manifest.grants = grants;
    const uploaded = await busy(uploadButton, 'Uploading…', uploadOut, async () => {
      const component = base64(await file.arrayBuffer());
      return post('/admin/extensions', { manifest, component });
    });
    if (uploaded) {
      note(uploadOut, 'ok', `Uploaded ${uploaded.name} ${uploaded.version} (${short(uploaded.digest, 19)}); shadow it to compare, or activate it.`);
      form.reset();
      load();
    }
  });

  const refreshReports = debounce(() => {
    for (const refresh of reports.values()) refresh();
  }, 300);
  const loadSoon = debounce(load, 200);
  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED' || (frame.event && frame.event.startsWith('EXTENSION_'))) {
      loadSoon();
    } else if (CLASSIFYING_EVENTS.has(frame.event)) {
      refreshReports();
    }
  });
  const poll = setInterval(() => {
    if (!document.hidden) refreshReports();
  }, REPORT_POLL_MS);

  load();
  return () => {
    alive = false;
    clearInterval(poll);
    unsubscribe();
  };
}

export const page = { name: 'extensions', render };
