-- Hibernation: a workspace whose agent has been idle for this many minutes is stopped until a
-- message or a schedule wakes it (NULL or 0: never).
ALTER TABLE workspaces ADD COLUMN hibernation_idle_minutes INTEGER;

-- The hibernation monitor reads each candidate's newest activity row; this makes that one
-- index probe instead of a scan of the workspace's history.
CREATE INDEX activity_logs_workspace_created_idx ON activity_logs (workspace_id, created_at);
