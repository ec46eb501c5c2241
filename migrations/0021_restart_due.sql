-- Delayed restarts (a restart policy's `restart_after_ms`, the crash back-off): when each is
-- due, shared by every replica. The replica that decided one also waits for it in memory; if it
-- is killed first, any replica's sweep starts the restart once it is due. Taking a row (delete
-- by workspace and ticket, or every row past due) is what starts it, so it starts once.
CREATE TABLE workspace_restart_due (
    workspace_id UUID NOT NULL CONSTRAINT workspace_restart_due_pkey PRIMARY KEY
                 CONSTRAINT workspace_restart_due_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    ticket       UUID NOT NULL,
    due_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX workspace_restart_due_at ON workspace_restart_due (due_at);
