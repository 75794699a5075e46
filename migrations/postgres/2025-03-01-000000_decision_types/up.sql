-- Decision types and availability: a decision's key becomes (user_id, decision_type,
-- decision_idx), an unavailable decision is stored without a draw and with the study server's
-- reason, and each upload records the first update that used it.
--
-- The new columns come last (ADD COLUMN appends), in the order migrations/sqlite has them, so
-- backups move between the adapters. Existing rows get decision_type 'default' and
-- available = true, which is what they were: every decision stored before this migration was
-- of the one type and randomized. Adding a column with a constant default rewrites no rows.

ALTER TABLE actions
    ADD COLUMN decision_type TEXT NOT NULL DEFAULT 'default'
        -- 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-', as the service accepts them.
        CONSTRAINT actions_decision_type_check CHECK (decision_type ~ '^[A-Za-z0-9_.-]{1,64}$'),
    ADD COLUMN available BOOLEAN NOT NULL DEFAULT true,
    ADD COLUMN unavailable_reason TEXT,
    -- An unavailable decision gets no draw, and only it has a reason.
    ADD CONSTRAINT actions_unavailable_not_drawn
        CHECK (available OR (action = 0 AND action_prob = 0)),
    ADD CONSTRAINT actions_reason_when_unavailable
        CHECK (unavailable_reason IS NULL OR NOT available),
    -- The key of a decision, under the name the old key had.
    DROP CONSTRAINT actions_user_decision_key,
    ADD CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_type, decision_idx);

ALTER TABLE study_data
    ADD COLUMN decision_type TEXT NOT NULL DEFAULT 'default'
        CONSTRAINT study_data_decision_type_check
            CHECK (decision_type ~ '^[A-Za-z0-9_.-]{1,64}$'),
    -- The logged decision's availability (true when none was logged); false keeps the row out
    -- of every update.
    ADD COLUMN available BOOLEAN NOT NULL DEFAULT true,
    -- The parameter version of the first completed update that read the row.
    ADD COLUMN used_in_version BIGINT REFERENCES model_parameters (version),
    DROP CONSTRAINT study_data_user_decision_key,
    ADD CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_type, decision_idx);

-- No index serves the mark an update sets on used_in_version: an update streams every available
-- row anyway, and the mark's scan of study_data costs a small part of that (about 0.25 s per
-- million rows, measured), while a partial index on unmarked rows would add an index write to
-- every upload for it.

-- Which update first used an upload was not recorded before this migration. It is
-- approximated as the earliest completed update that started (its started_at, or its
-- created_at when that is not known) after the upload was stored: updates read everything
-- stored when they start. It can be wrong for an upload stored while an update ran, and for
-- uploads older than a restore or reset that rewrote the history of updates. The same rule as
-- migrations/sqlite, so both adapters derive the same values from the same history.
UPDATE study_data s
SET used_in_version = (
    SELECT r.parameter_version
    FROM model_update_requests r
    WHERE r.status = 'completed' AND r.parameter_version IS NOT NULL
      AND coalesce(r.started_at, r.created_at) > s.created_at
    ORDER BY coalesce(r.started_at, r.created_at), r.parameter_version
    LIMIT 1)
WHERE EXISTS (
    SELECT 1 FROM model_update_requests r
    WHERE r.status = 'completed' AND r.parameter_version IS NOT NULL
      AND coalesce(r.started_at, r.created_at) > s.created_at);
