-- Study safety: uploads checked against the logged decision, update requests as durable jobs
-- with callback delivery state, and a provenance record per completed update.

-- Whether a decision was logged for the upload's (user_id, decision_idx). The service refuses
-- uploads that differ from the logged decision, so for new rows true also means "matched".
-- Uploads stored before this migration were never checked: they are marked true only when a
-- logged decision exists AND agrees with them, so true keeps meaning "propensity verified".
ALTER TABLE study_data ADD COLUMN action_logged BOOLEAN;
UPDATE study_data s SET action_logged = EXISTS (
    SELECT 1 FROM actions a
    WHERE a.user_id = s.user_id AND a.decision_idx = s.decision_idx
      AND a.action = s.action AND abs(a.action_prob - s.action_prob) <= 1e-9
);
ALTER TABLE study_data ALTER COLUMN action_logged SET NOT NULL;

ALTER TABLE model_update_requests
    ADD COLUMN attempts             INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN started_at           TIMESTAMPTZ,
    ADD COLUMN callback_status      TEXT        NOT NULL DEFAULT 'pending'
        CHECK (callback_status IN ('pending', 'delivered', 'failed')),
    ADD COLUMN callback_attempts    INTEGER     NOT NULL DEFAULT 0 CHECK (callback_attempts >= 0),
    ADD COLUMN callback_error       TEXT,
    ADD COLUMN callback_finished_at TIMESTAMPTZ;

-- Requests that finished before delivery was tracked had their callback tried once, with an
-- outcome nobody recorded. Leaving them 'pending' would make the service re-send months-old
-- callbacks on upgrade; they are marked as not known to have been delivered instead.
UPDATE model_update_requests
SET callback_status = 'failed',
    callback_error = 'delivery was not recorded (the update finished before migration 2025-02-01)'
WHERE status <> 'processing';

-- What a completed update's parameters were computed from, for audits.
CREATE TABLE update_provenance (
    update_id         UUID        PRIMARY KEY REFERENCES model_update_requests (id),
    parameter_version BIGINT      NOT NULL UNIQUE REFERENCES model_parameters (version),
    service_version   TEXT        NOT NULL,
    algorithm         TEXT        NOT NULL,
    config_hash       TEXT        NOT NULL,
    rows_read         BIGINT      NOT NULL CHECK (rows_read >= 0),
    backup_file       TEXT,
    created_at        TIMESTAMPTZ NOT NULL
);

-- The callback sweep looks for finished requests whose delivery is still pending.
CREATE INDEX model_update_requests_callback_idx ON model_update_requests (created_at)
    WHERE callback_status = 'pending' AND status <> 'processing';
