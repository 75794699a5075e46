-- Back to one decision per (user_id, decision_idx). The old schema can hold neither a decision
-- type nor an unavailable decision: reverting would merge the types' indexes into one key
-- (colliding where they overlap) and turn unavailable decisions into draws that replay cannot
-- reproduce. So the revert refuses while such rows exist, naming them; delete or export them
-- first if the revert is really wanted. What study data each update could read is dropped.
CREATE TEMP TABLE revert_guard (problem TEXT);
CREATE TEMP TRIGGER revert_guard_refuses BEFORE INSERT ON revert_guard
BEGIN
    SELECT RAISE(ABORT, 'cannot revert migration 2025-03-01 (decision types): decisions or study data of a type other than ''default'', or unavailable decisions, are stored, and the previous schema cannot hold them');
END;
INSERT INTO revert_guard
SELECT 'typed or unavailable rows'
WHERE EXISTS (SELECT 1 FROM actions WHERE decision_type <> 'default' OR NOT available)
   OR EXISTS (SELECT 1 FROM study_data WHERE decision_type <> 'default' OR NOT available);
DROP TABLE revert_guard;

CREATE TABLE actions_old (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT    NOT NULL REFERENCES users (user_id),
    decision_idx      INTEGER NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    context           TEXT    NOT NULL CHECK (json_valid(context)),
    state             TEXT    NOT NULL CHECK (json_valid(state)),
    action            INTEGER NOT NULL CHECK (action IN (0, 1)),
    action_prob       REAL    NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    parameter_version INTEGER NOT NULL REFERENCES model_parameters (version),
    rng_seed          INTEGER NOT NULL,
    CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_idx)
);
INSERT INTO actions_old
SELECT id, user_id, decision_idx, request_timestamp, created_at, context, state, action,
       action_prob, parameter_version, rng_seed
FROM actions;

CREATE TABLE study_data_old (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id           TEXT    NOT NULL REFERENCES users (user_id),
    decision_idx      INTEGER NOT NULL CHECK (decision_idx >= 0),
    request_timestamp TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    context           TEXT    NOT NULL CHECK (json_valid(context)),
    action            INTEGER NOT NULL CHECK (action IN (0, 1)),
    action_prob       REAL    NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    state             TEXT    NOT NULL CHECK (json_valid(state)),
    outcome           TEXT    NOT NULL CHECK (json_valid(outcome)),
    reward            REAL    NOT NULL,
    action_logged     INTEGER NOT NULL CHECK (action_logged IN (0, 1)),
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_idx)
);
INSERT INTO study_data_old
SELECT id, user_id, decision_idx, request_timestamp, created_at, context, action, action_prob,
       state, outcome, reward, action_logged
FROM study_data;

-- Keep the AUTOINCREMENT counters, as up.sql does.
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT o.seq FROM sqlite_sequence o WHERE o.name = 'actions'), 0))
WHERE name = 'actions_old';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'actions_old', seq FROM sqlite_sequence
WHERE name = 'actions' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'actions_old');
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT o.seq FROM sqlite_sequence o WHERE o.name = 'study_data'), 0))
WHERE name = 'study_data_old';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'study_data_old', seq FROM sqlite_sequence
WHERE name = 'study_data'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'study_data_old');

DROP TABLE actions;
ALTER TABLE actions_old RENAME TO actions;
DROP TABLE study_data;
ALTER TABLE study_data_old RENAME TO study_data;

CREATE INDEX actions_parameter_version_idx ON actions (parameter_version);

DROP INDEX update_provenance_last_study_data_idx;
ALTER TABLE update_provenance DROP COLUMN last_study_data_id;
