-- The watchdog's tables. upload_refusals counts the uploads refused for differing from the
-- logged decision (409), so that every instance sees the refusals of all: a decision type and a
-- time, no participant and no values. monitor_state is the verdict the instances share (one
-- row, compare-and-set in a transaction); monitor_alerts queues the alerts its changes send,
-- held by the instance delivering them until held_until.
CREATE TABLE upload_refusals (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    decision_type TEXT        NOT NULL,
    refused_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX upload_refusals_refused_at_idx ON upload_refusals (refused_at);

CREATE TABLE monitor_state (
    id         SMALLINT    PRIMARY KEY CHECK (id = 1),
    state      TEXT        NOT NULL CHECK (state IN ('green', 'yellow', 'red')),
    changed_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE monitor_alerts (
    id          BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL,
    state       TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    status      TEXT        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER     NOT NULL DEFAULT 0,
    held_until  TIMESTAMPTZ NOT NULL,
    last_error  TEXT,
    finished_at TIMESTAMPTZ
);
CREATE INDEX monitor_alerts_pending_idx ON monitor_alerts (id) WHERE status = 'pending';
