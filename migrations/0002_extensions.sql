-- The extension platform: uploaded components (bytes live on disk by digest), which version is
-- active or shadowed in each slot, the activation history rollback walks back through, and the
-- results of shadow runs.

CREATE TABLE extensions (
    id         UUID NOT NULL CONSTRAINT extensions_pkey PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    slot       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    manifest   JSONB NOT NULL,
    builtin    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT extensions_slot_digest_uniq UNIQUE (slot, digest)
);

CREATE TABLE extension_slots (
    slot       TEXT NOT NULL CONSTRAINT extension_slots_pkey PRIMARY KEY,
    active_id  UUID CONSTRAINT extension_slots_active_fkey REFERENCES extensions (id),
    shadow_id  UUID CONSTRAINT extension_slots_shadow_fkey REFERENCES extensions (id),
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE extension_activations (
    id           UUID NOT NULL CONSTRAINT extension_activations_pkey PRIMARY KEY,
    slot         TEXT NOT NULL,
    extension_id UUID NOT NULL
                 CONSTRAINT extension_activations_extension_fkey REFERENCES extensions (id) ON DELETE CASCADE,
    action       TEXT NOT NULL
                 CONSTRAINT extension_activations_action_check CHECK (action IN ('activated', 'rolled_back')),
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX extension_activations_slot_idx ON extension_activations (slot, created_at);

CREATE TABLE extension_shadow_results (
    id               UUID NOT NULL CONSTRAINT extension_shadow_results_pkey PRIMARY KEY,
    slot             TEXT NOT NULL,
    active_id        UUID NOT NULL,
    candidate_id     UUID NOT NULL
                     CONSTRAINT extension_shadow_results_candidate_fkey REFERENCES extensions (id) ON DELETE CASCADE,
    outcome          TEXT NOT NULL
                     CONSTRAINT extension_shadow_results_outcome_check CHECK (outcome IN ('agree', 'disagree', 'candidate_failed')),
    input            JSONB,
    active_answer    JSONB,
    candidate_answer JSONB,
    active_us        BIGINT NOT NULL,
    candidate_us     BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX extension_shadow_results_slot_idx ON extension_shadow_results (slot, candidate_id, created_at);
