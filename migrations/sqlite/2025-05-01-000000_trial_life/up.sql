-- The life of a trial: each participant's time in the study, their withdrawal and erasure,
-- which policy gave each decision its probability (the algorithm, a warm-up, a fallback, or
-- the study server itself), whether the participant was in the study at the decision's time,
-- which kinds of decision each update learned from, a participant's history, and the audit
-- record of erasures.
--
-- The new columns are appended, in the order migrations/postgres appends them, and the two
-- new tables have its columns in its order, so backups move between the adapters. Adding a
-- column needs no table rebuild here: every new column is nullable or has a default, and a
-- CHECK on an added column may name the columns before it (SQLite checks the existing rows
-- when the column is added). Rows stored before this migration keep what they were: every
-- decision stored so far was drawn by the algorithm for a participant in the study, and every
-- update so far learned from the algorithm's decisions only.
--
-- Times are TEXT in this adapter's fixed-width RFC 3339 form (see the first migration), so
-- comparing them as text compares them as times, which the window checks below rely on.

-- A participant's time in the study: from study_start (inclusive) to study_end (exclusive), a
-- missing bound being open, each with the text the study server sent it as. A withdrawal keeps
-- its time and reason; an erasure keeps only its time (and the withdrawal's time), since the
-- row then holds a pseudonym instead of the participant's id.
ALTER TABLE users ADD COLUMN study_start TEXT;
ALTER TABLE users ADD COLUMN study_start_sent TEXT
    CONSTRAINT users_study_start_sent_check
        CHECK ((study_start IS NULL) = (study_start_sent IS NULL));
ALTER TABLE users ADD COLUMN study_end TEXT;
ALTER TABLE users ADD COLUMN study_end_sent TEXT
    CONSTRAINT users_study_end_sent_check
        CHECK ((study_end IS NULL) = (study_end_sent IS NULL)
               AND (study_start IS NULL OR study_end IS NULL OR study_end > study_start));
ALTER TABLE users ADD COLUMN withdrawn_at TEXT;
ALTER TABLE users ADD COLUMN withdrawal_reason TEXT
    CONSTRAINT users_withdrawal_reason_check
        CHECK (withdrawal_reason IS NULL OR withdrawn_at IS NOT NULL);
ALTER TABLE users ADD COLUMN erased_at TEXT;

-- Which policy gave the decision its probability, with the algorithm's failure for a fallback
-- decision and who decided for a decision the study server made itself. in_study is false for
-- a decision stored without a draw because the participant was outside their window or had
-- withdrawn; its unavailable_reason is then the service's word (not_in_study, withdrawn), not
-- the client's, which an erasure keeps.
ALTER TABLE actions ADD COLUMN policy TEXT NOT NULL DEFAULT 'algorithm'
    CONSTRAINT actions_policy_check
        CHECK (policy IN ('algorithm', 'warmup', 'fallback', 'host'));
ALTER TABLE actions ADD COLUMN fallback_reason TEXT
    CONSTRAINT actions_fallback_reason_check
        CHECK ((fallback_reason IS NOT NULL) = (policy = 'fallback'));
ALTER TABLE actions ADD COLUMN decided_by TEXT
    CONSTRAINT actions_decided_by_check
        CHECK ((decided_by IS NOT NULL) = (policy = 'host'));
ALTER TABLE actions ADD COLUMN in_study INTEGER NOT NULL DEFAULT 1
    CONSTRAINT actions_in_study_check
        CHECK (in_study IN (0, 1)
               AND (in_study
                    OR (NOT available AND unavailable_reason IN ('not_in_study', 'withdrawn'))));

-- The policy of the decision logged for the upload's key when the upload was stored (or
-- 'host' once the study server sends its own decision for an upload stored without one), so
-- that an update leaves out the kinds of decision it is not configured to learn from without
-- a join; NULL when no decision is logged. Uploads stored before this migration that matched a
-- logged decision matched one the algorithm drew.
ALTER TABLE study_data ADD COLUMN policy TEXT
    CONSTRAINT study_data_policy_check
        CHECK (policy IS NULL OR policy IN ('algorithm', 'warmup', 'fallback', 'host'));
UPDATE study_data SET policy = 'algorithm' WHERE action_logged;

-- The policies an update learned from, comma-separated in the order the service writes them
-- ('algorithm' always first): the export shows an upload as used by the first update that read
-- it and learned from its kind of decision.
ALTER TABLE update_provenance ADD COLUMN included_policies TEXT NOT NULL DEFAULT 'algorithm'
    CONSTRAINT update_provenance_included_policies_check
        CHECK (included_policies IN ('algorithm', 'algorithm,warmup', 'algorithm,fallback',
                                     'algorithm,host', 'algorithm,warmup,fallback',
                                     'algorithm,warmup,host', 'algorithm,fallback,host',
                                     'algorithm,warmup,fallback,host'));

-- A participant's history: their enrollment, every change of their window (with the window
-- after the change) and their withdrawal (with its reason). Deleted when the participant is
-- erased.
CREATE TABLE participant_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          TEXT    NOT NULL REFERENCES users (user_id),
    kind             TEXT    NOT NULL
        CONSTRAINT participant_events_kind_check
            CHECK (kind IN ('enrolled', 'enrollment_changed', 'withdrawn')),
    recorded_at      TEXT    NOT NULL,
    study_start      TEXT,
    study_start_sent TEXT,
    study_end        TEXT,
    study_end_sent   TEXT,
    reason           TEXT,
    CONSTRAINT participant_events_study_start_sent
        CHECK ((study_start IS NULL) = (study_start_sent IS NULL)),
    CONSTRAINT participant_events_study_end_sent
        CHECK ((study_end IS NULL) = (study_end_sent IS NULL)),
    CONSTRAINT participant_events_reason_when_withdrawn
        CHECK (reason IS NULL OR kind = 'withdrawn')
);
-- Serves the foreign key and the erasure's delete of a participant's history.
CREATE INDEX participant_events_user_idx ON participant_events (user_id);

-- The audit record of each erasure. It names no participant: participant_number is the id of
-- the participant's users row (which finds their rows in backups taken before the erasure),
-- pseudonym the id their decisions are kept under, row_counts a JSON array of [table, rows]
-- pairs, backup_file the backup taken just before.
CREATE TABLE erasures (
    id                 TEXT    PRIMARY KEY NOT NULL,
    erased_at          TEXT    NOT NULL,
    participant_number INTEGER NOT NULL,
    pseudonym          TEXT    NOT NULL UNIQUE,
    row_counts         TEXT    NOT NULL CHECK (json_valid(row_counts)),
    backup_file        TEXT    NOT NULL
);

-- The warm-up's cohort count: participants whose time in the study had started at a given
-- time (their start, or their registration when they have none), counted up to a limit.
CREATE INDEX users_started_idx ON users (coalesce(study_start, created_at));

-- The export's lookup of the first update that used an upload also reads which policies the
-- update learned from and its request (to compare with a withdrawal); the index holds both, so
-- the lookup still reads the index alone.
DROP INDEX update_provenance_last_study_data_idx;
CREATE INDEX update_provenance_last_study_data_idx
    ON update_provenance (last_study_data_id, parameter_version, included_policies, update_id);
