-- Facts about this installation that are decided once and never re-derived from row counts.
-- `install_locked`: the install has issued a credential (or was started with an admin token),
-- so the fresh-install open mode is over for good, whatever is deleted later.
CREATE TABLE host_settings (
    key        TEXT NOT NULL CONSTRAINT host_settings_pkey PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Tokens minted through the API expire; the ones the host writes for its agents are rotated
-- at every provision instead (NULL: no expiry).
ALTER TABLE workspace_auth_tokens ADD COLUMN expires_at TIMESTAMPTZ;
