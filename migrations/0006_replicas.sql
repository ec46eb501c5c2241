-- Scale-out: what several host replicas on one database share instead of keeping in memory.

-- A workspace's restart in progress: the replica running its cycles, whether one more cycle is
-- due after the current one, and until when the claim holds (a replica that dies mid-cycle loses
-- it then, and the next request starts afresh).
CREATE TABLE workspace_restarts (
    workspace_id UUID NOT NULL CONSTRAINT workspace_restarts_pkey PRIMARY KEY
                 CONSTRAINT workspace_restarts_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    holder       TEXT NOT NULL,
    pending      BOOLEAN NOT NULL,
    lease_until  TIMESTAMPTZ NOT NULL
);

-- Extension components by digest, so every replica can load a version any replica stored (the
-- files under data/extensions are a cache of these rows).
CREATE TABLE extension_blobs (
    digest     TEXT NOT NULL CONSTRAINT extension_blobs_pkey PRIMARY KEY,
    bytes      BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

