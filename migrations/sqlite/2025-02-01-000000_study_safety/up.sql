-- Study safety: uploads checked against the logged decision, update requests as durable jobs
-- with callback delivery state, a provenance record per completed update, and (SQLite only)
-- the lease that lets one update job run at a time.

-- Whether a decision was logged for the upload's (user_id, decision_idx). The service refuses
-- uploads that differ from the logged decision, so for new rows true also means "matched".
-- Uploads stored before this migration were never checked: they are marked true only when a
-- logged decision exists AND agrees with them, so true keeps meaning "propensity verified".
--
-- SQLite cannot make an added column NOT NULL afterwards, so the table is rebuilt (SQLite's
-- documented way to change a column); the new column comes last, as in PostgreSQL. Nothing
-- references study_data, so dropping the old table needs no foreign-key juggling.
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
    CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_idx)
);
INSERT INTO study_data_new
SELECT s.id, s.user_id, s.decision_idx, s.request_timestamp, s.created_at, s.context, s.action,
       s.action_prob, s.state, s.outcome, s.reward,
       EXISTS (SELECT 1 FROM actions a
               WHERE a.user_id = s.user_id AND a.decision_idx = s.decision_idx
                 AND a.action = s.action AND abs(a.action_prob - s.action_prob) <= 1e-9)
FROM study_data s;
DROP TABLE study_data;
ALTER TABLE study_data_new RENAME TO study_data;

ALTER TABLE model_update_requests
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0);
ALTER TABLE model_update_requests ADD COLUMN started_at TEXT;
ALTER TABLE model_update_requests
    ADD COLUMN callback_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (callback_status IN ('pending', 'delivered', 'failed'));
ALTER TABLE model_update_requests
    ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0 CHECK (callback_attempts >= 0);
ALTER TABLE model_update_requests ADD COLUMN callback_error TEXT;
ALTER TABLE model_update_requests ADD COLUMN callback_finished_at TEXT;

-- Requests that finished before delivery was tracked had their callback tried once, with an
-- outcome nobody recorded. Leaving them 'pending' would make the service re-send months-old
-- callbacks on upgrade; they are marked as not known to have been delivered instead.
UPDATE model_update_requests
SET callback_status = 'failed',
    callback_error = 'delivery was not recorded (the update finished before migration 2025-02-01)'
WHERE status <> 'processing';

-- What a completed update's parameters were computed from, for audits.
CREATE TABLE update_provenance (
    update_id         TEXT    PRIMARY KEY NOT NULL REFERENCES model_update_requests (id),
    parameter_version INTEGER NOT NULL UNIQUE REFERENCES model_parameters (version),
    service_version   TEXT    NOT NULL,
    algorithm         TEXT    NOT NULL,
    config_hash       TEXT    NOT NULL,
    rows_read         INTEGER NOT NULL CHECK (rows_read >= 0),
    backup_file       TEXT,
    created_at        TEXT    NOT NULL
);

-- The callback sweep looks for finished requests whose delivery is still pending.
CREATE INDEX model_update_requests_callback_idx ON model_update_requests (created_at)
    WHERE callback_status = 'pending' AND status <> 'processing';

-- The update lease (SQLite only; PostgreSQL uses a session advisory lock instead). One row: who
-- runs the current update job and until when the claim holds. A holder that dies leaves its
-- lease to expire, after which the next claim takes the job over. Not study data: it is not
-- counted, backed up, restored or reset.
CREATE TABLE update_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    update_id  TEXT,
    expires_at TEXT,
    CHECK ((holder IS NULL) = (expires_at IS NULL))
);
INSERT INTO update_lease (id, holder, update_id, expires_at) VALUES (1, NULL, NULL, NULL);
