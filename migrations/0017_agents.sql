-- Agent assignment history: which model a workspace's agent runs, and when and why an
-- assignment ended (replaced, removed, moved to another workspace). At most one assignment per
-- workspace is active; the active one is what `MODEL_PROVIDER` of the workspace holds.
CREATE TABLE agents (
    id             UUID NOT NULL CONSTRAINT agents_pkey PRIMARY KEY,
    workspace_id   UUID NOT NULL
                   CONSTRAINT agents_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    model          TEXT NOT NULL,
    status         TEXT NOT NULL
                   CONSTRAINT agents_status_check CHECK (status IN ('active', 'removed')),
    created_at     TIMESTAMPTZ NOT NULL,
    removed_at     TIMESTAMPTZ,
    removal_reason TEXT
);
CREATE UNIQUE INDEX agents_active_uniq ON agents (workspace_id) WHERE status = 'active';
CREATE INDEX agents_workspace_idx ON agents (workspace_id, created_at);
