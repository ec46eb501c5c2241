-- Approvals: an agent asks a human before a risky action; the operator decides once.
-- `status` leaves `pending` only through `UPDATE ... WHERE status = 'pending'`, so of two
-- concurrent deciders exactly one wins and the other is told the request was already decided.
-- A purged workspace's requests go with it (ON DELETE CASCADE); a removed (soft-deleted) one's
-- stay for the record but leave the pending list, which joins live workspaces only.

CREATE TABLE approval_requests (
    id            UUID NOT NULL CONSTRAINT approval_requests_pkey PRIMARY KEY,
    workspace_id  UUID NOT NULL
                  CONSTRAINT approval_requests_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    task_id       TEXT,
    action        TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    context       JSONB,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CONSTRAINT approval_requests_status_check
                  CHECK (status IN ('pending', 'approved', 'denied', 'escalated')),
    requested_by  TEXT NOT NULL,
    decided_by    TEXT,
    decided_at    TIMESTAMPTZ,
    decision_note TEXT,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX approval_requests_workspace_idx ON approval_requests (workspace_id, created_at);
-- The canvas banner's poll (every 10 s per open canvas) reads this partial index only.
CREATE INDEX approval_requests_pending_idx ON approval_requests (created_at) WHERE status = 'pending';
