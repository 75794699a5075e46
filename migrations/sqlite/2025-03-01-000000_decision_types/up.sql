-- Decision types and availability: a decision's key becomes (user_id, decision_type,
-- decision_idx), an unavailable decision is stored without a draw and with the study server's
-- reason, and each completed update records the largest study_data id it could read, which
-- tells for every upload the first update that used it.
--
-- The new columns come last, in the order migrations/postgres adds them, so backups move
-- between the adapters. Changing a UNIQUE constraint, or adding a NOT NULL column without a
-- default, needs the table rebuilt in SQLite (its documented procedure: create the new table,
-- copy, drop the old one, rename, recreate the indexes). The procedure's foreign-key steps are
-- not needed here: nothing references actions, study_data or update_provenance, so dropping
-- and renaming them touches no other table's keys, and the copied rows are checked against
-- their own references as they are inserted (migrations run with foreign keys on, which a
-- transaction cannot turn off anyway). There are no triggers or views to recreate.

CREATE TABLE actions_new (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id            TEXT    NOT NULL REFERENCES users (user_id),
    decision_idx       INTEGER NOT NULL CHECK (decision_idx >= 0),
    request_timestamp  TEXT    NOT NULL,
    created_at         TEXT    NOT NULL,
    context            TEXT    NOT NULL CHECK (json_valid(context)),
    state              TEXT    NOT NULL CHECK (json_valid(state)),
    action             INTEGER NOT NULL CHECK (action IN (0, 1)),
    action_prob        REAL    NOT NULL CHECK (action_prob >= 0 AND action_prob <= 1),
    parameter_version  INTEGER NOT NULL REFERENCES model_parameters (version),
    rng_seed           INTEGER NOT NULL,
    -- 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-' (ASCII only, so characters are bytes).
    decision_type      TEXT    NOT NULL DEFAULT 'default'
        CONSTRAINT actions_decision_type_check CHECK (length(decision_type) BETWEEN 1 AND 64
               AND decision_type NOT GLOB '*[^A-Za-z0-9_.-]*'),
    available          INTEGER NOT NULL DEFAULT 1 CHECK (available IN (0, 1)),
    unavailable_reason TEXT,
    CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_type, decision_idx),
    -- An unavailable decision gets no draw, and only it has a reason.
    CONSTRAINT actions_unavailable_not_drawn CHECK (available OR (action = 0 AND action_prob = 0)),
    CONSTRAINT actions_reason_when_unavailable CHECK (unavailable_reason IS NULL OR NOT available)
);
INSERT INTO actions_new (id, user_id, decision_idx, request_timestamp, created_at, context,
                         state, action, action_prob, parameter_version, rng_seed)
SELECT id, user_id, decision_idx, request_timestamp, created_at, context, state, action,
       action_prob, parameter_version, rng_seed
FROM actions;

CREATE TABLE study_data_new (
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
    decision_type     TEXT    NOT NULL DEFAULT 'default'
        CONSTRAINT study_data_decision_type_check CHECK (length(decision_type) BETWEEN 1 AND 64
               AND decision_type NOT GLOB '*[^A-Za-z0-9_.-]*'),
    -- The logged decision's availability (1 when none was logged); 0 keeps the row out of
    -- every update.
    available         INTEGER NOT NULL DEFAULT 1 CHECK (available IN (0, 1)),
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_type, decision_idx)
);
INSERT INTO study_data_new (id, user_id, decision_idx, request_timestamp, created_at, context,
                            action, action_prob, state, outcome, reward, action_logged)
SELECT id, user_id, decision_idx, request_timestamp, created_at, context, action, action_prob,
       state, outcome, reward, action_logged
FROM study_data;

-- AUTOINCREMENT never hands out an id twice; the new tables keep the old counters (which can be
-- past the largest id left), so upload order stays id order.
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT o.seq FROM sqlite_sequence o WHERE o.name = 'actions'), 0))
WHERE name = 'actions_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'actions_new', seq FROM sqlite_sequence
WHERE name = 'actions' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'actions_new');
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT o.seq FROM sqlite_sequence o WHERE o.name = 'study_data'), 0))
WHERE name = 'study_data_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'study_data_new', seq FROM sqlite_sequence
WHERE name = 'study_data'
  AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'study_data_new');

DROP TABLE actions;
ALTER TABLE actions_new RENAME TO actions;
DROP TABLE study_data;
ALTER TABLE study_data_new RENAME TO study_data;

CREATE INDEX actions_parameter_version_idx ON actions (parameter_version);

-- The largest study_data id the update's job could read: the uploads up to it that are
-- available, less any an earlier update read, are the ones this update used first. Appended
-- last, as migrations/postgres appends it.
CREATE TABLE update_provenance_new (
    update_id          TEXT    PRIMARY KEY NOT NULL REFERENCES model_update_requests (id),
    parameter_version  INTEGER NOT NULL UNIQUE REFERENCES model_parameters (version),
    service_version    TEXT    NOT NULL,
    algorithm          TEXT    NOT NULL,
    config_hash        TEXT    NOT NULL,
    rows_read          INTEGER NOT NULL CHECK (rows_read >= 0),
    backup_file        TEXT,
    created_at         TEXT    NOT NULL,
    last_study_data_id INTEGER NOT NULL
);
-- Updates that ran before this migration did not record what they read. It is approximated
-- as what was stored when the update started (its started_at, or its created_at when that is
-- not known): the largest id of an upload stored before then, or 0 when there was none. It
-- can be wrong for an upload stored while an update ran, and for uploads older than a restore
-- or reset that rewrote the history of updates. Times compare as text because they are stored
-- fixed-width in UTC.
INSERT INTO update_provenance_new (update_id, parameter_version, service_version, algorithm,
                                   config_hash, rows_read, backup_file, created_at,
                                   last_study_data_id)
SELECT p.update_id, p.parameter_version, p.service_version, p.algorithm, p.config_hash,
       p.rows_read, p.backup_file, p.created_at,
       coalesce((SELECT max(s.id)
                 FROM study_data s
                 WHERE s.created_at < coalesce(r.started_at, r.created_at)), 0)
FROM update_provenance p
LEFT JOIN model_update_requests r ON r.id = p.update_id;
DROP TABLE update_provenance;
ALTER TABLE update_provenance_new RENAME TO update_provenance;

-- The export's lookup of the first update that used an upload: the provenance with the
-- smallest last_study_data_id at or above the upload's id.
CREATE INDEX update_provenance_last_study_data_idx
    ON update_provenance (last_study_data_id, parameter_version);
