-- Foundation schema: workspaces and everything the registry, secrets, auth and events need.
--
-- Written in PostgreSQL's dialect. The migrator applies it unchanged on PostgreSQL and, for
-- SQLite, rewrites the column type names listed in `store::migrate::SQLITE_TYPES` (UUID -> BLOB,
-- TIMESTAMPTZ/JSONB -> TEXT, ...) so both backends share one set of files. Keep to syntax both
-- engines accept: no SQL functions for defaults (timestamps and ids come from the host), no
-- casts, no ALTER ... ADD CONSTRAINT. Every constraint is named: the host maps violations to HTTP
-- answers by these names.

CREATE TABLE workspaces (
    id                   UUID NOT NULL CONSTRAINT workspaces_pkey PRIMARY KEY,
    name                 TEXT NOT NULL,
    role                 TEXT,
    tier                 INTEGER NOT NULL DEFAULT 3
                         CONSTRAINT workspaces_tier_check CHECK (tier BETWEEN 1 AND 4),
    status               TEXT NOT NULL DEFAULT 'provisioning'
                         CONSTRAINT workspaces_status_check CHECK (status IN (
                             'provisioning', 'online', 'offline', 'degraded', 'failed', 'removed',
                             'paused', 'hibernated', 'awaiting_agent', 'hibernating')),
    source_bundle_id     TEXT,
    agent_card           JSONB,
    url                  TEXT,
    parent_id            UUID CONSTRAINT workspaces_parent_fkey REFERENCES workspaces (id),
    forwarded_to         UUID CONSTRAINT workspaces_forwarded_to_fkey REFERENCES workspaces (id),
    last_heartbeat_at    TIMESTAMPTZ,
    last_error_rate      DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_sample_error    TEXT,
    active_tasks         INTEGER NOT NULL DEFAULT 0,
    uptime_seconds       BIGINT NOT NULL DEFAULT 0,
    current_task         TEXT,
    awareness_namespace  TEXT,
    runtime              TEXT NOT NULL DEFAULT 'langgraph',
    workspace_dir        TEXT,
    workspace_access     TEXT NOT NULL DEFAULT 'none'
                         CONSTRAINT workspaces_workspace_access_check
                         CHECK (workspace_access IN ('none', 'read_only', 'read_write')),
    budget_limit         BIGINT,
    monthly_spend        BIGINT NOT NULL DEFAULT 0,
    last_outbound_at     TIMESTAMPTZ,
    max_concurrent_tasks INTEGER NOT NULL DEFAULT 1
                         CONSTRAINT workspaces_max_concurrent_tasks_check CHECK (max_concurrent_tasks >= 1),
    update_tier          TEXT NOT NULL DEFAULT 'production'
                         CONSTRAINT workspaces_update_tier_check CHECK (update_tier IN ('canary', 'production')),
    removed_at           TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX workspaces_parent_id_idx ON workspaces (parent_id);
CREATE INDEX workspaces_status_idx ON workspaces (status);
-- A live name is unique among its siblings; roots share the all-zero parent.
CREATE UNIQUE INDEX workspaces_parent_name_uniq
    ON workspaces (COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'), name)
    WHERE status <> 'removed';

CREATE TABLE canvas_layouts (
    workspace_id UUID NOT NULL CONSTRAINT canvas_layouts_pkey PRIMARY KEY
                 CONSTRAINT canvas_layouts_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    x            DOUBLE PRECISION NOT NULL DEFAULT 0,
    y            DOUBLE PRECISION NOT NULL DEFAULT 0,
    collapsed    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE canvas_viewport (
    id       UUID NOT NULL CONSTRAINT canvas_viewport_pkey PRIMARY KEY,
    x        DOUBLE PRECISION NOT NULL DEFAULT 0,
    y        DOUBLE PRECISION NOT NULL DEFAULT 0,
    zoom     DOUBLE PRECISION NOT NULL DEFAULT 1,
    saved_at TIMESTAMPTZ NOT NULL
);

-- Append-only log behind record_and_broadcast. No foreign keys: events outlive purged rows.
CREATE TABLE structure_events (
    id           UUID NOT NULL CONSTRAINT structure_events_pkey PRIMARY KEY,
    event_type   TEXT NOT NULL,
    workspace_id UUID,
    agent_id     UUID,
    target_id    UUID,
    payload      JSONB,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX structure_events_workspace_id_idx ON structure_events (workspace_id, created_at);
CREATE INDEX structure_events_created_at_idx ON structure_events (created_at);

CREATE TABLE activity_logs (
    id              UUID NOT NULL CONSTRAINT activity_logs_pkey PRIMARY KEY,
    workspace_id    UUID NOT NULL
                    CONSTRAINT activity_logs_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    activity_type   TEXT NOT NULL,
    source_id       UUID,
    target_id       UUID,
    method          TEXT,
    summary         TEXT,
    request_body    JSONB,
    response_body   JSONB,
    tool_trace      JSONB,
    duration_ms     INTEGER,
    status          TEXT NOT NULL DEFAULT 'ok',
    error_detail    TEXT,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX activity_logs_workspace_type_idx ON activity_logs (workspace_id, activity_type, created_at);
CREATE INDEX activity_logs_created_at_idx ON activity_logs (created_at);
CREATE INDEX activity_logs_source_idx ON activity_logs (workspace_id, source_id);
CREATE INDEX activity_logs_target_idx ON activity_logs (workspace_id, target_id);
CREATE UNIQUE INDEX activity_logs_idempotency_uniq
    ON activity_logs (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE workspace_secrets (
    id                 UUID NOT NULL CONSTRAINT workspace_secrets_pkey PRIMARY KEY,
    workspace_id       UUID NOT NULL
                       CONSTRAINT workspace_secrets_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    key                TEXT NOT NULL,
    encrypted_value    BYTEA NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0
                       CONSTRAINT workspace_secrets_encryption_version_check CHECK (encryption_version IN (0, 1)),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    CONSTRAINT workspace_secrets_workspace_key_uniq UNIQUE (workspace_id, key)
);

CREATE TABLE global_secrets (
    key                TEXT NOT NULL CONSTRAINT global_secrets_pkey PRIMARY KEY,
    encrypted_value    BYTEA NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0
                       CONSTRAINT global_secrets_encryption_version_check CHECK (encryption_version IN (0, 1)),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspace_auth_tokens (
    id           UUID NOT NULL CONSTRAINT workspace_auth_tokens_pkey PRIMARY KEY,
    workspace_id UUID NOT NULL
                 CONSTRAINT workspace_auth_tokens_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash   BYTEA NOT NULL CONSTRAINT workspace_auth_tokens_hash_uniq UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX workspace_auth_tokens_live_idx ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL;

CREATE TABLE org_api_tokens (
    id           UUID NOT NULL CONSTRAINT org_api_tokens_pkey PRIMARY KEY,
    token_hash   BYTEA NOT NULL CONSTRAINT org_api_tokens_hash_uniq UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT,
    created_by   TEXT,
    org_id       UUID CONSTRAINT org_api_tokens_org_fkey REFERENCES workspaces (id) ON DELETE SET NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX org_api_tokens_live_idx ON org_api_tokens (created_at) WHERE revoked_at IS NULL;

CREATE TABLE workspace_config (
    workspace_id UUID NOT NULL CONSTRAINT workspace_config_pkey PRIMARY KEY
                 CONSTRAINT workspace_config_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    data         JSONB NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
