-- Secrets sealed with their row's identity as associated data: `encryption_version` 2.
--
-- 0001's CHECK constraints only allow versions 0 and 1, and SQLite cannot alter a CHECK, so both
-- tables are rebuilt the portable way: the rows are copied into a temporary table, the table is
-- dropped (with its constraints), created again exactly as in 0001 (every column, constraint
-- name and foreign key) except that the CHECK also allows 2, and the rows are copied back.
-- Version 1 stays allowed: this SQL cannot re-seal (that needs the key), so the host re-seals
-- version 1 rows to version 2 when it starts, right after migrating, and refuses to read
-- version 1 after that.

CREATE TEMPORARY TABLE workspace_secrets_0008 AS
    SELECT id, workspace_id, key, encrypted_value, encryption_version, created_at, updated_at
    FROM workspace_secrets;
DROP TABLE workspace_secrets;
CREATE TABLE workspace_secrets (
    id                 UUID NOT NULL CONSTRAINT workspace_secrets_pkey PRIMARY KEY,
    workspace_id       UUID NOT NULL
                       CONSTRAINT workspace_secrets_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    key                TEXT NOT NULL,
    encrypted_value    BYTEA NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0
                       CONSTRAINT workspace_secrets_encryption_version_check CHECK (encryption_version IN (0, 1, 2)),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    CONSTRAINT workspace_secrets_workspace_key_uniq UNIQUE (workspace_id, key)
);
INSERT INTO workspace_secrets (id, workspace_id, key, encrypted_value, encryption_version, created_at, updated_at)
    SELECT id, workspace_id, key, encrypted_value, encryption_version, created_at, updated_at
    FROM workspace_secrets_0008;
DROP TABLE workspace_secrets_0008;

CREATE TEMPORARY TABLE global_secrets_0008 AS
    SELECT key, encrypted_value, encryption_version, created_at, updated_at
    FROM global_secrets;
DROP TABLE global_secrets;
CREATE TABLE global_secrets (
    key                TEXT NOT NULL CONSTRAINT global_secrets_pkey PRIMARY KEY,
    encrypted_value    BYTEA NOT NULL,
    encryption_version INTEGER NOT NULL DEFAULT 0
                       CONSTRAINT global_secrets_encryption_version_check CHECK (encryption_version IN (0, 1, 2)),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
INSERT INTO global_secrets (key, encrypted_value, encryption_version, created_at, updated_at)
    SELECT key, encrypted_value, encryption_version, created_at, updated_at
    FROM global_secrets_0008;
DROP TABLE global_secrets_0008;
