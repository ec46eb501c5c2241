// Extensions: per slot the active version, the shadow candidate and its report, the history with
// activate / shadow / delete, roll back, and uploading a new component.

import { del, get, post, seg } from '../api.js';
import { busy, fill, h, note, section, short, table, time } from '../dom.js';

/** Base64 of an ArrayBuffer, in chunks so large components do not overflow the call stack. */
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function answer(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function render(main) {
  let alive = true;
  const slotsHolder = h('div', { id: 'slots' }, h('p', { class: 'muted', text: 'Loading…' }));
  const out = h('p', { class: 'note', id: 'ext-note', hidden: true });

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

  async function report(slot, holder) {
    try {
      const r = await get(`/admin/extensions/${encodeURIComponent(slot)}/shadow-report`);
      if (!alive) return;
      fill(holder,
        h('p', { class: 'report-counts', dataset: { calls: r.calls, disagree: r.disagree } },
          h('strong', { text: `${r.calls} call${r.calls === 1 ? '' : 's'}` }),
          `: ${r.agree} agree, ${r.disagree} disagree, ${r.candidate_failed} candidate failed`),
        r.recent.length
          ? table(['When', 'Outcome', 'Input', 'Active answer', 'Candidate answer', 'microseconds (active / candidate)'], r.recent.map((d) => ({
            attrs: { class: `outcome-${d.outcome}` },
            cells: [time(d.at), d.outcome, h('code', { text: answer(d.input) }), h('code', { text: answer(d.active) }),
              h('code', { text: answer(d.candidate) }), `${d.active_us ?? ''} / ${d.candidate_us ?? ''}`],
          })), { class: 'disagreements' })
          : h('p', { class: 'muted', text: 'No disagreements recorded yet.' }));
    } catch (err) {
      fill(holder, h('p', { class: 'note error', text: err.message }));
    }
  }

  async function load() {
    let listed;
    try {
      listed = await get('/admin/extensions');
    } catch (err) {
      note(out, 'error', err.message);
      return;
    }
    if (!alive) return;
    const { slots, extensions } = listed;
    const selected = slotSelect.value;
    fill(slotSelect, slots.map((s) => h('option', { value: s.slot, text: s.slot })));
    if (selected) slotSelect.value = selected;
    fill(slotsHolder, slots.map((s) => {
      const versions = extensions.filter((e) => e.slot === s.slot);
      const active = versions.find((e) => e.id === s.active_id);
      const shadow = versions.find((e) => e.id === s.shadow_id);
      const reportHolder = h('div', { class: 'report', id: `report-${s.slot.replace(/[^a-z0-9-]/gi, '-')}` });
      const card = h('section', { class: 'card slot', dataset: { slot: s.slot } },
        h('div', { class: 'heading' },
          h('h2', { text: s.slot }),
          h('span', { class: 'active-version', text: active ? `active: ${active.name} ${active.version}` : 'no active version' }),
          h('button', {
            type: 'button', class: 'secondary small', text: 'Roll back',
            onclick: (e) => act(e.target, 'Rolling back…', () => post(`/admin/extensions/${encodeURIComponent(s.slot)}/rollback`),
              (r) => `${s.slot} rolled back to ${r.version}.`),
          })),
        shadow ? h('div', { class: 'shadow' },
          h('h3', {}, `Shadow: ${shadow.name} ${shadow.version} `,
            h('button', { type: 'button', class: 'secondary small', text: 'Refresh report', onclick: () => report(s.slot, reportHolder) })),
          reportHolder) : null,
        table(['Name', 'Version', 'Digest', 'Uploaded', 'State', ''], versions.map((e) => ({
          attrs: { dataset: { id: e.id, name: e.name, version: e.version } },
          cells: [e.name, e.version, h('code', { text: short(e.digest, 19) }), time(e.created_at),
            [e.active ? 'active' : '', e.shadow ? 'shadow' : '', e.builtin ? 'built-in' : ''].filter(Boolean).join(', '),
            e.active ? '' : h('span', { class: 'buttons' },
              h('button', {
                type: 'button', class: 'small', text: 'Activate',
                onclick: (ev) => act(ev.target, 'Activating…', () => post(`/admin/extensions/${seg(e.id)}/activate`), () => `${e.name} ${e.version} is active for ${s.slot}.`),
              }),
              e.shadow ? null : h('button', {
                type: 'button', class: 'secondary small', text: 'Shadow',
                onclick: (ev) => act(ev.target, 'Shadowing…', () => post(`/admin/extensions/${seg(e.id)}/shadow`), () => `${e.name} ${e.version} now shadows ${s.slot}.`),
              }),
              h('button', {
                type: 'button', class: 'danger small', text: 'Delete',
                onclick: (ev) => act(ev.target, 'Deleting…', () => del(`/admin/extensions/${seg(e.id)}`), () => `Deleted ${e.name} ${e.version}.`),
              }))],
        }))));
      if (shadow) report(s.slot, reportHolder);
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

  load();
  return () => {
    alive = false;
  };
}

export const page = { name: 'extensions', render };
