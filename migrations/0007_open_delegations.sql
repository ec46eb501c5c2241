-- Delegations still open (pending or dispatched), by age: the queue-expiry sweep looks for the
-- ones a host that stopped hard left behind on every pass, and must not scan the whole activity
-- log to find them.
CREATE INDEX activity_logs_open_delegations_idx ON activity_logs (created_at)
    WHERE activity_type = 'delegation' AND status IN ('pending', 'dispatched');
