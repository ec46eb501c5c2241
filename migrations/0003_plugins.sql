-- Plugins installed into workspaces: where each came from, the ref it tracks and the revision
-- installed (drift detection compares that to the upstream), and per-org allow-lists.

CREATE TABLE workspace_plugins (
    workspace_id  UUID NOT NULL
                  CONSTRAINT workspace_plugins_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    plugin_name   TEXT NOT NULL,
    source_raw    TEXT NOT NULL,
    tracked_ref   TEXT NOT NULL DEFAULT 'none',
    installed_sha TEXT,
    installed_at  TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT workspace_plugins_pkey PRIMARY KEY (workspace_id, plugin_name)
);

CREATE TABLE org_plugin_allowlist (
    org_id      UUID NOT NULL
                CONSTRAINT org_plugin_allowlist_org_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    plugin_name TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    CONSTRAINT org_plugin_allowlist_pkey PRIMARY KEY (org_id, plugin_name)
);
