-- The life of a trial: each participant's time in the study, their withdrawal and erasure, a
-- history of those changes, and for each decision the policy that gave its probability and
-- whether the participant was in the study at its time.
--
-- The new columns come last (ADD COLUMN appends), in the order migrations/sqlite has them, and
-- the new tables hold the same columns in the same order there, so backups move between the
-- adapters. Rows stored before this migration keep what they were: every participant was
-- registered with an open window and never withdrew, every decision was drawn by the algorithm
-- with the participant in the study, and every update learned from the algorithm's decisions.
-- Adding a column with a constant default rewrites no rows.

-- A participant's window: from study_start (inclusive) to study_end (exclusive), each an
-- instant and the text the study server sent for it, or open when NULL. withdrawn_at and
-- withdrawal_reason record a withdrawal; erased_at an erasure, after which the row keeps only
-- its id, the pseudonym that replaced the participant's id, and these two times.
ALTER TABLE users
    ADD COLUMN study_start       TIMESTAMPTZ,
    ADD COLUMN study_start_sent  TEXT,
    ADD COLUMN study_end         TIMESTAMPTZ,
    ADD COLUMN study_end_sent    TEXT,
    ADD COLUMN withdrawn_at      TIMESTAMPTZ,
    ADD COLUMN withdrawal_reason TEXT,
    ADD COLUMN erased_at         TIMESTAMPTZ,
    ADD CONSTRAINT users_study_start_sent
        CHECK ((study_start IS NULL) = (study_start_sent IS NULL)),
    ADD CONSTRAINT users_study_end_sent
        CHECK ((study_end IS NULL) = (study_end_sent IS NULL)),
    ADD CONSTRAINT users_study_window CHECK (study_end > study_start),
    ADD CONSTRAINT users_reason_when_withdrawn
        CHECK (withdrawal_reason IS NULL OR withdrawn_at IS NOT NULL);

-- The policy that gave a decision its probability. A fallback decision records the failure
-- that made the algorithm's probability unusable, a host decision who made it; no other
-- decision has either. A decision taken while the participant was out of the study
-- (in_study false) has no draw and the service's reason ('not_in_study' or 'withdrawn'), which
-- an erasure keeps, since it is not the client's.
ALTER TABLE actions
    ADD COLUMN policy TEXT NOT NULL DEFAULT 'algorithm'
        CONSTRAINT actions_policy_check
            CHECK (policy IN ('algorithm', 'warmup', 'fallback', 'host')),
    ADD COLUMN fallback_reason TEXT,
    ADD COLUMN decided_by      TEXT,
    ADD COLUMN in_study        BOOLEAN NOT NULL DEFAULT true,
    ADD CONSTRAINT actions_fallback_reason_when_fallback
        CHECK ((fallback_reason IS NOT NULL) = (policy = 'fallback')),
    ADD CONSTRAINT actions_decided_by_when_host
        CHECK ((decided_by IS NOT NULL) = (policy = 'host')),
    ADD CONSTRAINT actions_out_of_study_not_drawn
        CHECK (in_study OR (NOT available AND unavailable_reason IN ('not_in_study', 'withdrawn')));

-- The policy of the decision logged for the upload when it was stored (NULL when none was),
-- which decides whether updates learn from it; 'host' once a host decision is recorded for the
-- upload's key afterwards. Uploads stored before this migration whose decision was logged get
-- that decision's policy, 'algorithm'.
ALTER TABLE study_data
    ADD COLUMN policy TEXT
        CONSTRAINT study_data_policy_check
            CHECK (policy IN ('algorithm', 'warmup', 'fallback', 'host'));
UPDATE study_data SET policy = 'algorithm' WHERE action_logged;

-- The policies whose decisions the update learned from, comma-separated in the order the
-- service writes them ('algorithm' always first).
ALTER TABLE update_provenance
    ADD COLUMN included_policies TEXT NOT NULL DEFAULT 'algorithm'
        CONSTRAINT update_provenance_included_policies_check
            CHECK (included_policies ~ '^algorithm(,warmup)?(,fallback)?(,host)?$');

-- Erasing a participant replaces their id by a pseudonym in the rows kept, their users row and
-- their decisions, and keeps users.id (which finds their rows in earlier backups): the
-- decisions follow the rename of their participant. Re-created under their old names, which
-- the store maps to "unknown user".
ALTER TABLE actions
    DROP CONSTRAINT actions_user_id_fkey,
    ADD CONSTRAINT actions_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES users (user_id) ON UPDATE CASCADE;
ALTER TABLE study_data
    DROP CONSTRAINT study_data_user_id_fkey,
    ADD CONSTRAINT study_data_user_id_fkey
        FOREIGN KEY (user_id) REFERENCES users (user_id) ON UPDATE CASCADE;

-- A participant's history: their enrollment, each change of their window and their
-- withdrawal, each with the window in force after it and, for a withdrawal, its reason.
-- Participants registered before this migration have no history.
CREATE TABLE participant_events (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          TEXT        NOT NULL REFERENCES users (user_id) ON UPDATE CASCADE,
    kind             TEXT        NOT NULL
        CHECK (kind IN ('enrolled', 'enrollment_changed', 'withdrawn')),
    recorded_at      TIMESTAMPTZ NOT NULL,
    study_start      TIMESTAMPTZ,
    study_start_sent TEXT,
    study_end        TIMESTAMPTZ,
    study_end_sent   TEXT,
    reason           TEXT,
    CONSTRAINT participant_events_study_start_sent
        CHECK ((study_start IS NULL) = (study_start_sent IS NULL)),
    CONSTRAINT participant_events_study_end_sent
        CHECK ((study_end IS NULL) = (study_end_sent IS NULL)),
    CONSTRAINT participant_events_reason_when_withdrawn
        CHECK (reason IS NULL OR kind = 'withdrawn')
);
CREATE INDEX participant_events_user_id_idx ON participant_events (user_id);

-- The audit record of each erasure. It holds no participant id: participant_number is the
-- erased users row's id, pseudonym the id that replaced theirs, row_counts a JSON array of
-- [table, rows] pairs (rows deleted or emptied), backup_file the backup taken just before.
CREATE TABLE erasures (
    id                 UUID        PRIMARY KEY,
    erased_at          TIMESTAMPTZ NOT NULL,
    participant_number BIGINT      NOT NULL,
    pseudonym          TEXT        NOT NULL UNIQUE,
    row_counts         JSON        NOT NULL,
    backup_file        TEXT        NOT NULL
);

-- For recording an upload: as before, and with the logged decision's policy, which the upload
-- keeps (see 2025-04-03 for the lock and the snapshot). The result changes type, hence a new
-- function under the old name.
DROP FUNCTION justin_decision_key_logged(TEXT, TEXT, BIGINT);
CREATE FUNCTION justin_decision_key_logged(p_user_id TEXT, p_decision_type TEXT,
                                           p_decision_idx BIGINT)
RETURNS TABLE (id BIGINT, action SMALLINT, action_prob DOUBLE PRECISION, available BOOLEAN,
               policy TEXT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM justin_lock_decision_key(p_user_id, p_decision_type, p_decision_idx);
    RETURN QUERY
        SELECT a.id, a.action, a.action_prob, a.available, a.policy FROM actions a
        WHERE a.user_id = p_user_id AND a.decision_type = p_decision_type
          AND a.decision_idx = p_decision_idx;
END
$$;

-- The guarded decision counts a participant's earlier decisions of a type (the warm-up's
-- first decisions) through the key's unique index; the cohort count reads every participant's
-- start, which this serves.
CREATE INDEX users_study_start_idx ON users ((coalesce(study_start, created_at)));
