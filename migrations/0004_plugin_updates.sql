-- Drift detection: an upstream revision that differs from the installed one queues an update.
-- At most one pending row per workspace and plugin (a partial unique index: inserts name it
-- with `ON CONFLICT (workspace_id, plugin_name) WHERE status = 'pending' DO NOTHING`).

CREATE TABLE plugin_update_queue (
    id           UUID NOT NULL CONSTRAINT plugin_update_queue_pkey PRIMARY KEY,
    workspace_id UUID NOT NULL
                 CONSTRAINT plugin_update_queue_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    plugin_name  TEXT NOT NULL,
    tracked_ref  TEXT NOT NULL,
    current_sha  TEXT,
    latest_sha   TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CONSTRAINT plugin_update_queue_status_check CHECK (status IN ('pending', 'applied', 'dismissed')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX plugin_update_queue_pending_uniq
    ON plugin_update_queue (workspace_id, plugin_name) WHERE status = 'pending';
CREATE INDEX plugin_update_queue_status_idx ON plugin_update_queue (status, created_at);
