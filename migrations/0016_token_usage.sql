-- Token usage and spend. The A2A proxy reads `usage {input_tokens, output_tokens}` from agents'
-- answers and adds it here, per workspace and calendar month (UTC, `YYYY-MM`), with its cost in
-- micro-cents (tokens × the price in cents per million tokens: exact in integers).
CREATE TABLE workspace_token_usage (
    workspace_id    UUID NOT NULL
                    CONSTRAINT workspace_token_usage_workspace_fkey REFERENCES workspaces (id) ON DELETE CASCADE,
    period          TEXT NOT NULL,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0,
    call_count      BIGINT NOT NULL DEFAULT 0,
    cost_microcents BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT workspace_token_usage_pkey PRIMARY KEY (workspace_id, period)
);

-- The month `monthly_spend` counts (`YYYY-MM`; NULL: never spent). A spend of an earlier month
-- counts as zero, so the budget check and `GET /budget` roll over with the calendar and the
-- first spend of a new month starts the count again.
ALTER TABLE workspaces ADD COLUMN spend_period TEXT;
