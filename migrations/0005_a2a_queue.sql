-- The busy queue: a message for an agent that was too busy to take it (timeout, reset or EOF
-- before a response) waits here until a heartbeat reports spare capacity. One active row per
-- workspace and message id (a partial unique index: inserts name it with
-- `ON CONFLICT (workspace_id, idempotency_key) WHERE ... DO NOTHING`).

CREATE TABLE a2a_queue (
    id              UUID NOT NULL CONSTRAINT a2a_queue_pkey PRIMARY KEY,
    workspace_id    UUID NOT NULL
                    CONSTRAINT a2a_queue_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    caller_id       UUID,
    priority        INTEGER NOT NULL DEFAULT 50
                    CONSTRAINT a2a_queue_priority_check CHECK (priority BETWEEN 0 AND 100),
    body            JSONB NOT NULL,
    method          TEXT,
    idempotency_key TEXT,
    enqueued_at     TIMESTAMPTZ NOT NULL,
    dispatched_at   TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    expires_at      TIMESTAMPTZ,
    attempts        INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CONSTRAINT a2a_queue_status_check
                    CHECK (status IN ('queued', 'dispatched', 'completed', 'dropped', 'failed')),
    last_error      TEXT
);
CREATE INDEX a2a_queue_dispatch_idx
    ON a2a_queue (workspace_id, priority DESC, enqueued_at) WHERE status = 'queued';
CREATE INDEX a2a_queue_expiry_idx
    ON a2a_queue (expires_at) WHERE status = 'queued' AND expires_at IS NOT NULL;
CREATE UNIQUE INDEX a2a_queue_active_uniq
    ON a2a_queue (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched');
