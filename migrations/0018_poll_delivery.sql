-- Poll-mode delivery, for external agents that cannot be reached (behind NAT, no public URL):
-- the agent says `delivery_mode: poll` when it registers; A2A messages for it wait in its
-- `a2a_queue` rows (its inbox) until it fetches and acknowledges them, and chat attachments for
-- it wait here, in the database, until it downloads and acknowledges them. The sweeper deletes
-- acknowledged files an hour after the ack, and unacknowledged ones once `expires_at` passes.
ALTER TABLE workspaces ADD COLUMN delivery_mode TEXT NOT NULL DEFAULT 'push'
    CONSTRAINT workspaces_delivery_mode_check CHECK (delivery_mode IN ('push', 'poll'));

CREATE TABLE pending_uploads (
    file_id      UUID NOT NULL CONSTRAINT pending_uploads_pkey PRIMARY KEY,
    workspace_id UUID NOT NULL
                 CONSTRAINT pending_uploads_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    content      BYTEA NOT NULL,
    size_bytes   BIGINT NOT NULL
                 CONSTRAINT pending_uploads_size_check CHECK (size_bytes BETWEEN 0 AND 26214400),
    filename     TEXT NOT NULL
                 CONSTRAINT pending_uploads_filename_check CHECK (length(filename) BETWEEN 1 AND 100),
    mimetype     TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    fetched_at   TIMESTAMPTZ,
    acked_at     TIMESTAMPTZ,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX pending_uploads_unacked_idx ON pending_uploads (workspace_id, created_at) WHERE acked_at IS NULL;
CREATE INDEX pending_uploads_expiry_idx ON pending_uploads (expires_at) WHERE acked_at IS NULL;
CREATE INDEX pending_uploads_acked_idx ON pending_uploads (acked_at) WHERE acked_at IS NOT NULL;
