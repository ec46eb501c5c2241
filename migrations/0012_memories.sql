-- Agent memories: what an agent chose to remember, readable by itself (LOCAL), the workspaces it
-- may talk to in its org (TEAM) or its whole org (GLOBAL, written by a root only). Content is
-- redacted of secret-looking values before it is stored; `redactions` counts what was removed.
-- Full-text search differs per engine, so the table is declared once per backend:
-- PostgreSQL keeps a generated `tsvector` with a GIN index; SQLite keeps an FTS5 index of the
-- content (external content, kept in step by triggers, keyed by the `seq` rowid alias so a
-- VACUUM cannot renumber the rows under the index).

-- @postgres-only
CREATE TABLE agent_memories (
    id           UUID NOT NULL CONSTRAINT agent_memories_pkey PRIMARY KEY,
    workspace_id UUID NOT NULL
                 CONSTRAINT agent_memories_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    content      TEXT NOT NULL,
    scope        TEXT NOT NULL
                 CONSTRAINT agent_memories_scope_check CHECK (scope IN ('LOCAL', 'TEAM', 'GLOBAL')),
    namespace    TEXT NOT NULL DEFAULT 'general',
    redactions   INTEGER NOT NULL DEFAULT 0,
    embedding    JSONB,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    content_tsv  tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);
CREATE INDEX agent_memories_content_tsv_idx ON agent_memories USING GIN (content_tsv);
-- @end

-- @sqlite-only
CREATE TABLE agent_memories (
    seq          INTEGER PRIMARY KEY,
    id           UUID NOT NULL CONSTRAINT agent_memories_id_uniq UNIQUE,
    workspace_id UUID NOT NULL
                 CONSTRAINT agent_memories_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    content      TEXT NOT NULL,
    scope        TEXT NOT NULL
                 CONSTRAINT agent_memories_scope_check CHECK (scope IN ('LOCAL', 'TEAM', 'GLOBAL')),
    namespace    TEXT NOT NULL DEFAULT 'general',
    redactions   INTEGER NOT NULL DEFAULT 0,
    embedding    JSONB,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE VIRTUAL TABLE agent_memories_fts USING fts5(content, content='agent_memories', content_rowid='seq');
CREATE TRIGGER agent_memories_fts_insert AFTER INSERT ON agent_memories BEGIN
    INSERT INTO agent_memories_fts (rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER agent_memories_fts_delete AFTER DELETE ON agent_memories BEGIN
    INSERT INTO agent_memories_fts (agent_memories_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER agent_memories_fts_update AFTER UPDATE OF content ON agent_memories BEGIN
    INSERT INTO agent_memories_fts (agent_memories_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO agent_memories_fts (rowid, content) VALUES (new.seq, new.content);
END;
-- @end

-- A workspace's memories by scope and namespace (the listing, and the visibility filter).
CREATE INDEX agent_memories_workspace_idx ON agent_memories (workspace_id, scope, namespace, created_at);
