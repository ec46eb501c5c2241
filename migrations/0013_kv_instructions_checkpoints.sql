-- The key-value memory of a workspace, platform instructions, and workflow checkpoints.

-- One JSON value per (workspace, key). `version` starts at 1 and grows by one on every write, so
-- a writer can make its write conditional on the version it read (optimistic concurrency). A row
-- whose `expires_at` has passed is invisible to every read and is deleted by the expiry sweeper;
-- a write over it starts again at version 1, as if the key had never been there.
CREATE TABLE workspace_memory (
    workspace_id UUID NOT NULL
                 CONSTRAINT workspace_memory_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    value        JSONB NOT NULL,
    version      BIGINT NOT NULL DEFAULT 1,
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT workspace_memory_pkey PRIMARY KEY (workspace_id, key)
);
-- The sweeper's one query reads this index only.
CREATE INDEX workspace_memory_expiry_idx ON workspace_memory (expires_at) WHERE expires_at IS NOT NULL;

-- Instructions the operator gives agents: to everyone (`global`), to a team (`scope_target` is
-- the team's lead: that workspace and its direct children) or to one workspace. A target that
-- is purged takes its instructions with it.
CREATE TABLE platform_instructions (
    id           UUID NOT NULL CONSTRAINT platform_instructions_pkey PRIMARY KEY,
    scope        TEXT NOT NULL
                 CONSTRAINT platform_instructions_scope_check CHECK (scope IN ('global', 'team', 'workspace')),
    scope_target UUID
                 CONSTRAINT platform_instructions_target_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    content      TEXT NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT platform_instructions_target_check CHECK ((scope = 'global') = (scope_target IS NULL))
);
CREATE INDEX platform_instructions_target_idx ON platform_instructions (scope_target);

-- One row per step of a workflow a workspace's agent runs: an agent that restarts reads where it
-- got to. Writing the same step again replaces its payload.
CREATE TABLE workflow_checkpoints (
    id           UUID NOT NULL CONSTRAINT workflow_checkpoints_pkey PRIMARY KEY,
    workspace_id UUID NOT NULL
                 CONSTRAINT workflow_checkpoints_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    workflow_id  TEXT NOT NULL,
    step_name    TEXT NOT NULL,
    step_index   INTEGER NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX workflow_checkpoints_step_uniq ON workflow_checkpoints (workspace_id, workflow_id, step_name);
