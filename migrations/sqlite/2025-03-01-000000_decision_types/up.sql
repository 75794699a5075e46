-- Decision types and availability: a decision's key becomes (user_id, decision_type,
-- decision_idx), an unavailable decision is stored without a draw and with the study server's
-- reason, and each upload records the first update that used it.
--
-- The new columns come last, in the order migrations/postgres adds them, so backups move
-- between the adapters. Changing a UNIQUE constraint needs the table rebuilt in SQLite (its
-- documented procedure: create the new table, copy, drop the old one, rename, recreate the
-- indexes). The procedure's foreign-key steps are not needed here: nothing references actions
-- or study_data, so dropping and renaming them touches no other table's keys, and the copied
-- rows are checked against their own references as they are inserted (migrations run with
-- foreign keys on, which a transaction cannot turn off anyway). There are no triggers or views
-- to recreate.

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
    -- The parameter version of the first completed update that read the row.
    used_in_version   INTEGER REFERENCES model_parameters (version),
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_type, decision_idx)
);
-- Which update first used an upload was not recorded before this migration. It is
-- approximated as the earliest completed update that started (its started_at, or its
-- created_at when that is not known) after the upload was stored: updates read everything
-- stored when they start. It can be wrong for an upload stored while an update ran, and for
-- uploads older than a restore or reset that rewrote the history of updates. Times compare as
-- text because they are stored fixed-width in UTC.
INSERT INTO study_data_new (id, user_id, decision_idx, request_timestamp, created_at, context,
                            action, action_prob, state, outcome, reward, action_logged,
                            used_in_version)
SELECT s.id, s.user_id, s.decision_idx, s.request_timestamp, s.created_at, s.context, s.action,
       s.action_prob, s.state, s.outcome, s.reward, s.action_logged,
       (SELECT r.parameter_version
        FROM model_update_requests r
        WHERE r.status = 'completed' AND r.parameter_version IS NOT NULL
          AND coalesce(r.started_at, r.created_at) > s.created_at
        ORDER BY coalesce(r.started_at, r.created_at), r.parameter_version
        LIMIT 1)
FROM study_data s;

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

-- The rows no update has used yet, which completing an update marks while it holds the write
-- lock. Without this index the marking scans the whole table: measured on 1M rows, marking the
-- 1,000 new ones took 0.7 s (every decision and upload waiting meanwhile) against 0.01 s with
-- it, for about 6% more file and no measurable cost per insert. The update's own stream reads
-- by id range and does not need it.
CREATE INDEX study_data_unused_idx ON study_data (id) WHERE used_in_version IS NULL AND available;
