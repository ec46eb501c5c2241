-- The audit ledger: security-relevant actions (tokens minted and revoked, secrets set and
-- deleted, plugins installed, extensions swapped, GLOBAL memories written, approvals decided,
-- a workspace moved in the hierarchy) appended as an HMAC chain. Each row's `hmac` covers its
-- own fields and the previous row's `hmac` (`prev_hmac`, empty for the first row), under a key
-- the database does not hold, so an edited, inserted or deleted row breaks the chain at that
-- point (`GET /admin/audit/verify`). `seq` numbers the chain without gaps.
--
-- No foreign key: removing or purging a workspace keeps what was done to it (a ledger that lost
-- rows would no longer verify). `detail` is the JSON text exactly as it was sealed (TEXT, not
-- JSONB, which would reorder it).
CREATE TABLE audit_events (
    seq          BIGINT NOT NULL CONSTRAINT audit_events_pkey PRIMARY KEY,
    id           UUID NOT NULL CONSTRAINT audit_events_id_uniq UNIQUE,
    event_type   TEXT NOT NULL,
    actor        TEXT NOT NULL,
    workspace_id UUID,
    target       TEXT,
    detail       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    prev_hmac    TEXT NOT NULL,
    hmac         TEXT NOT NULL
);
CREATE INDEX audit_events_workspace_idx ON audit_events (workspace_id, seq);
