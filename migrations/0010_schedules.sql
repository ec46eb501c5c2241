-- Schedules: a cron expression in a time zone whose tick sends a prompt to the workspace's agent.
-- `next_run_at` is the claim: a replica fires a due row only by moving it with
-- `UPDATE ... WHERE id = $1 AND next_run_at = <the value it read>`, so a tick fires once however
-- many replicas see it. NULL means not scheduled (disabled, or a row the scheduler could not
-- evaluate; `last_error` then says why).

CREATE TABLE workspace_schedules (
    id                     UUID NOT NULL CONSTRAINT workspace_schedules_pkey PRIMARY KEY,
    workspace_id           UUID NOT NULL
                           CONSTRAINT workspace_schedules_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    name                   TEXT NOT NULL DEFAULT '',
    cron_expr              TEXT NOT NULL,
    timezone               TEXT NOT NULL DEFAULT 'UTC',
    prompt                 TEXT NOT NULL,
    enabled                BOOLEAN NOT NULL DEFAULT TRUE,
    source                 TEXT NOT NULL DEFAULT 'runtime'
                           CONSTRAINT workspace_schedules_source_check CHECK (source IN ('template', 'runtime')),
    last_run_at            TIMESTAMPTZ,
    next_run_at            TIMESTAMPTZ,
    run_count              BIGINT NOT NULL DEFAULT 0,
    last_status            TEXT,
    last_error             TEXT,
    consecutive_empty_runs INTEGER NOT NULL DEFAULT 0,
    consecutive_failures   INTEGER NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX workspace_schedules_name_uniq ON workspace_schedules (workspace_id, name);
-- The scheduler's one query when nothing is due reads this index only.
CREATE INDEX workspace_schedules_due_idx ON workspace_schedules (next_run_at) WHERE enabled;

-- One row per fire (the history), beside the workspace's `cron_run` activity row.
CREATE TABLE workspace_schedule_runs (
    id           UUID NOT NULL CONSTRAINT workspace_schedule_runs_pkey PRIMARY KEY,
    schedule_id  UUID NOT NULL
                 CONSTRAINT workspace_schedule_runs_schedule_fkey REFERENCES workspace_schedules (id) ON DELETE CASCADE,
    workspace_id UUID NOT NULL
                 CONSTRAINT workspace_schedule_runs_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    tick_at      TIMESTAMPTZ,
    started_at   TIMESTAMPTZ NOT NULL,
    duration_ms  INTEGER,
    status       TEXT NOT NULL,
    error_detail TEXT,
    request      JSONB
);
CREATE INDEX workspace_schedule_runs_schedule_idx ON workspace_schedule_runs (schedule_id, started_at);
