-- Events read by type: the org import sweep looks for `org.import.started` events without an
-- end (every queue-expiry pass on PostgreSQL, every start on SQLite), and `latest_of_type`
-- lists recent events of one type. Without this index both scan every event ever recorded.
CREATE INDEX structure_events_type_idx ON structure_events (event_type, created_at);
