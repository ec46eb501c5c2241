// The pending-approvals banner, on every page: polls /approvals/pending every 10 s (as the
// original canvas did) and at once on APPROVAL_* events, a removed workspace and a reopened
// stream. "Review" opens the decide dialog (workspace, action, reason, context; Approve / Deny
// with an optional note), which posts to .../approvals/{id}/decide.

import { get, post, seg, signedIn } from './api.js';
import { subscribe } from './events.js';
import { busy, fill, h, note } from './dom.js';

const POLL_MS = 10000;
let banner = null;
let pending = [];
let timer = null;
let loading = null;

function render() {
  if (!pending.length) {
    banner.hidden = true;
    fill(banner);
    return;
  }
  const first = pending[0];
  const count = pending.length === 1 ? '1 approval pending' : `${pending.length} approvals pending`;
  fill(banner,
    h('strong', { text: count }),
    ' — ',
    h('span', { class: 'approval-first', text: `${first.workspace_name}: ${first.action}` }),
    ' ',
    ...pending.map((a, i) => h('button', {
      type: 'button',
      class: 'secondary approval-review',
      dataset: { approvalId: a.id },
      text: i === 0 ? 'Review' : `Review ${i + 1}`,
      onclick: () => openDialog(a),
    })));
  banner.dataset.count = String(pending.length);
  banner.hidden = false;
}

/** Reloads the pending list (one request at a time; a call during one waits for it). */
export async function refresh() {
  if (!signedIn()) {
    pending = [];
    render();
    return;
  }
  if (loading) return loading;
  loading = (async () => {
    try {
      const rows = await get('/approvals/pending');
      pending = Array.isArray(rows) ? rows : [];
      render();
    } catch {
      // A refusal signs the user out (api.js); anything else is retried at the next poll.
    } finally {
      loading = null;
    }
  })();
  return loading;
}

function openDialog(approval) {
  const old = document.getElementById('approval-dialog');
  if (old) old.remove();
  const out = h('p', { class: 'note', hidden: true });
  const noteInput = h('textarea', { id: 'approval-note', rows: 2, placeholder: 'Note for the agent (optional)' });
  const context = approval.context === null || approval.context === undefined
    ? h('p', { class: 'muted', text: 'No context.' })
    : h('pre', { id: 'approval-context', text: JSON.stringify(approval.context, null, 2) });
  const decide = (decision, button) => busy(button, decision === 'approved' ? 'Approving…' : 'Denying…', out, async () => {
    const body = { decision };
    if (noteInput.value.trim()) body.note = noteInput.value.trim();
    try {
      await post(`/workspaces/${seg(approval.workspace_id)}/approvals/${seg(approval.id)}/decide`, body);
    } catch (err) {
      // Decided elsewhere (409) or gone (404): the list is stale either way.
      if (err.status === 409 || err.status === 404) await refresh();
      throw err;
    }
    dialog.close();
    dialog.remove();
    await refresh();
  });
  const approve = h('button', { type: 'button', id: 'approval-approve', text: 'Approve' });
  const deny = h('button', { type: 'button', id: 'approval-deny', class: 'danger', text: 'Deny' });
  const close = h('button', { type: 'button', id: 'approval-close', class: 'secondary', text: 'Close' });
  approve.addEventListener('click', () => decide('approved', approve));
  deny.addEventListener('click', () => decide('denied', deny));
  const dialog = h('dialog', { id: 'approval-dialog', class: 'confirm approval', dataset: { approvalId: approval.id } },
    h('h2', { text: 'Approval requested' }),
    h('dl', {},
      h('dt', { text: 'Workspace' }), h('dd', { id: 'approval-workspace', text: approval.workspace_name }),
      h('dt', { text: 'Action' }), h('dd', { id: 'approval-action', text: approval.action }),
      h('dt', { text: 'Reason' }), h('dd', { id: 'approval-reason', text: approval.reason || '—' }),
      approval.task_id ? [h('dt', { text: 'Task' }), h('dd', { text: approval.task_id })] : null,
      h('dt', { text: 'Context' }), h('dd', {}, context)),
    h('label', { for: 'approval-note', text: 'Note' }),
    noteInput,
    out,
    h('div', { class: 'buttons' }, close, deny, approve));
  close.addEventListener('click', () => {
    dialog.close();
    dialog.remove();
  });
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  close.focus();
  note(out, 'info', '');
}

/** Puts the banner under the bar and starts watching. */
export function startApprovals() {
  banner = h('div', { id: 'approvals-banner', class: 'note warn approvals-banner', role: 'status', hidden: true });
  document.getElementById('flash').after(banner);
  subscribe((frame) => {
    switch (frame.event) {
      case 'APPROVAL_REQUESTED':
      case 'APPROVAL_DECIDED':
      case 'WORKSPACE_REMOVED':
      case 'STREAM_OPENED':
        refresh();
        break;
      default:
    }
  });
  clearInterval(timer);
  timer = setInterval(refresh, POLL_MS);
  refresh();
}
