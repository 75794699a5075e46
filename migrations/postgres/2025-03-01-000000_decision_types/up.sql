-- Decision types and availability: a decision's key becomes (user_id, decision_type,
-- decision_idx), an unavailable decision is stored without a draw and with the study server's
-- reason, and each completed update records the last upload it could read, which tells the
-- first update that used each upload.
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
    DROP CONSTRAINT study_data_user_decision_key,
    ADD CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_type, decision_idx);

-- The largest study_data id the update's job could read: it read every available upload up to
-- it and none after it. The first update that used an available upload is the one with the
-- smallest watermark at or above the upload's id (the export works it out). Uploads are never
-- written again, so recording it costs one value per update instead of a write per upload; the
-- index serves that lookup.
ALTER TABLE update_provenance
    ADD COLUMN last_study_data_id BIGINT
        CONSTRAINT update_provenance_last_study_data_id_check CHECK (last_study_data_id >= 0);

-- Updates that completed before this migration did not record their watermark. It is
-- approximated from the update request's start (its started_at, or its created_at when that is
-- not known), as the largest id of an upload stored before it, or 0 when there is none: updates
-- read everything stored when they start. It can be wrong for an upload stored while an update
-- ran, and for uploads older than a restore or reset that rewrote the history of updates.
-- Updates that completed before migration 2025-02-01 have no provenance row, hence no
-- watermark: an upload only they read counts as first read by the next update that has one. The
-- same rule as migrations/sqlite, so both adapters derive the same values from the same history.
--
-- Computed in one pass over uploads and update starts merged in time order (a start before an
-- upload stored at the same instant), each start taking the largest upload id so far: a
-- separate max(id) per update scans much of study_data for each (measured: 200,000 uploads and
-- 1,000 updates, 12 to 16 s against 0.2 s).
UPDATE update_provenance p
SET last_study_data_id = coalesce(w.last_id, 0)
FROM (
    SELECT e.update_id,
           max(e.id) OVER (ORDER BY e.at, e.is_upload ROWS UNBOUNDED PRECEDING) AS last_id
    FROM (
        SELECT s.created_at AS at, true AS is_upload, s.id, NULL::uuid AS update_id
        FROM study_data s
        UNION ALL
        SELECT coalesce(r.started_at, r.created_at), false, NULL, r.id
        FROM model_update_requests r
        JOIN update_provenance q ON q.update_id = r.id
    ) AS e
) AS w
WHERE w.update_id = p.update_id;

ALTER TABLE update_provenance ALTER COLUMN last_study_data_id SET NOT NULL;

CREATE INDEX update_provenance_last_study_data_idx
    ON update_provenance (last_study_data_id, parameter_version);
