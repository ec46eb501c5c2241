// The workspace page's budget: this month's limit, spend and what is left (`GET .../budget`),
// the tokens its agent reported (`GET .../metrics`, this month and up to 12 before), and a form
// that sets or lifts the limit in dollars (`PATCH .../budget`, which takes cents; the admin or
// an org token only, so a workspace token is told so by the host).

import { get, patch } from '../api.js';
import { subscribe } from '../events.js';
import { busy, debounce, fill, h, note, table } from '../dom.js';

/** `1234` cents as `$12.34`. */
function dollars(cents) {
  return `$${(cents / 100).toFixed(2)}`;
}

/** Builds the tab for the workspace at `base`. Returns its element, `load()` and `stop()`. */
export function budgetPanel(base, id) {
  let alive = true;

  const facts = h('dl', { class: 'facts', id: 'budget-facts' });
  const usage = h('div', { id: 'budget-usage' });
  const limit = h('input', {
    // Text, not a number field: the page explains a bad amount instead of the browser's tooltip.
    id: 'budget-limit', inputmode: 'decimal', placeholder: 'no limit', spellcheck: 'false',
    'aria-label': 'monthly budget in dollars',
  });
  const submit = h('button', { type: 'submit', id: 'budget-submit', text: 'Save' });
  const out = h('p', { class: 'note', id: 'budget-note', hidden: true });
  const form = h('form', { class: 'inline', id: 'budget-form' },
    h('label', { for: 'budget-limit', text: 'Monthly budget (USD)' }), limit, submit);
  const element = h('div', { class: 'budget' },
    facts,
    h('p', { class: 'muted small', text: 'Calls to the workspace are refused (402) once this month\'s spend reaches the budget. Leave the field empty for no limit.' }),
    form, out,
    h('h3', { text: 'Token usage' }), usage);

  function showBudget(b) {
    facts.dataset.exceeded = String(b.exceeded);
    fill(facts,
      h('dt', { text: 'Month' }), h('dd', { id: 'budget-period', text: b.period }),
      h('dt', { text: 'Budget' }), h('dd', { id: 'budget-limit-shown', text: b.budget_limit == null ? 'no limit' : dollars(b.budget_limit) }),
      h('dt', { text: 'Spent' }), h('dd', { id: 'budget-spent', text: dollars(b.monthly_spend) }),
      h('dt', { text: 'Left' }), h('dd', {
        id: 'budget-remaining',
        class: b.exceeded ? 'error' : '',
        text: b.budget_remaining == null ? '—' : `${dollars(b.budget_remaining)}${b.exceeded ? ' (spent: calls are refused)' : ''}`,
      }));
  }

  function showUsage(m) {
    const months = m.history.length ? m.history : [m];
    fill(usage, table(['Month', 'Input tokens', 'Output tokens', 'Answers', 'Estimated cost'], months.map((u) => ({
      attrs: { dataset: { period: u.period } },
      cells: [u.period, String(u.input_tokens), String(u.output_tokens), String(u.call_count), `$${u.estimated_cost_usd.toFixed(2)}`],
    })), { class: 'budget-usage-table' }));
  }

  async function load() {
    try {
      const [b, m] = await Promise.all([get(`${base}/budget`), get(`${base}/metrics`)]);
      if (!alive) return;
      showBudget(b);
      showUsage(m);
      if (document.activeElement !== limit) limit.value = b.budget_limit == null ? '' : (b.budget_limit / 100).toFixed(2);
    } catch (err) {
      if (alive) fill(facts, h('p', { class: 'note error', text: err.message }));
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = limit.value.trim();
    let cents = null;
    if (text) {
      const value = /^\d+(\.\d{1,2})?$/.test(text) ? Number(text) : NaN;
      if (!Number.isFinite(value) || value < 0) {
        note(out, 'error', 'The budget is an amount in dollars, 0 or more (empty for no limit).');
        return;
      }
      cents = Math.round(value * 100);
    }
    const saved = await busy(submit, 'Saving…', out, () => patch(`${base}/budget`, { budget_limit: cents }));
    if (!saved || !alive) return;
    note(out, 'ok', saved.budget_limit == null ? 'Saved: no limit.' : `Saved: ${dollars(saved.budget_limit)} a month.`);
    showBudget(saved);
  });

  // An answer the agent gave may have spent something.
  const reload = debounce(load, 500);
  const unsubscribe = subscribe((frame) => {
    if (frame.event === 'STREAM_OPENED'
      || (frame.workspace_id === id && (frame.event === 'A2A_RESPONSE' || frame.event === 'ACTIVITY_LOGGED'))) {
      reload();
    }
  });

  return {
    element,
    load,
    stop() {
      alive = false;
      unsubscribe();
    },
  };
}
