-- The watchdog's tables, as migrations/postgres creates them, in SQLite's terms (times are
-- RFC 3339 TEXT with six fractional digits, JSON is TEXT). See the PostgreSQL migration.
CREATE TABLE upload_refusals (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_type TEXT    NOT NULL,
    refused_at    TEXT    NOT NULL
);
CREATE INDEX upload_refusals_refused_at_idx ON upload_refusals (refused_at);

CREATE TABLE monitor_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    state      TEXT    NOT NULL CHECK (state IN ('green', 'yellow', 'red')),
    changed_at TEXT    NOT NULL
);

CREATE TABLE monitor_alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    payload     TEXT    NOT NULL CHECK (json_valid(payload)),
    status      TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    held_until  TEXT    NOT NULL,
    last_error  TEXT,
    finished_at TEXT
);
CREATE INDEX monitor_alerts_pending_idx ON monitor_alerts (id) WHERE status = 'pending';
