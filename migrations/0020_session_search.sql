-- Session search (`GET /workspaces/{id}/session-search`): a word index over what each activity
-- row says. The host computes `search_text` when it writes a row (its summary, its error and
-- the string values of its request and response bodies, at most 4 KiB; see
-- `store::activity::search_text`), so the index never reads a whole body and the writer's cost
-- per row stays bounded. A status update that brings an error or a response appends its text.
--
-- PostgreSQL keeps a GIN index on the `tsvector` of that text (an expression index; searches
-- use the same expression). SQLite keeps a contentless FTS5 index (the text is stored once, in the row) keyed by
-- `activity_search_keys.seq`: `activity_logs` has a UUID primary key, and its implicit rowid may
-- be renumbered by a VACUUM, so it cannot be the index's key. Triggers keep the index in step
-- with every insert, update of the text and delete (a workspace's purge cascades here too), and
-- a search joins back to `activity_logs` by id and workspace, so nothing deleted can come back.
-- Each index entry also holds its workspace's id as a word (`ws`), so a search reads only the
-- entries of the workspace it searches.
--
-- Rows written before this migration are indexed here, from an SQL reading of the same fields
-- (the string values of object members whose key is not structural, and of arrays).

ALTER TABLE activity_logs ADD COLUMN search_text TEXT;

-- @postgres-only
UPDATE activity_logs SET search_text = NULLIF(LEFT(CONCAT_WS(' ',
        summary,
        error_detail,
        (SELECT string_agg(s, ' ') FROM (
            SELECT kv ->> 'value' AS s
            FROM jsonb_path_query(request_body,
                'strict $.** ? (@.type() == "object").keyvalue() ? (@.value.type() == "string")') AS kv
            WHERE kv ->> 'key' NOT IN ('jsonrpc', 'id', 'method', 'kind', 'type', 'role', 'messageId',
                                       'contextId', 'taskId', 'mimeType', 'bytes')
            UNION ALL
            SELECT v #>> '{}' FROM jsonb_path_query(request_body,
                'strict $.** ? (@.type() == "array")[*] ? (@.type() == "string")') AS v
        ) AS strings),
        (SELECT string_agg(s, ' ') FROM (
            SELECT kv ->> 'value' AS s
            FROM jsonb_path_query(response_body,
                'strict $.** ? (@.type() == "object").keyvalue() ? (@.value.type() == "string")') AS kv
            WHERE kv ->> 'key' NOT IN ('jsonrpc', 'id', 'method', 'kind', 'type', 'role', 'messageId',
                                       'contextId', 'taskId', 'mimeType', 'bytes')
            UNION ALL
            SELECT v #>> '{}' FROM jsonb_path_query(response_body,
                'strict $.** ? (@.type() == "array")[*] ? (@.type() == "string")') AS v
        ) AS strings)
    ), 4096), '');
-- An index on the expression, not a stored generated column: PostgreSQL recomputes a stored
-- column on every UPDATE of the row, and a delegation updates its row several times.
CREATE INDEX activity_logs_search_idx ON activity_logs
    USING GIN (to_tsvector('english', COALESCE(search_text, '')));
-- @end

-- @sqlite-only
CREATE TABLE activity_search_keys (
    seq         INTEGER PRIMARY KEY,
    activity_id UUID NOT NULL CONSTRAINT activity_search_keys_activity_uniq UNIQUE
);
CREATE VIRTUAL TABLE activity_search_fts USING fts5(ws, body, content='', contentless_delete=1);
CREATE TRIGGER activity_search_insert AFTER INSERT ON activity_logs
WHEN new.search_text IS NOT NULL BEGIN
    INSERT INTO activity_search_keys (activity_id) VALUES (new.id);
    INSERT INTO activity_search_fts (rowid, ws, body)
        VALUES (last_insert_rowid(), hex(new.workspace_id), new.search_text);
END;
CREATE TRIGGER activity_search_update AFTER UPDATE OF search_text ON activity_logs BEGIN
    DELETE FROM activity_search_fts
        WHERE rowid = (SELECT seq FROM activity_search_keys WHERE activity_id = old.id);
    INSERT OR IGNORE INTO activity_search_keys (activity_id) VALUES (new.id);
    INSERT INTO activity_search_fts (rowid, ws, body)
        SELECT seq, hex(new.workspace_id), new.search_text FROM activity_search_keys
        WHERE activity_id = new.id AND new.search_text IS NOT NULL;
END;
CREATE TRIGGER activity_search_delete AFTER DELETE ON activity_logs BEGIN
    DELETE FROM activity_search_fts
        WHERE rowid = (SELECT seq FROM activity_search_keys WHERE activity_id = old.id);
    DELETE FROM activity_search_keys WHERE activity_id = old.id;
END;
UPDATE activity_logs SET search_text = NULLIF(substr(trim(
        COALESCE(summary, '') || ' ' || COALESCE(error_detail, '') || ' ' ||
        COALESCE((SELECT group_concat(value, ' ') FROM json_tree(CASE WHEN json_valid(activity_logs.request_body)
                                                     THEN activity_logs.request_body END)
                  WHERE type = 'text'
                    AND (typeof(key) <> 'text' OR key NOT IN ('jsonrpc', 'id', 'method', 'kind',
                        'type', 'role', 'messageId', 'contextId', 'taskId', 'mimeType', 'bytes'))), '')
        || ' ' ||
        COALESCE((SELECT group_concat(value, ' ') FROM json_tree(CASE WHEN json_valid(activity_logs.response_body)
                                                     THEN activity_logs.response_body END)
                  WHERE type = 'text'
                    AND (typeof(key) <> 'text' OR key NOT IN ('jsonrpc', 'id', 'method', 'kind',
                        'type', 'role', 'messageId', 'contextId', 'taskId', 'mimeType', 'bytes'))), '')
    ), 1, 4096), '');
-- @end
